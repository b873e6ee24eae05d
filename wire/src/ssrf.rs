//! Destinations a peer URL may not point at unless private peers are allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn v4_forbidden(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata address
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, carrier-grade NAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24, protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15, benchmarking
        || o[0] >= 240 // reserved
}

/// The IPv4 address an IPv6 address embeds or reaches, by the forms that carry one:
/// IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d` (deprecated), IPv4-translated
/// `::ffff:0:a.b.c.d`, 6to4 `2002:AABB:CCDD::/48` and NAT64 `64:ff9b::a.b.c.d`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] {
        return Some(low); // IPv4-compatible (also covers :: and ::1 as 0.0.0.0 and 0.0.0.1)
    }
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return Some(low); // IPv4-translated (SIIT)
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low); // NAT64 well-known prefix
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

fn v6_forbidden(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        // Any form that reaches a refused IPv4 range is refused; the IPv4-compatible and
        // translated forms are deprecated or internal and refused whatever they embed.
        let s = ip.segments();
        let internal_only =
            (s[..5] == [0, 0, 0, 0, 0] && s[5] != 0xffff) || s[..6] == [0, 0, 0, 0, 0xffff, 0];
        return internal_only || v4_forbidden(v4);
    }
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 local-use 64:ff9b:1::/48 and the rest
        || (s[0] == 0x2001 && s[1] == 0) // Teredo 2001::/32 (tunnels to IPv4 hosts)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x3fff && s[1] < 0x1000) // documentation 3fff::/20
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard 100::/64
        || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0010) // ORCHID 2001:10::/28
        || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0020) // ORCHIDv2 2001:20::/28
}

/// True for loopback, private, link-local (cloud metadata), multicast and other addresses
/// that a public peer can never have.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_forbidden(v4),
        IpAddr::V6(v6) => v6_forbidden(v6),
    }
}

/// Where a peer URL points: its host (an IPv6 literal without brackets) and port. The one
/// place peer URLs are taken apart for the guard, at creation and at connect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Host name or IP literal.
    pub host: String,
    /// Port (the scheme's default when the URL has none).
    pub port: u16,
}

impl Destination {
    /// Parses an absolute URL; None when it has no host.
    pub fn parse(url: &str) -> Option<Self> {
        let uri: http::Uri = url.parse().ok()?;
        let host = uri
            .host()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return None;
        }
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        Some(Self { host, port })
    }

    /// The host as an IP address, when it is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// True when the host is an IP literal in a refused range (names are checked when they
    /// resolve).
    pub fn literal_forbidden(&self) -> bool {
        self.ip().is_some_and(is_forbidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "224.0.0.1",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "ff02::1",
            // IPv6 spellings that embed or reach a refused IPv4 address, and old local ranges.
            "::127.0.0.1",
            "::ffff:0:7f00:1",
            "2002:7f00:1::1",
            "2002:a00:1::1",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "fec0::1",
            "::",
            "::0.0.0.1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "100::1",
        ] {
            assert!(is_forbidden(bad.parse().unwrap()), "{bad}");
        }
        for ok in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "172.32.0.1",
            "2002:808:808::1",
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_forbidden(ok.parse().unwrap()), "{ok}");
        }
    }

    #[test]
    fn destinations_parse_once() {
        let d = Destination::parse("http://[::ffff:7f00:1]:8080/hooks/t/kite").unwrap();
        assert_eq!((d.host.as_str(), d.port), ("::ffff:7f00:1", 8080));
        assert!(d.literal_forbidden());
        let d = Destination::parse("https://peer.example.com/x").unwrap();
        assert_eq!((d.port, d.ip()), (443, None));
        assert!(!d.literal_forbidden());
        assert!(Destination::parse("/relative").is_none());
    }
}
