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
