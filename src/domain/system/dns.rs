//! The DNS records the server needs: its domain and the API, every enabled
//! service's subdomains, mail (MX, SPF, DMARC, DKIM) and CAA.

use crate::domain::error::{Failure, FailureKind, Outcome};
use crate::domain::i18n::Text;
use crate::domain::services::Services;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub record_type: String,
    pub name: String,
    pub content: String,
    pub ttl: i32,
    pub priority: Option<i32>,
    pub display_name: String,
}

fn record(record_type: &str, name: &str, content: String, ttl: i32, display: &str) -> Record {
    Record {
        record_type: record_type.to_owned(),
        name: name.to_owned(),
        content,
        ttl,
        priority: None,
        display_name: display.to_owned(),
    }
}

/// The value of the DKIM TXT record in a key file as opendkim-genkey and
/// `rspamadm dkim_keygen` write it (`selector._domainkey IN TXT ( "v=DKIM1;
/// k=rsa; " "p=MIIB..." ) ; comment`): the quoted strings joined. A PEM
/// public key (`.pub`) gives `v=DKIM1; k=rsa; p=<key>`.
pub fn parse_dkim(text: &str) -> Option<String> {
    if let Some(start) = text.find("-----BEGIN PUBLIC KEY-----") {
        let body = &text[start + "-----BEGIN PUBLIC KEY-----".len()..];
        let end = body.find("-----END PUBLIC KEY-----")?;
        let key: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        return (!key.is_empty()).then(|| format!("v=DKIM1; k=rsa; p={key}"));
    }
    // The record's data: inside the parentheses if there are any, and
    // before a zone-file comment.
    let data = match (text.find('('), text.rfind(')')) {
        (Some(open), Some(close)) if open < close => &text[open + 1..close],
        _ => text,
    };
    let mut value = String::new();
    let mut quoted = false;
    let mut chars = data.chars();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') | (true, '"') => quoted = !quoted,
            (true, '\\') => value.extend(chars.next()),
            (true, c) => value.push(c),
            (false, ';') => break,
            (false, _) => {}
        }
    }
    let value = value.trim().to_owned();
    (value.contains("p=") && !quoted).then_some(value)
}

pub struct DnsRecords {
    /// The key file, with `{domain}` for the domain.
    dkim_key_file: String,
    public_ipv4: Option<Ipv4Addr>,
    public_ipv6: Option<Ipv6Addr>,
}

impl DnsRecords {
    pub fn new(
        dkim_key_file: String,
        public_ipv4: Option<Ipv4Addr>,
        public_ipv6: Option<Ipv6Addr>,
    ) -> Self {
        DnsRecords {
            dkim_key_file,
            public_ipv4,
            public_ipv6,
        }
    }

    fn dkim_path(&self, domain: &str) -> PathBuf {
        PathBuf::from(self.dkim_key_file.replace("{domain}", domain))
    }

