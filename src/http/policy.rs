//! Outbound address policy for HTTP requests: which hosts may be called and which networks are
//! refused. The allowlist is checked on the host name before any DNS lookup
//! ([`Policy::check_host`]); the denied networks after resolution ([`Policy::check`]), on every
//! connection including each redirect. Pure Rust.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A network such as `169.254.0.0/16` or `fe80::/10` (a bare address is a /32 or /128). A network
/// written in IPv4-mapped form (`::ffff:10.0.0.0/104`) is stored as the IPv4 network it maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// The IPv4 addresses an IPv6 address carries, by which it may reach an IPv4 host:
/// IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d` (so `::` is `0.0.0.0` and `::1`
/// is `0.0.0.1`), NAT64 through the well-known prefix `64:ff9b::/96` (RFC 6052), and through the
/// local-use prefix `64:ff9b:1::/48` (RFC 8215) in each RFC 6052 layout (/48, /56, /64, /96)
/// whose suffix bits are zero, as that RFC requires (the /96 layout always).
pub fn embedded_ipv4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from(bits as u32);
    let mut out = Vec::new();
    if bits >> 32 == 0xffff || bits >> 32 == 0 {
        // mapped, or compatible (the first 96 bits zero)
        out.push(low32);
    }
    if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        out.push(low32);
    }
    if bits >> 80 == 0x0064_ff9b_0001 {
        out.push(low32);
        let byte = |i: u32| ((bits >> (120 - 8 * i)) & 0xff) as u8;
        // RFC 6052 section 2.2: the IPv4 bytes around the reserved bits 64..71 (byte 8), then
        // a suffix that must be zero
        for (at, suffix_from) in [
            ([6usize, 7, 9, 10], 11u32),
            ([7, 9, 10, 11], 12),
            ([9, 10, 11, 12], 13),
        ] {
            let suffix_bits = 128 - 8 * suffix_from;
            let suffix = bits & ((1u128 << suffix_bits) - 1);
            if suffix == 0 && byte(8) == 0 {
                out.push(Ipv4Addr::new(
                    byte(at[0] as u32),
                    byte(at[1] as u32),
                    byte(at[2] as u32),
                    byte(at[3] as u32),
                ));
            }
        }
    }
    out
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("\"{s}\" is not an IP network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("\"{s}\": the prefix length must be 0 to {max}"))?,
            None => max,
        };
        if let IpAddr::V6(v6) = addr {
            if let (Some(v4), true) = (v6.to_ipv4_mapped(), prefix >= 96) {
                return Ok(Cidr {
                    addr: IpAddr::V4(v4),
                    prefix: prefix - 96,
                });
            }
        }
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is in this network; an IPv4 network also contains every IPv6 address that
    /// carries one of its addresses (see [`embedded_ipv4`]).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let v4_in = |n: Ipv4Addr, a: Ipv4Addr| {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(self.prefix))
                .unwrap_or(0);
            (u32::from(n) & mask) == (u32::from(a) & mask)
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => v4_in(n, a),
            (IpAddr::V4(n), IpAddr::V6(a)) => embedded_ipv4(a).into_iter().any(|e| v4_in(n, e)),
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                (u128::from(n) & mask) == (u128::from(a) & mask)
            }
            (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The default of `pulse.http_denied_networks`: link-local (cloud metadata services live at
/// 169.254.169.254) and loopback, "this host" (`0.0.0.0/8`, and `::`, which reaches this host on
/// Linux), and the IPv6 equivalents. Each IPv4 network here is also denied in its IPv6 forms
/// (IPv4-mapped, IPv4-compatible, NAT64: see [`embedded_ipv4`]).
pub const DEFAULT_DENIED_C: &std::ffi::CStr =
    c"169.254.0.0/16, fe80::/10, 127.0.0.0/8, ::1/128, ::/128, 0.0.0.0/8, fd00:ec2::254/128";
pub const DEFAULT_DENIED: &str = match DEFAULT_DENIED_C.to_str() {
    Ok(s) => s,
    Err(_) => panic!("ASCII"),
};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Empty: any host. Otherwise only these (exact names or IPs, or `*.example.com`); a listed
    /// host may also use a denied network (that is how `127.0.0.1` is allowed for tests).
    pub allowed_hosts: Vec<String>,
    pub denied: Vec<Cidr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    HostNotAllowed(String),
    Network {
        host: String,
        addr: IpAddr,
        network: Cidr,
    },
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::HostNotAllowed(h) => {
                write!(f, "host \"{h}\" is not in pulse.http_allowed_hosts")
            }
            Denied::Network {
                host,
                addr,
                network,
            } => write!(
                f,
                "host \"{host}\" resolves to {addr}, in the denied network {network} (pulse.http_denied_networks)"
            ),
        }
    }
}

