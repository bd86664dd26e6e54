//! Pure pieces of the runner: image → binary mapping, the loopback address pool, mount-path
//! rewriting and environment expansion. No I/O here, so all of it is unit-tested.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// `REPOSITORY=BINARY`: containers whose image repository is REPOSITORY (any registry prefix,
/// any tag or digest) run BINARY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMapping {
    pub repository: String,
    pub binary: PathBuf,
}

impl std::str::FromStr for ImageMapping {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (repository, binary) = s
            .split_once('=')
            .ok_or_else(|| format!("expected REPOSITORY=BINARY, got {s:?}"))?;
        if repository.is_empty() || binary.is_empty() {
            return Err(format!("expected REPOSITORY=BINARY, got {s:?}"));
        }
        Ok(Self {
            repository: repository.to_string(),
            binary: PathBuf::from(binary),
        })
    }
}

/// `KEY[=VALUE]:EFFECT`: a taint of the runner's Node (as `kubectl taint` writes them), so
/// that kube-scheduler places only the pods that tolerate it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTaint {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

impl std::str::FromStr for NodeTaint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("expected KEY[=VALUE]:EFFECT, got {s:?}");
        let (kv, effect) = s.rsplit_once(':').ok_or_else(bad)?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(format!(
                "taint effect must be NoSchedule, PreferNoSchedule or NoExecute, got {effect:?}"
            ));
        }
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (kv, None),
        };
        if key.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            key: key.to_string(),
            value,
            effect: effect.to_string(),
        })
    }
}

/// The repository part of an image reference: without tag or digest.
pub fn image_repository(image: &str) -> &str {
    let no_digest = image.split_once('@').map_or(image, |(r, _)| r);
    // A ':' after the last '/' starts the tag (one before it is a registry port).
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

/// The binary to run for `image`, if a mapping matches its repository, with or without a
/// registry prefix (`ghcr.io/roomcast/x` matches the mapping `roomcast/x`).
pub fn binary_for<'a>(mappings: &'a [ImageMapping], image: &str) -> Option<&'a Path> {
    let repo = image_repository(image);
    mappings
        .iter()
        .find(|m| {
            repo == m.repository
                || repo
                    .strip_suffix(m.repository.as_str())
                    .is_some_and(|p| p.ends_with('/'))
        })
        .map(|m| m.binary.as_path())
}

/// A block of IPv4 addresses, `a.b.c.d/len` with len from 16 to 30.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRange {
    len: u32,
    first: u32,
    last: u32,
}

impl std::str::FromStr for IpRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("expected a.b.c.d/LEN, got {s:?}"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let len: u32 = len.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if !(16..=30).contains(&len) {
            return Err(format!("{s:?}: the prefix length must be 16 to 30"));
        }
        let mask = u32::MAX << (32 - len);
        let net = u32::from(addr) & mask;
        // Skip the network and the broadcast-looking addresses, as a real pool would.
        Ok(Self {
            len,
            first: net + 1,
            last: (net | !mask) - 1,
        })
    }
}

impl IpRange {
    /// Whether the whole block is in 127.0.0.0/8.
    pub fn is_loopback(&self) -> bool {
        Ipv4Addr::from(self.first).is_loopback()
    }

    /// The address of `to` with the same host bits as `ip` in this block (blocks of equal size).
    pub fn translate(&self, ip: Ipv4Addr, to: &IpRange) -> Option<Ipv4Addr> {
        let n = u32::from(ip);
        if self.len != to.len || n < self.first || n > self.last {
            return None;
        }
        Some(Ipv4Addr::from(to.first + (n - self.first)))
    }

    pub fn same_size(&self, other: &IpRange) -> bool {
        self.len == other.len
    }
}

/// Hands out addresses of an [`IpRange`] round-robin, so a freed address is reused last.
#[derive(Debug)]
pub struct IpPool {
    range: IpRange,
    next: u32,
    used: BTreeSet<u32>,
}

impl IpPool {
    pub fn new(range: IpRange) -> Self {
        Self {
            next: range.first,
            range,
            used: BTreeSet::new(),
        }
    }

    /// The next address that is not in use and for which `usable` says yes.
    pub fn allocate(&mut self, mut usable: impl FnMut(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
        let size = self.range.last - self.range.first + 1;
        for _ in 0..size {
            let candidate = self.next;
            self.next = if self.next >= self.range.last {
                self.range.first
            } else {
                self.next + 1
            };
            if !self.used.contains(&candidate) && usable(Ipv4Addr::from(candidate)) {
                self.used.insert(candidate);
                return Some(Ipv4Addr::from(candidate));
            }
        }
        None
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&u32::from(ip));
    }
}

