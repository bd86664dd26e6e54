//! Where the load goes: a loopback server address (or one in bench/netns.sh's namespaces),
//! the Engine.IO path and the local source IPs.

use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context};

/// The addresses of bench/netns.sh's two namespaces (10.231.0.0/16): allowed besides loopback
/// when `BENCH_NETNS_HOST` is set, which bench/run.sh does only for processes it starts in them.
fn in_bench_netns(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[..2] == [10, 231])
}

/// Whether the load may target or come from `ip`: loopback, or bench/netns.sh's namespaces
/// while `netns` is true.
fn allowed(ip: IpAddr, netns: bool) -> bool {
    ip.is_loopback() || (netns && in_bench_netns(ip))
}

fn netns_run() -> bool {
    std::env::var_os("BENCH_NETNS_HOST").is_some()
}

/// A parsed `ws://IP:PORT[/path/]` server URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// TCP address of the server (always a loopback address).
    pub addr: SocketAddr,
    /// Full WebSocket URL of the Engine.IO endpoint, query included.
    pub ws_url: String,
    /// Socket.IO namespace to connect to (`/` by default).
    pub namespace: String,
}

impl Target {
    /// Parses `ws://127.0.0.1:3000` (path defaults to `/socket.io/`).
    /// Only loopback addresses are accepted: the benchmarks never leave the machine.
    pub fn parse(url: &str, path: &str, namespace: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("http://"))
            .with_context(|| format!("url must start with ws:// or http://: {url}"))?;
        let (hostport, url_path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let addr: SocketAddr = hostport
            .parse()
            .with_context(|| format!("url host must be IP:PORT, got {hostport}"))?;
        if !allowed(addr.ip(), netns_run()) {
            bail!("refusing non-loopback target {addr}: benchmarks only load 127.0.0.0/8 (or bench/netns.sh's namespaces)");
        }
        let path = if url_path.len() > 1 { url_path } else { path };
        let path = if path.ends_with('/') {
            path.to_string()
        } else {
            format!("{path}/")
        };
        let ws_url = format!("ws://{hostport}{path}?EIO=4&transport=websocket");
        let namespace = if namespace.starts_with('/') {
            namespace.to_string()
        } else {
            format!("/{namespace}")
        };
        Ok(Self {
            addr,
            ws_url,
            namespace,
        })
    }
}

/// Parses a comma-separated list of loopback source IPs.
pub fn parse_source_ips(list: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut ips = Vec::new();
    for part in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ip: IpAddr = part
            .parse()
            .with_context(|| format!("bad source ip {part}"))?;
        if !allowed(ip, netns_run()) {
            bail!("refusing non-loopback source ip {ip}");
        }
        ips.push(ip);
    }
    if ips.is_empty() {
        bail!("no source ips given");
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_or_the_bench_namespaces_while_in_them() {
        let netns: IpAddr = "10.231.1.7".parse().unwrap();
        assert!(allowed("127.0.0.9".parse().unwrap(), false));
        assert!(!allowed(netns, false));
        assert!(allowed(netns, true));
        assert!(!allowed("10.232.0.1".parse().unwrap(), true));
        assert!(!allowed("192.168.1.1".parse().unwrap(), true));
    }

    #[test]
    fn parses_plain_url() {
        let t = Target::parse("ws://127.0.0.1:3000", "/socket.io/", "/").unwrap();
        assert_eq!(t.addr, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(
            t.ws_url,
            "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(t.namespace, "/");
    }

    #[test]
    fn url_path_overrides_default() {
        let t = Target::parse("ws://127.0.0.1:3000/rt", "/socket.io/", "chat").unwrap();
        assert_eq!(
            t.ws_url,
            "ws://127.0.0.1:3000/rt/?EIO=4&transport=websocket"
        );
        assert_eq!(t.namespace, "/chat");
    }

    #[test]
    fn rejects_non_loopback() {
        assert!(Target::parse("ws://10.0.0.1:3000", "/socket.io/", "/").is_err());
        assert!(parse_source_ips("127.0.0.2,192.168.1.1").is_err());
        assert_eq!(parse_source_ips("127.0.0.2, 127.0.0.3").unwrap().len(), 2);
    }
}