fn list(s: &str) -> impl Iterator<Item = &str> {
    s.split([',', ' ', '\n', '\t'])
        .map(str::trim)
        .filter(|x| !x.is_empty())
}

impl Policy {
    /// From the two settings' text (comma or space separated).
    pub fn parse(allowed_hosts: &str, denied_networks: &str) -> Result<Policy, String> {
        Ok(Policy {
            allowed_hosts: list(allowed_hosts)
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            denied: list(denied_networks)
                .map(Cidr::parse)
                .collect::<Result<_, _>>()?,
        })
    }

    /// A host as the allowlist holds it: lower case, an IPv6 address without its brackets.
    fn allowlist_form(host: &str) -> String {
        host.trim_matches(['[', ']']).to_ascii_lowercase()
    }

    fn listed(&self, host: &str) -> bool {
        let host = Self::allowlist_form(host);
        self.allowed_hosts
            .iter()
            .any(|a| match a.strip_prefix("*.") {
                Some(suffix) => host.ends_with(&format!(".{suffix}")),
                None => *a == host,
            })
    }

    /// May `host` be called at all? The allowlist alone, on the name as written: checked before
    /// any DNS lookup, so a host that is not listed is never resolved.
    pub fn check_host(&self, host: &str) -> Result<(), Denied> {
        if !self.allowed_hosts.is_empty() && !self.listed(host) {
            return Err(Denied::HostNotAllowed(host.to_string()));
        }
        Ok(())
    }

    /// Is `host` listed by name or address exactly (not through a `*.domain` entry)?
    fn listed_exactly(&self, host: &str) -> bool {
        let host = Self::allowlist_form(host);
        self.allowed_hosts.contains(&host)
    }