/// How the container's file system and network are emulated for one pod: mount paths map onto
/// per-pod directories, and the wildcard address `0.0.0.0` means the pod's own address.
#[derive(Debug, Clone)]
pub struct Rewriter {
    /// (mount path without trailing '/', host path), longest mount path first.
    mounts: Vec<(String, PathBuf)>,
    pod_ip: Ipv4Addr,
}

impl Rewriter {
    pub fn new(mounts: impl IntoIterator<Item = (String, PathBuf)>, pod_ip: Ipv4Addr) -> Self {
        let mut mounts: Vec<(String, PathBuf)> = mounts
            .into_iter()
            .map(|(m, h)| (m.trim_end_matches('/').to_string(), h))
            .filter(|(m, _)| !m.is_empty())
            .collect();
        mounts.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Self { mounts, pod_ip }
    }

    /// A path as seen inside the container → the host path, if it lies in a mount.
    pub fn host_path(&self, container_path: &str) -> Option<PathBuf> {
        self.mounts.iter().find_map(|(mount, host)| {
            let rest = container_path.strip_prefix(mount.as_str())?;
            if rest.is_empty() {
                Some(host.clone())
            } else {
                rest.strip_prefix('/').map(|r| host.join(r))
            }
        })
    }

    /// Rewrites one command-line argument or environment value: a whole path inside a mount,
    /// `--flag=PATH`, and `0.0.0.0` → the pod address.
    pub fn arg(&self, arg: &str) -> String {
        if let Some(p) = self.host_path(arg) {
            return p.display().to_string();
        }
        if let Some((flag, value)) = arg.split_once('=') {
            if let Some(p) = self.host_path(value) {
                return format!("{flag}={}", p.display());
            }
        }
        self.wildcard(arg)
    }

    /// Rewrites a text file from a ConfigMap: every `MOUNT/...` reference and `0.0.0.0`.
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (mount, host) in &self.mounts {
            out = out.replace(&format!("{mount}/"), &format!("{}/", host.display()));
        }
        self.wildcard(&out)
    }

    /// `0.0.0.0` as a whole address (not inside `10.0.0.0` or `0.0.0.01`) → the pod address.
    fn wildcard(&self, s: &str) -> String {
        const ANY: &str = "0.0.0.0";
        let part_of_address = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit() || c == '.');
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find(ANY) {
            let before = if i > 0 {
                rest[..i].chars().last()
            } else {
                out.chars().last()
            };
            let after = rest[i + ANY.len()..].chars().next();
            out.push_str(&rest[..i]);
            if part_of_address(before) || part_of_address(after) {
                out.push_str(ANY);
            } else {
                out.push_str(&self.pod_ip.to_string());
            }
            rest = &rest[i + ANY.len()..];
        }
        out.push_str(rest);
        out
    }
}

