//! The server's own addresses, for the DNS records its services need.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Not loopback, link-local, private or carrier-grade NAT: an address the
/// Internet reaches the server at (else set `public_ipv4`).
fn is_public_v4(a: Ipv4Addr) -> bool {
    let shared = a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64;
    !(a.is_loopback() || a.is_link_local() || a.is_unspecified() || a.is_private() || shared)
}

/// The first global IPv4 and IPv6 addresses of the server's interfaces.
pub fn public_addresses() -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let mut v4 = None;
    let mut v6 = None;
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return (None, None);
    };
    for interface in interfaces {
        let Some(address) = interface.address else {
            continue;
        };
        let ip = if let Some(a) = address.as_sockaddr_in() {
            IpAddr::V4(a.ip())
        } else if let Some(a) = address.as_sockaddr_in6() {
            IpAddr::V6(a.ip())
        } else {
            continue;
        };
        match ip {
            IpAddr::V4(a) if v4.is_none() && is_public_v4(a) => v4 = Some(a),
            IpAddr::V6(a)
                if v6.is_none()
                    && !a.is_loopback()
                    && !a.is_unspecified()
                    && (a.segments()[0] & 0xe000) == 0x2000 =>
            {
                v6 = Some(a) // global unicast 2000::/3
            }
            _ => {}
        }
    }
    (v4, v6)
}

/// Bytes received and sent by one interface since boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub interface: String,
    pub received: u64,
    pub transmitted: u64,
}

/// The interfaces of /proc/net/dev (given as text), loopback left out.
pub fn parse_net_dev(net_dev: &str) -> Vec<InterfaceCounters> {
    net_dev
        .lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let fields: Vec<u64> = counters
                .split_whitespace()
                .map(|f| f.parse().ok())
                .collect::<Option<_>>()?;
            // receive: bytes packets errs drop fifo frame compressed multicast,
            // then transmit: bytes ...
            (name != "lo" && fields.len() >= 9).then(|| InterfaceCounters {
                interface: name.to_owned(),
                received: fields[0],
                transmitted: fields[8],
            })
        })
        .collect()
}

#[cfg(test)]
mod counter_tests {
    use super::*;

    #[test]
    fn net_dev_counters_without_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n  eth0: 5000 50 0 0 0 0 0 0 7000 70 0 0 0 0 0 0\n";
        assert_eq!(
            parse_net_dev(text),
            vec![InterfaceCounters {
                interface: "eth0".into(),
                received: 5000,
                transmitted: 7000
            }]
        );
    }
}