    /// May `host`, resolved to `addrs`, be called? ([`Policy::check_host`] first, then the
    /// denied networks, which a host listed exactly skips: `127.0.0.1` or `localhost` written
    /// in the allowlist may be called although loopback is denied. A `*.domain` entry never
    /// lifts the denied networks: any name under a domain may resolve anywhere.)
    pub fn check(&self, host: &str, addrs: &[IpAddr]) -> Result<(), Denied> {
        self.check_host(host)?;
        if self.listed_exactly(host) {
            return Ok(());
        }
        for &addr in addrs {
            if let Some(network) = self.denied.iter().find(|n| n.contains(addr)) {
                return Err(Denied::Network {
                    host: host.to_string(),
                    addr,
                    network: *network,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_wildcard_entry_never_lifts_the_denied_networks() {
        let p = Policy::parse(
            "*.example.com, localhost, 127.0.0.1",
            "169.254.0.0/16, 127.0.0.0/8",
        )
        .unwrap();
        let loopback = [ip("127.0.0.1")];
        let metadata = [ip("169.254.169.254")];
        assert!(p.check("evil.example.com", &metadata).is_err());
        assert!(p.check("evil.example.com", &loopback).is_err());
        assert!(p.check("api.example.com", &[ip("93.184.216.34")]).is_ok());
        assert!(p.check("localhost", &loopback).is_ok());
        assert!(p.check("127.0.0.1", &loopback).is_ok());
    }

    #[test]
    fn networks() {
        let n = Cidr::parse("169.254.0.0/16").unwrap();
        assert!(n.contains(ip("169.254.169.254")));
        assert!(!n.contains(ip("169.253.1.1")));
        assert!(n.contains(ip("::ffff:169.254.169.254")), "IPv4-mapped");
        let v6 = Cidr::parse("fe80::/10").unwrap();
        assert!(v6.contains(ip("fe80::1")) && v6.contains(ip("febf::1")));
        assert!(!v6.contains(ip("fec0::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert_eq!(Cidr::parse("10.1.2.3").unwrap().prefix, 32);
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example.com/8").is_err());
    }

    #[test]
    fn default_policy_refuses_metadata_and_loopback() {
        let p = Policy::parse("", DEFAULT_DENIED).unwrap();
        assert!(p.check("metadata", &[ip("169.254.169.254")]).is_err());
        assert!(p.check("localhost", &[ip("127.0.0.1")]).is_err());
        assert!(p.check("localhost", &[ip("::1")]).is_err());
        // `::` reaches this host on Linux
        assert!(p.check("[::]", &[ip("::")]).is_err());
        assert!(p.check("example.com", &[ip("93.184.216.34")]).is_ok());
        // every address counts: one bad address is enough to refuse
        let e = p
            .check("mixed", &[ip("93.184.216.34"), ip("169.254.1.1")])
            .unwrap_err();
        assert!(e.to_string().contains("169.254.0.0/16"));
    }

    #[test]
    fn every_ipv6_form_of_a_denied_ipv4_network_is_denied() {
        let p = Policy::parse("", DEFAULT_DENIED).unwrap();
        for (host, form) in [
            ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
            ("::ffff:7f00:2", "IPv4-mapped loopback, hex"),
            ("::127.0.0.1", "IPv4-compatible loopback"),
            ("::169.254.169.254", "IPv4-compatible metadata"),
            ("::ffff:169.254.169.254", "IPv4-mapped metadata"),
            ("64:ff9b::127.0.0.1", "NAT64 loopback"),
            ("64:ff9b::a9fe:a9fe", "NAT64 metadata"),
            ("64:ff9b::", "NAT64 of 0.0.0.0"),
            ("64:ff9b:1::7f00:1", "local-use NAT64 /96"),
            ("64:ff9b:1:7f00:0001::", "local-use NAT64 /48 layout"),
            ("64:ff9b:1:a9:00fe:a9fe::", "local-use NAT64 /56 layout"),
            ("64:ff9b:1:0:7f:0:1::", "local-use NAT64 /64 layout"),
            ("::", "unspecified"),
            ("::0.0.0.7", "IPv4-compatible 0.0.0.0/8"),
            ("::ffff:0.1.2.3", "IPv4-mapped 0.0.0.0/8"),
            ("0.0.0.0", "this host"),
            ("0.255.1.1", "0.0.0.0/8"),
        ] {
            assert!(
                matches!(p.check(host, &[ip(host)]), Err(Denied::Network { .. })),
                "{form}: {host} is allowed"
            );
        }
        // public addresses in the same forms stay allowed
        for host in [
            "::ffff:93.184.216.34",
            "64:ff9b::93.184.216.34",
            "64:ff9b:1::5db8:d822",
            "2606:2800:220:1:248:1893:25c8:1946",
            "93.184.216.34",
        ] {
            assert!(p.check(host, &[ip(host)]).is_ok(), "{host}");
        }
        // the forms of any IPv4 network the setting lists, not only the defaults
        let p = Policy::parse("", "10.0.0.0/8").unwrap();
        for host in ["::ffff:10.1.2.3", "::10.1.2.3", "64:ff9b::10.1.2.3"] {
            assert!(p.check(host, &[ip(host)]).is_err(), "{host}");
        }
        // `::` is the IPv4-compatible form of 0.0.0.0: denied with 0.0.0.0/8 alone
        let p = Policy::parse("", "0.0.0.0/8").unwrap();
        assert!(p.check("::", &[ip("::")]).is_err());
    }

    #[test]
    fn networks_written_in_mapped_form_match_ipv4_addresses() {
        let n = Cidr::parse("::ffff:10.0.0.0/104").unwrap();
        assert_eq!(n, Cidr::parse("10.0.0.0/8").unwrap());
        assert!(n.contains(ip("10.9.9.9")) && n.contains(ip("::ffff:10.9.9.9")));
        assert!(Cidr::parse("::ffff:0:0/96")
            .unwrap()
            .contains(ip("8.8.8.8")));
    }

    #[test]
    fn the_allowlist_needs_no_addresses() {
        let p = Policy::parse("127.0.0.1, api.example.com, *.supabase.co", DEFAULT_DENIED).unwrap();
        assert!(p.check_host("127.0.0.1").is_ok());
        assert!(p.check_host("API.example.com").is_ok());
        assert!(p.check_host("x.supabase.co").is_ok());
        assert_eq!(
            p.check_host("secret-data-ABC123.exfil.example"),
            Err(Denied::HostNotAllowed(
                "secret-data-ABC123.exfil.example".into()
            ))
        );
        // no allowlist: every name may be resolved (the networks are checked afterwards)
        assert!(Policy::parse("", DEFAULT_DENIED)
            .unwrap()
            .check_host("anything.example")
            .is_ok());
        // an explicitly listed loopback host keeps working in every form of the check
        assert!(p.check("127.0.0.1", &[ip("127.0.0.1")]).is_ok());
    }

    #[test]
    fn listed_hosts_only_and_explicit_loopback() {
        let p = Policy::parse("127.0.0.1, *.supabase.co", DEFAULT_DENIED).unwrap();
        assert!(p.check("127.0.0.1", &[ip("127.0.0.1")]).is_ok());
        assert!(p.check("abc.supabase.co", &[ip("1.2.3.4")]).is_ok());
        assert!(p.check("supabase.co.evil.com", &[ip("1.2.3.4")]).is_err());
        assert_eq!(
            p.check("example.com", &[ip("1.2.3.4")]),
            Err(Denied::HostNotAllowed("example.com".into()))
        );
        assert!(
            p.check("localhost", &[ip("127.0.0.1")]).is_err(),
            "only the listed name"
        );
    }

    #[test]
    fn bad_settings_are_reported() {
        assert!(Policy::parse("", "10.0.0.0/8, nonsense").is_err());
    }
}
