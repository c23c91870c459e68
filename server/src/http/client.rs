//! Who a request comes from, as every per-client limit counts it (run
//! pace, unfinished runs per demo, event streams, density sweeps).
//!
//! The TCP peer is the client, unless the peer is a proxy named with
//! `--trusted-proxy`: only then are `X-Forwarded-For` (or, without it,
//! `Forwarded`) read, and the client is the rightmost address in it that is
//! not itself a trusted proxy. Without this, behind a load balancer every
//! person is the balancer's one address, and one client's flood locks
//! everyone out; trusting the header from any peer would instead let a
//! client pick a new address per request and escape every limit.
//!
//! IPv6 clients are counted by their /64: one host is commonly given a
//! whole /64 and can pick any address in it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;

use super::AppState;

/// A network, `10.0.0.0/8` or `fd00::/8`; a bare address is a /32 (/128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not an address or a network (10.0.0.0/8, fd00::/8)");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        let net = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr {
            net: mask(net, prefix),
            prefix,
        })
    }
}

impl Cidr {
    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.prefix) == self.net
    }
}

/// `ip` with all but its first `prefix` bits zeroed.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((bits & keep).to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & keep))
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`, what a dual-stack
/// socket reports) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The proxies whose forwarding headers are believed (`--trusted-proxy`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[Cidr]>);

impl TrustedProxies {
    /// From the flag's values.
    pub fn parse(cidrs: &[String]) -> Result<TrustedProxies, String> {
        let nets = cidrs
            .iter()
            .map(|c| {
                c.parse::<Cidr>()
                    .map_err(|e| format!("--trusted-proxy: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies(nets.into()))
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let hops = forwarded_for(headers);
        // Rightmost first: each trusted proxy appended the address it
        // saw; the first one no trusted proxy could have written is the
        // client. Anything left of it the client may have made up.
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) if self.contains(*ip) => client = *ip,
                Some(ip) => return *ip,
                // Not an address ("unknown", a name, garbage): nothing
                // further left can be believed; the last trusted hop is
                // the best we know.
                None => return client,
            }
        }
        client
    }
}

/// The hops of `X-Forwarded-For` (every such header, in order), or of
/// `Forwarded`'s `for=` when there is no `X-Forwarded-For`; `None` for a
/// hop that is not an address.
///
/// `X-Forwarded-For` wins because the shipped nginx (and most proxies)
/// append to it: a client's own `Forwarded` would pass such a proxy
/// untouched. A proxy that writes only `Forwarded` must drop the client's
/// `X-Forwarded-For`.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let xff: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
    if !xff.is_empty() {
        return xff
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .map(parse_hop)
            .collect();
    }
    headers
        .get_all("forwarded")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("for=?").split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_hop(v.trim().trim_matches('"')))
            })
        })
        .collect()
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = hop.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<Ipv6Addr>().ok())
        .map(|v6| canonical(IpAddr::V6(v6)))
}

/// What limits count a client address as: the address (IPv4), its /64
/// (IPv6).
pub fn key_of(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => format!("address {v4}"),
        v6 => format!("address {}/64", mask(v6, 64)),
    }
}

/// The client of a request, resolved as this module says: the key limits
/// count (`address 203.0.113.7` or `address 2001:db8:1:2::/64`; `address
/// unknown` when the connection's address is not known, as in `oneshot`
/// tests), and the address itself (what a handover forwards).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKey(pub String, pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientKey {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<ClientKey, Self::Rejection> {
        Ok(match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(peer)) => {
                let ip = state.trusted_proxies.client(peer.ip(), &parts.headers);
                ClientKey(key_of(ip), Some(ip))
            }
            None => ClientKey("address unknown".to_owned(), None),
        })
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(cidrs: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&cidrs.iter().map(|c| c.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_contain_what_they_should() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.255.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert!(host.contains(ip("127.0.0.1")) && !host.contains(ip("127.0.0.2")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "lab.example.org",
            "10.0.0/8",
            "1.2.3.4/x",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert!(TrustedProxies::parse(&["nope".into()])
            .unwrap_err()
            .contains("--trusted-proxy"));
    }

    #[test]
    fn a_spoofed_header_from_an_untrusted_peer_is_ignored() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let spoof = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("forwarded", "for=198.51.100.2"),
        ]);
        assert_eq!(proxies.client(ip("203.0.113.7"), &spoof), ip("203.0.113.7"));
        // Nobody trusted: the header is never read.
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("10.0.0.1"), &spoof), ip("10.0.0.1"));
        // No header from a trusted peer: the peer.
        assert_eq!(
            proxies.client(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_of_a_chain_of_proxies_is_the_client() {
        let proxies = trusted(&["10.0.0.0/8", "192.168.7.1"]);
        // The client forged the two leftmost; the edge proxy (192.168.7.1)
        // appended what it saw, the inner one (10.0.0.2) its peer.
        let h = headers(&[(
            "x-forwarded-for",
            "1.1.1.1, 2.2.2.2, 203.0.113.7, 192.168.7.1",
        )]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &h), ip("203.0.113.7"));
        // The same chain over two header lines.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, 203.0.113.7"),
            ("x-forwarded-for", "192.168.7.1"),
        ]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &h), ip("203.0.113.7"));
        // With ports and IPv6, and Forwarded when there is no XFF.
        let h = headers(&[(
            "forwarded",
            "for=1.1.1.1, for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.0.0.9",
        )]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &h), ip("2001:db8:cafe::17"));
        let h = headers(&[("x-forwarded-for", "203.0.113.7:5555")]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &h), ip("203.0.113.7"));
        // Garbage where the client should be: the last trusted hop, never
        // an address from further left.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, unknown, 192.168.7.1")]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &h), ip("192.168.7.1"));
        // Every hop a trusted proxy: the leftmost of them.
        let h = headers(&[("x-forwarded-for", "10.0.0.7, 10.0.0.8")]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &h), ip("10.0.0.7"));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_ipv4_by_address() {
        assert_eq!(
            key_of(ip("2001:db8:1:2:aaaa::1")),
            key_of(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_eq!(
            key_of(ip("2001:db8:1:2:aaaa::1")),
            "address 2001:db8:1:2::/64"
        );
        assert_ne!(key_of(ip("2001:db8:1:2::1")), key_of(ip("2001:db8:1:3::1")));
        assert_eq!(key_of(ip("203.0.113.7")), "address 203.0.113.7");
        assert_ne!(key_of(ip("203.0.113.7")), key_of(ip("203.0.113.8")));
        assert_eq!(key_of(ip("::ffff:203.0.113.7")), "address 203.0.113.7");
    }
}
