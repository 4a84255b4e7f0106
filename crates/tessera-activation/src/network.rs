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
//! allowed: local receivers and on-premises CRMs live there.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

/// Resolves names with the system resolver and drops denied addresses; a name with
/// nothing else is an error.
#[derive(Debug, Default, Clone, Copy)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                found.into_iter().filter(|a| !denied_ip(a.ip())).collect();
            if allowed.is_empty() {
                return Err(format!(
                    "{host} resolves only to link-local or cloud metadata addresses, {DENIED}"
                )
                .into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// Follows up to ten redirects, none to a denied host.
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if let Some(why) = denied_host(attempt.url()) {
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
        let local = GuardedResolver
            .resolve("localhost".parse().unwrap_or_else(|_| panic!("name")))
            .await;
        assert!(local.is_ok_and(|mut addrs| addrs.all(|a| a.ip().is_loopback())));
        let metadata = GuardedResolver
            .resolve("169.254.169.254".parse().unwrap_or_else(|_| panic!("name")))
            .await;
        assert!(metadata.is_err());
    }
}