    /// The DKIM record's value; none while the mail server has not made
    /// its key yet.
    pub fn dkim(&self, domain: &str) -> Option<String> {
        let path = self.dkim_path(domain);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %path.display(), "reading the DKIM key: {e}");
                }
                return None;
            }
        };
        let value = parse_dkim(&text);
        if value.is_none() {
            tracing::warn!(file = %path.display(), "no DKIM record found in the key file");
        }
        value
    }

    /// The server's addresses: configured, else found on its interfaces.
    pub fn addresses(&self) -> Outcome<(Ipv4Addr, Option<Ipv6Addr>)> {
        let (found_v4, found_v6) = crate::os::network::public_addresses();
        let ipv4 = self.public_ipv4.or(found_v4).ok_or_else(|| {
            Failure::new(
                FailureKind::Internal,
                Text::new(
                    "The server's public IPv4 address is unknown (set public_ipv4)",
                    "Публичный IPv4-адрес сервера неизвестен (задайте public_ipv4)",
                ),
            )
        })?;
        Ok((ipv4, self.public_ipv6.or(found_v6)))
    }

    /// Every record the server needs, in the app's shapes: names are the
    /// domain itself or a label under it.
    pub async fn required(&self, domain: &str, services: &Services) -> Outcome<Vec<Record>> {
        let (ipv4, ipv6) = self.addresses()?;
        let mut records = Vec::new();
        let mut address_records = |name: &str, display: &str| {
            records.push(record("A", name, ipv4.to_string(), 3600, display));
            if let Some(ipv6) = ipv6 {
                records.push(record(
                    "AAAA",
                    name,
                    ipv6.to_string(),
                    3600,
                    &format!("{display} (IPv6)"),
                ));
            }
        };
        address_records(domain, "Root domain");
        address_records("api", "SelfPrivacy API");
        for service in services.list().await? {
            if !service.enabled {
                continue;
            }
            for r in services.dns_records(&service)? {
                records.push(record(
                    r.record_type,
                    &r.name,
                    r.content,
                    r.ttl,
                    &r.display_name,
                ));
            }
        }
        records.push(Record {
            priority: Some(10),
            ..record("MX", domain, domain.to_owned(), 3600, "Mail server")
        });
        let spf = match ipv6 {
            Some(ipv6) => format!("v=spf1 a mx ip4:{ipv4} ip6:{ipv6} -all"),
            None => format!("v=spf1 a mx ip4:{ipv4} -all"),
        };
        records.push(record("TXT", domain, spf, 18000, "SPF record"));
        records.push(record(
            "TXT",
            "_dmarc",
            "v=DMARC1; p=none".to_owned(),
            18000,
            "DMARC record",
        ));
        if let Some(dkim) = self.dkim(domain) {
            records.push(record(
                "TXT",
                "selector._domainkey",
                dkim,
                18000,
                "DKIM key",
            ));
        }
        // Only Let's Encrypt, which the server's certificates come from.
        records.push(record(
            "CAA",
            domain,
            "0 issue \"letsencrypt.org\"".to_owned(),
            3600,
            "CAA record",
        ));
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dkim_from_opendkim_and_rspamd_key_files() {
        // opendkim-genkey's layout.
        let opendkim = "selector._domainkey\tIN\tTXT\t( \"v=DKIM1; h=sha256; k=rsa; \"\n\t  \"p=MIIBIjANBgkq\"\n\t  \"hkiG9w0BAQ\" )  ; ----- DKIM key selector for example.org\n";
        assert_eq!(
            parse_dkim(opendkim).unwrap(),
            "v=DKIM1; h=sha256; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQ"
        );
        // rspamadm dkim_keygen's layout.
        let rspamd = "selector._domainkey IN TXT ( \"v=DKIM1; k=rsa; \"\n\t\"p=MIGfMA0GCS\" ) ;\n";
        assert_eq!(parse_dkim(rspamd).unwrap(), "v=DKIM1; k=rsa; p=MIGfMA0GCS");
        let pem = "-----BEGIN PUBLIC KEY-----\nMIIBIjAN\nBgkqhkiG\n-----END PUBLIC KEY-----\n";
        assert_eq!(
            parse_dkim(pem).unwrap(),
            "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG"
        );
        let dir = tempfile::tempdir().unwrap();
        let records = DnsRecords::new(
            format!("{}/{{domain}}.selector.txt", dir.path().display()),
            None,
            None,
        );
        assert_eq!(records.dkim("example.org"), None, "no key file yet");
        std::fs::write(dir.path().join("example.org.selector.txt"), rspamd).unwrap();
        assert_eq!(
            records.dkim("example.org").unwrap(),
            "v=DKIM1; k=rsa; p=MIGfMA0GCS"
        );
        assert_eq!(records.dkim("other.org"), None);
        for broken in [
            "",
            "garbage",
            "x IN TXT ( \"v=DKIM1; k=rsa\" )",
            "x ( \"p=abc )",
        ] {
            assert_eq!(parse_dkim(broken), None, "{broken:?}");
        }
    }
}
