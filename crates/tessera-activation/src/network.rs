//! Where destinations may send: never to a cloud provider's metadata service.
//!
//! A webhook, SMS gateway or CRM URL is written by whoever can edit destinations, and
//! its answer is recorded (`lastError`, the delivery log). Pointed at a metadata
//! service — `169.254.169.254`, `fd00:ec2::254`, `metadata.google.internal` — it
//! would fetch the host's cloud credentials. So link-local addresses (where those
//! services live) and the metadata names are refused when a destination is saved,
//! when a name resolves to one at send time (the HTTP client resolves through
//! [`GuardedResolver`], so a DNS answer changed later cannot point there), and when a
//! receiver redirects there ([`redirect_policy`]). Loopback and private networks stay
//! allowed by default: local receivers and on-premises CRMs live there.
//!
//! On top of that fixed rule, the operator's [`NetworkPolicy`] (`[activation]
//! allowed_networks` / `denied_networks`) narrows where destinations may send, at the
//! same three places: a denied network wins, and when allowed networks are named an
//! address must be in one of them.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Host names of metadata services (lowercase).
const METADATA_NAMES: &[&str] = &["metadata.google.internal", "metadata.goog", "metadata"];

/// The words every refusal of this module ends with (senders recognise them in an
/// error's chain).
pub const DENIED: &str = "which destinations may not reach";

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 10;

/// Whether an address is one destinations may not reach.
pub fn denied_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => denied_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => denied_v4(v4),
            // fe80::/10 (link-local) and AWS's IPv6 metadata address.
            None => {
                (v6.segments()[0] & 0xffc0) == 0xfe80
                    || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
            }
        },
    }
}

fn denied_v4(v4: Ipv4Addr) -> bool {
    // 169.254.0.0/16 (link-local: AWS, GCP, Azure, OpenStack metadata) and Alibaba
    // Cloud's metadata address.
    v4.is_link_local() || v4 == Ipv4Addr::new(100, 100, 100, 200)
}

/// Why a URL's host may not be a destination, if it may not (a literal address or a
/// metadata name; names that resolve to such an address are caught when sending).
pub fn denied_host(url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return denied_ip(ip)
            .then(|| format!("{ip} is a link-local or cloud metadata address, {DENIED}"));
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    METADATA_NAMES
        .contains(&name.as_str())
        .then(|| format!("{host} is a cloud metadata service, {DENIED}"))
}

/// An IP network: an address and a prefix length (`10.0.0.0/8`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Names that stand for several networks in a list.
const NAMED_NETWORKS: &[(&str, &[&str])] = &[
    ("loopback", &["127.0.0.0/8", "::1/128"]),
    (
        "private",
        &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"],
    ),
];

/// Parses a list of networks: CIDR (`10.0.0.0/8`), a single address, or the names
/// `loopback` and `private`. The error names the entry and what is expected.
pub fn parse_networks(entries: &[String]) -> Result<Vec<Network>, String> {
    let mut networks = Vec::new();
    for entry in entries {
        let entry = entry.trim();
        if let Some((_, members)) = NAMED_NETWORKS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(entry))
        {
            for member in *members {
                networks.push(parse_network(member)?);
            }
        } else {
            networks.push(parse_network(entry)?);
        }
    }
    Ok(networks)
}

fn parse_network(text: &str) -> Result<Network, String> {
    let bad = || {
        format!(
            "{text:?} is not a network: write CIDR such as \"10.0.0.0/8\" or \"fd00::/8\", an address, \"loopback\" or \"private\""
        )
    };
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let addr = canonical(addr.trim().parse::<IpAddr>().map_err(|_| bad())?);
    let most = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => most,
        Some(p) => p
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= most)
            .ok_or_else(bad)?,
    };
    Ok(Network { addr, prefix })
}

/// Which networks destinations may reach, on top of the fixed metadata rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// When not empty, an address must be in one of these.
    pub allowed: Vec<Network>,
    /// An address in one of these is refused (wins over `allowed`).
    pub denied: Vec<Network>,
}

impl NetworkPolicy {
    /// The policy of `[activation] allowed_networks` and `denied_networks`.
    pub fn new(allowed: &[String], denied: &[String]) -> Result<Self, String> {
        Ok(Self {
            allowed: parse_networks(allowed)
                .map_err(|e| format!("[activation] allowed_networks: {e}"))?,
            denied: parse_networks(denied)
                .map_err(|e| format!("[activation] denied_networks: {e}"))?,
        })
    }

    /// Why destinations may not reach `ip`, if they may not.
    pub fn why_denied(&self, ip: IpAddr) -> Option<String> {
        if denied_ip(ip) {
            return Some(format!(
                "{ip} is a link-local or cloud metadata address, {DENIED}"
            ));
        }
        if let Some(network) = self.denied.iter().find(|n| n.contains(ip)) {
            return Some(format!(
                "{ip} is in {network} of [activation] denied_networks, {DENIED}"
            ));
        }
        if !self.allowed.is_empty() && !self.allowed.iter().any(|n| n.contains(ip)) {
            return Some(format!(
                "{ip} is outside [activation] allowed_networks, {DENIED}"
            ));
        }
        None
    }

