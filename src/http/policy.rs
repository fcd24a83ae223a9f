//! Outbound address policy for HTTP requests: which hosts may be called and which networks are
//! refused, checked after DNS resolution and on every redirect. Pure Rust.

use std::fmt;
use std::net::IpAddr;

/// A network such as `169.254.0.0/16` or `fe80::/10` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
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
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are checked as IPv4
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                (u32::from(n) & mask) == (u32::from(a) & mask)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                (u128::from(n) & mask) == (u128::from(a) & mask)
            }
            _ => false,
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
/// Linux), and the IPv6 equivalents.
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

    fn listed(&self, host: &str) -> bool {
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        self.allowed_hosts
            .iter()
            .any(|a| match a.strip_prefix("*.") {
                Some(suffix) => host.ends_with(&format!(".{suffix}")),
                None => *a == host,
            })
    }

    /// May `host`, resolved to `addrs`, be called?
    pub fn check(&self, host: &str, addrs: &[IpAddr]) -> Result<(), Denied> {
        let listed = self.listed(host);
        if !self.allowed_hosts.is_empty() && !listed {
            return Err(Denied::HostNotAllowed(host.to_string()));
        }
        if listed {
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
