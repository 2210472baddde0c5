//! The client's IP address: the peer of the connection, or, behind a proxy
//! named in `http.trusted_proxies`, the address it forwarded.
//!
//! `X-Forwarded-For` is read only when the peer is a trusted proxy: anyone
//! else could write any address into it. Each proxy appends the address it
//! received the request from, so the client is the rightmost address that is
//! not itself a trusted proxy. A header that does not parse is ignored (the
//! peer is the client). The address is used to count anonymous downloaders
//! ([`crate::release::downloaders`]) and is never stored, logged or returned:
//! [`ClientIp`] has no `Debug`.

use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};

use crate::app::AppState;

/// The header proxies put the addresses they received a request from in.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// An IP address or a CIDR network (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, ip.to_canonical()) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(base) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(base) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is neither an IP address nor a CIDR network such as 10.0.0.0/8");
        let (address, prefix) = match s.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (s.trim(), None),
        };
        let base = address.parse::<IpAddr>().map_err(|_| bad())?.to_canonical();
        let bits = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse::<u8>().map_err(|_| bad())?,
            Some(_) => return Err(bad()),
        };
        if prefix > bits {
            return Err(bad());
        }
        Ok(Self { base, prefix })
    }
}

impl TryFrom<String> for Network {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl From<Network> for String {
    fn from(network: Network) -> Self {
        network.to_string()
    }
}

/// The client of a request that came from `peer`: the rightmost address of
/// `X-Forwarded-For` that is not a trusted proxy when `peer` is one, else `peer`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Network]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    // Several header lines are one list, in order (RFC 9110, 5.3).
    let mut chain = Vec::new();
    for value in headers.get_all(FORWARDED_FOR) {
        let Ok(value) = value.to_str() else { return peer };
        for entry in value.split(',') {
            match forwarded_address(entry.trim()) {
                Some(ip) => chain.push(ip),
                None => return peer,
            }
        }
    }
    // Past every trusted proxy; when all are, the farthest one is the client.
    chain.iter().rev().find(|ip| !is_trusted(**ip)).or(chain.first()).copied().unwrap_or(peer)
}

/// One entry of `X-Forwarded-For`: an address, or an address with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`), as some proxies write it.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let ip = entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
    Some(ip.to_canonical())
}

/// The client's IP address, when the request came over a socket (requests
/// handed to the router directly, as some tests do, have none).
#[derive(Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| peer.ip());
        Ok(Self(peer.map(|peer| client_ip(peer, &parts.headers, &state.config.http.trusted_proxies))))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn networks(list: &[&str]) -> Vec<Network> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn networks_parse_addresses_and_cidr_and_refuse_anything_else() {
        let net: Network = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.255.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "an IPv4-mapped address is its IPv4 one");
        assert!(!net.contains(ip("2001:db8::1")));
        let one: Network = "192.0.2.7".parse().unwrap();
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Network = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        let everything: Network = "0.0.0.0/0".parse().unwrap();
        assert!(everything.contains(ip("203.0.113.9")));
        assert!("::/0".parse::<Network>().unwrap().contains(ip("2001:db8::1")));
        for bad in ["", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/+8", "example.org", "10.0.0/8"] {
            assert!(bad.parse::<Network>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_peer_is_the_client_unless_it_is_a_trusted_proxy() {
        let trusted = networks(&["10.0.0.0/8"]);
        let spoofed = forwarded(&["198.51.100.1"]);
        assert_eq!(client_ip(ip("203.0.113.5"), &spoofed, &trusted), ip("203.0.113.5"), "an untrusted peer's header");
        assert_eq!(client_ip(ip("10.0.0.2"), &spoofed, &[]), ip("10.0.0.2"), "no proxy trusted by default");
        assert_eq!(client_ip(ip("10.0.0.2"), &spoofed, &trusted), ip("198.51.100.1"));
        assert_eq!(client_ip(ip("10.0.0.2"), &HeaderMap::new(), &trusted), ip("10.0.0.2"), "no header");
        assert_eq!(client_ip(ip("::ffff:203.0.113.5"), &HeaderMap::new(), &[]), ip("203.0.113.5"));
    }

    #[test]
    fn the_client_is_the_rightmost_address_not_a_trusted_proxy() {
        let trusted = networks(&["10.0.0.0/8", "2001:db8:1::/48"]);
        // What the client wrote itself (the leftmost) is not believed.
        let chain = forwarded(&["198.51.100.66, 203.0.113.5, 10.0.0.7"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &chain, &trusted), ip("203.0.113.5"));
        let lines = forwarded(&["198.51.100.66", "203.0.113.5", "10.0.0.7"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &lines, &trusted), ip("203.0.113.5"), "several lines are one list");
        let v6 = forwarded(&["2001:db8:2::9, 2001:db8:1::3"]);
        assert_eq!(client_ip(ip("2001:db8:1::1"), &v6, &trusted), ip("2001:db8:2::9"));
        let ported = forwarded(&["[2001:db8:2::9]:4711, 203.0.113.5:80"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &ported, &trusted), ip("203.0.113.5"));
        let all_proxies = forwarded(&["10.9.9.9, 10.0.0.7"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &all_proxies, &trusted), ip("10.9.9.9"), "the farthest proxy");
        let mapped = forwarded(&["::ffff:203.0.113.5"]);
        assert_eq!(client_ip(ip("::ffff:10.0.0.2"), &mapped, &trusted), ip("203.0.113.5"));
    }

    #[test]
    fn a_malformed_header_falls_back_to_the_peer() {
        let trusted = networks(&["10.0.0.0/8"]);
        for garbage in ["", "unknown", "203.0.113.5, nonsense", "203.0.113.5,,10.0.0.7", "1.2.3", "::g", "[::1]"] {
            let headers = forwarded(&[garbage]);
            assert_eq!(client_ip(ip("10.0.0.2"), &headers, &trusted), ip("10.0.0.2"), "{garbage:?}");
        }
        let mut opaque = HeaderMap::new();
        opaque.insert(FORWARDED_FOR, HeaderValue::from_bytes(b"203.0.113.\xff").unwrap());
        assert_eq!(client_ip(ip("10.0.0.2"), &opaque, &trusted), ip("10.0.0.2"));
    }
}