    /// Why a URL's host may not be a destination, if it may not: a literal address
    /// this policy denies, or a metadata name (names are checked when resolved).
    pub fn denied_host(&self, url: &reqwest::Url) -> Option<String> {
        let host = url.host_str()?;
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        match literal.parse::<IpAddr>() {
            Ok(ip) => self.why_denied(ip),
            Err(_) => denied_host(url),
        }
    }
}

/// Resolves names with the system resolver and drops the addresses the policy denies;
/// a name with nothing else is an error.
#[derive(Debug, Default, Clone)]
pub struct GuardedResolver {
    policy: Arc<NetworkPolicy>,
}

impl GuardedResolver {
    /// A resolver that applies `policy`.
    pub fn new(policy: Arc<NetworkPolicy>) -> Self {
        Self { policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut why = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.why_denied(a.ip()) {
                    Some(reason) => {
                        why.get_or_insert(reason);
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty() {
                let why = why.unwrap_or_else(|| format!("no address, {DENIED}"));
                return Err(format!("{host} resolves only to denied addresses: {why}").into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// Follows up to ten redirects, none to a host `policy` denies.
pub fn redirect_policy(policy: Arc<NetworkPolicy>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if let Some(why) = policy.denied_host(attempt.url()) {
            attempt.error(format!("redirected to a denied address: {why}"))
        } else if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> reqwest::Url {
        reqwest::Url::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn metadata_and_link_local_hosts_are_denied_loopback_and_private_are_not() {
        for denied in [
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.1.1/",
            "http://100.100.100.200/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./",
            "http://metadata/",
        ] {
            assert!(denied_host(&url(denied)).is_some(), "{denied}");
        }
        for allowed in [
            "http://127.0.0.1:9000/hook",
            "http://[::1]/",
            "http://10.0.0.5/",
            "http://192.168.1.10/",
            "https://hooks.example.com/in",
            "http://100.100.100.201/",
        ] {
            assert!(denied_host(&url(allowed)).is_none(), "{allowed}");
        }
    }

    #[tokio::test]
    async fn the_resolver_drops_denied_addresses() {
        let open = GuardedResolver::default();
        let local = open
            .resolve("localhost".parse().unwrap_or_else(|_| panic!("name")))
            .await;
        assert!(local.is_ok_and(|mut addrs| addrs.all(|a| a.ip().is_loopback())));
        let metadata = open
            .resolve("169.254.169.254".parse().unwrap_or_else(|_| panic!("name")))
            .await;
        assert!(metadata.is_err());
        let no_loopback = GuardedResolver::new(Arc::new(
            NetworkPolicy::new(&[], &["loopback".into()]).unwrap_or_else(|e| panic!("{e}")),
        ));
        let refused = no_loopback
            .resolve("localhost".parse().unwrap_or_else(|_| panic!("name")))
            .await;
        let error = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            error.contains("denied_networks") && error.contains(DENIED),
            "{error}"
        );
    }

    #[test]
    fn the_policy_denies_and_allows_networks() {
        let policy = |allowed: &[&str], denied: &[&str]| {
            let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            NetworkPolicy::new(&owned(allowed), &owned(denied)).unwrap_or_else(|e| panic!("{e}"))
        };
        let open = NetworkPolicy::default();
        assert!(open.denied_host(&url("http://127.0.0.1/")).is_none());
        assert!(open.denied_host(&url("http://169.254.169.254/")).is_some());
        let closed = policy(&[], &["loopback", "private", "203.0.113.0/24"]);
        for denied in [
            "http://127.0.0.1:9000/",
            "http://127.8.9.10/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://10.1.2.3/",
            "http://172.31.0.1/",
            "http://192.168.0.1/",
            "http://[fd12::1]/",
            "http://203.0.113.77/",
            "http://169.254.169.254/",
        ] {
            let why = closed.denied_host(&url(denied));
            assert!(
                why.as_deref().is_some_and(|w| w.ends_with(DENIED)),
                "{denied}"
            );
        }
        assert!(closed.denied_host(&url("http://172.32.0.1/")).is_none());
        assert!(
            closed
                .denied_host(&url("https://hooks.example.com/"))
                .is_none()
        );
        let only = policy(&["198.51.100.0/24", "2001:db8::/32"], &["198.51.100.7"]);
        assert!(only.denied_host(&url("http://198.51.100.8/")).is_none());
        assert!(only.denied_host(&url("http://[2001:db8::5]/")).is_none());
        assert!(only.denied_host(&url("http://198.51.100.7/")).is_some());
        assert!(only.denied_host(&url("http://127.0.0.1/")).is_some());
        // Metadata stays denied whatever is allowed.
        assert!(
            policy(&["0.0.0.0/0"], &[])
                .denied_host(&url("http://169.254.169.254/"))
                .is_some()
        );
        for bad in ["10.0.0.0/33", "10.0.0/8", "intranet", "::1/129", ""] {
            assert!(
                NetworkPolicy::new(&[], &[bad.to_string()]).is_err(),
                "{bad}"
            );
        }
    }
}