/// Kubernetes `$(VAR)` expansion of `value` against the variables defined so far (`$$(X)`
/// escapes; unknown references stay as they are), as the kubelet does for env, command, args.
pub fn expand(value: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => match vars.get(&inner[..end]) {
                    Some(v) => {
                        out.push_str(v);
                        rest = &inner[end + 1..];
                    }
                    None => {
                        out.push_str(&rest[i..i + 2 + end + 1]);
                        rest = &inner[end + 1..];
                    }
                },
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Backoff before restart number `n` (0-based) of a crashed process: 1 s doubling to 30 s.
pub fn restart_backoff(n: u32) -> std::time::Duration {
    std::time::Duration::from_secs(1u64 << n.min(5)).min(std::time::Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_map_by_repository() {
        let maps = vec!["roomcast/roomcast-dataplane=/bin/dp"
            .parse::<ImageMapping>()
            .unwrap()];
        for image in [
            "roomcast/roomcast-dataplane:0.1.0",
            "roomcast/roomcast-dataplane",
            "ghcr.io/roomcast/roomcast-dataplane:latest",
            "localhost:5000/roomcast/roomcast-dataplane@sha256:abc",
        ] {
            assert_eq!(
                binary_for(&maps, image),
                Some(Path::new("/bin/dp")),
                "{image}"
            );
        }
        for image in [
            "nginx:1",
            "evil/xroomcast/roomcast-dataplane2",
            "roomcast/other:1",
        ] {
            assert_eq!(binary_for(&maps, image), None, "{image}");
        }
        assert_eq!(image_repository("localhost:5000/a/b"), "localhost:5000/a/b");
        assert!("nope".parse::<ImageMapping>().is_err());
    }

    #[test]
    fn images_of_two_mappings_map_to_their_own_binaries() {
        // The full-path tier maps both chart images; every tag of each runs the same binary.
        let maps: Vec<ImageMapping> = [
            "roomcast/roomcast-dataplane=/bin/dp",
            "roomcast/roomcast-operator=/bin/op",
        ]
        .iter()
        .map(|m| m.parse().unwrap())
        .collect();
        for (image, binary) in [
            ("ghcr.io/roomcast/roomcast-operator:0.1.0", "/bin/op"),
            (
                "ghcr.io/roomcast/roomcast-operator:0.1.0-e2e-upgrade",
                "/bin/op",
            ),
            ("ghcr.io/roomcast/roomcast-dataplane:0.1.0", "/bin/dp"),
        ] {
            assert_eq!(binary_for(&maps, image), Some(Path::new(binary)), "{image}");
        }
        assert_eq!(
            binary_for(&maps, "ghcr.io/roomcast/roomcast-operator-x:1"),
            None
        );
    }

    #[test]
    fn ip_ranges_translate_host_bits() {
        let lo: IpRange = "127.0.50.0/24".parse().unwrap();
        let api: IpRange = "239.0.50.0/24".parse().unwrap();
        assert!(lo.is_loopback() && !api.is_loopback());
        let ip = lo.translate("127.0.50.7".parse().unwrap(), &api);
        assert_eq!(ip, Some("239.0.50.7".parse().unwrap()));
        assert_eq!(
            api.translate(ip.unwrap(), &lo),
            Some("127.0.50.7".parse().unwrap())
        );
        assert_eq!(lo.translate("127.0.51.7".parse().unwrap(), &api), None);
        assert!(!lo.same_size(&"239.0.0.0/16".parse().unwrap()));
        assert!("127.0.50.0/8".parse::<IpRange>().is_err());
    }

    #[test]
    fn ip_pool_stays_in_range_and_round_robins() {
        let mut pool = IpPool::new("127.0.50.0/30".parse().unwrap());
        let a = pool.allocate(|_| true).unwrap();
        let b = pool.allocate(|_| true).unwrap();
        assert_eq!(
            (a, b),
            ("127.0.50.1".parse().unwrap(), "127.0.50.2".parse().unwrap())
        );
        assert_eq!(pool.allocate(|_| true), None);
        pool.release(a);
        assert_eq!(pool.allocate(|_| true), Some(a));
        pool.release(b);
        assert_eq!(pool.allocate(|ip| ip != b), None);
    }

    #[test]
    fn rewriter_maps_mounts_and_wildcard() {
        let r = Rewriter::new(
            [
                ("/etc/roomcast".to_string(), PathBuf::from("/p/config")),
                (
                    "/etc/roomcast-secrets/".to_string(),
                    PathBuf::from("/p/secrets"),
                ),
            ],
            "127.0.50.7".parse().unwrap(),
        );
        assert_eq!(r.arg("/etc/roomcast/config.yaml"), "/p/config/config.yaml");
        assert_eq!(
            r.arg("--config=/etc/roomcast/c.yaml"),
            "--config=/p/config/c.yaml"
        );
        assert_eq!(r.arg("/etc/roomcast-secrets"), "/p/secrets");
        assert_eq!(r.arg("/etc/roomcastx/a"), "/etc/roomcastx/a");
        assert_eq!(r.arg("0.0.0.0:3000"), "127.0.50.7:3000");
        assert_eq!(r.arg("[0.0.0.0]"), "[127.0.50.7]");
        for kept in ["10.0.0.0/8", "100.0.0.0", "0.0.0.01", "0.0.0.0.1"] {
            assert_eq!(r.arg(kept), kept);
        }
        let text = "listen: 0.0.0.0:3000\ntokenFile: /etc/roomcast-secrets/management-token\n";
        assert_eq!(
            r.text(text),
            "listen: 127.0.50.7:3000\ntokenFile: /p/secrets/management-token\n"
        );
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let vars: BTreeMap<String, String> =
            [("A".to_string(), "x".to_string())].into_iter().collect();
        assert_eq!(
            expand("$(A)-$(B)-$$(A)-$A-$(A", &vars),
            "x-$(B)-$(A)-$A-$(A"
        );
    }

    #[test]
    fn taints_parse_like_kubectl_taint() {
        let t: NodeTaint = "roomcast.dev/runner=only:NoSchedule".parse().unwrap();
        assert_eq!(
            t,
            NodeTaint {
                key: "roomcast.dev/runner".into(),
                value: Some("only".into()),
                effect: "NoSchedule".into()
            }
        );
        let t: NodeTaint = "dedicated:NoExecute".parse().unwrap();
        assert_eq!((t.key.as_str(), t.value), ("dedicated", None));
        for bad in [
            "dedicated",
            "dedicated=x:Sometimes",
            ":NoSchedule",
            "=x:NoSchedule",
        ] {
            assert!(bad.parse::<NodeTaint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_is_capped() {
        assert_eq!(restart_backoff(0).as_secs(), 1);
        assert_eq!(restart_backoff(3).as_secs(), 8);
        assert_eq!(restart_backoff(40).as_secs(), 30);
    }
}
