//! Where a webhook may point: http(s) URLs whose host resolves only to public addresses,
//! checked when the webhook is created and again, after DNS resolution, on every delivery
//! (the resolver below is the client's, so the address checked is the address connected
//! to). `WEBHOOK_ALLOW_PRIVATE=true` lifts the address rule, for tests and for receivers
//! inside the school's own network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::error::{AppError, AppResult};

/// The longest URL accepted.
const MAX_URL_LEN: usize = 2048;

/// Parses a webhook URL: absolute http(s), with a host, without credentials.
pub fn parse_url(url: &str) -> AppResult<Url> {
    let url = url.trim();
    if url.len() > MAX_URL_LEN {
        return Err(AppError::invalid(
            "url",
            format!("must be at most {MAX_URL_LEN} characters"),
        ));
    }
    let parsed =
        Url::parse(url).map_err(|e| AppError::invalid("url", format!("is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(AppError::invalid("url", "must be an http or https URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(AppError::invalid("url", "must name a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(AppError::invalid(
            "url",
            "must not carry credentials (receivers verify the signature instead)",
        ));
    }
    Ok(parsed)
}

/// Refuses a URL whose host is, or resolves to, an address a webhook may not reach. A host
/// that does not resolve now is accepted: delivery checks again, after resolving.
pub async fn check_target(url: &Url, allow_private: bool) -> AppResult<()> {
    if allow_private {
        return Ok(());
    }
    let refused = |ip: IpAddr| {
        AppError::invalid(
            "url",
            format!(
                "resolves to {ip}, a private, loopback, link-local or metadata address \
                 (set WEBHOOK_ALLOW_PRIVATE=true to allow it)"
            ),
        )
    };
    if let Some(ip) = literal_ip(url) {
        return if is_public(ip) {
            Ok(())
        } else {
            Err(refused(ip))
        };
    }
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(443);
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => {
            for addr in addrs {
                if !is_public(addr.ip()) {
                    return Err(refused(addr.ip()));
                }
            }
            Ok(())
        }
        Err(e) => {
            tracing::warn!(host, error = %e, "a webhook's host does not resolve now; accepted, checked at delivery");
            Ok(())
        }
    }
}

/// The address a URL names directly (the client does not resolve those).
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    url.host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Whether a webhook may connect to `ip`: not loopback, private, link-local (which holds the
/// cloud metadata address 169.254.169.254), shared, multicast, reserved or unspecified, and
/// the same for an IPv4 address inside an IPv6 one. IPv6 ranges that lead to an IPv4
/// address some translator picks are refused whole (see [`is_v4_gateway_range`]).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if is_v4_gateway_range(v6) {
                return false;
            }
            if let Some(v4) = embedded_v4(v6) {
                return is_public_v4(v4);
            }
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local, fd00:ec2::254 among them
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)) // documentation
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || (a == 100 && (b & 0xc0) == 64) // shared address space, 100.100.100.200 metadata
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18) // benchmarking
        || a >= 240) // reserved
}

/// IPv4-mapped (`::ffff:0:0/96`), 6to4 (`2002::/16`) and local-use NAT64 (`64:ff9b:1::/48`)
/// addresses. A mapped address is an IPv4 connection on most stacks, and 6to4 and local
/// NAT64 reach an IPv4 host through a relay or a translator whose own network decides what
/// is private (local NAT64 does not even fix where the IPv4 address sits). A public
/// receiver is reached through its plain address, so nothing of use is lost.
fn is_v4_gateway_range(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    (s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff)
        || s[0] == 0x2002
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
}

/// The IPv4 address an IPv4-compatible or well-known NAT64 (`64:ff9b::/96`) IPv6 address
/// carries.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(tail());
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail());
    }
    None
}

/// The delivery client's resolver: the system's, keeping only the addresses a webhook may
/// reach (all of them with `WEBHOOK_ALLOW_PRIVATE=true`).
pub struct GuardedResolver {
    /// Whether private and loopback addresses are allowed.
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| allow_private || is_public(addr.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves to no address a webhook may reach \
                     (private, loopback and metadata addresses are refused)"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            // Refused whole, whatever IPv4 address they carry.
            "::ffff:8.8.8.8",
            "::ffff:0:0",
            "2002:808:808::1",
            "2002:7f00:1::1",
            "2002::",
            "64:ff9b:1::808:808",
            "64:ff9b:1:ffff::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} must be refused");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "64:ff9b::808:808",
            "2001:4860:4860::8888",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} must be allowed");
        }
    }

    #[test]
    fn urls_must_be_http_with_a_host_and_no_credentials() {
        assert!(parse_url("https://hooks.example.org/attendance").is_ok());
        assert!(parse_url("http://203.0.113.9:8080/x").is_ok());
        for bad in [
            "ftp://example.org/",
            "file:///etc/passwd",
            "not a url",
            "https://user:pw@example.org/",
            "gopher://example.org",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} must be refused");
        }
    }

    #[tokio::test]
    async fn a_loopback_target_is_refused_unless_private_targets_are_allowed() {
        for url in [
            "http://127.0.0.1:9/",
            "http://localhost:9/",
            "http://[::1]/",
        ] {
            let url = parse_url(url).unwrap();
            assert!(check_target(&url, false).await.is_err(), "{url}");
            assert!(check_target(&url, true).await.is_ok(), "{url}");
        }
    }
}
