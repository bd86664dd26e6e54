//! Turns a pod into a process to start: the binary its image maps to, its volumes written as
//! files under the pod's directory, its arguments and environment with mount paths and the
//! wildcard address rewritten (see [`crate::plan::Rewriter`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Probe, Secret, ServiceAccount,
    Volume,
};
use kube::api::{Api, PostParams};

use crate::plan::{binary_for, expand, Rewriter};
use crate::pod::Addrs;
use crate::Ctx;

/// Why a pod cannot be started.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// It never will (unsupported field): the pod is marked Failed.
    #[error("{0}")]
    Fatal(String),
    /// No binary for the image: what a kubelet reports when a pull fails (ErrImagePull, then
    /// ImagePullBackOff), retried with backoff.
    #[error("{0}")]
    ImagePull(String),
    /// Not yet (a ConfigMap or Secret is missing, the API is unreachable): retried.
    #[error("{0}")]
    Retry(String),
}

use PrepareError::{Fatal, ImagePull, Retry};

/// Everything needed to (re)start the pod's process.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub binary: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub container: Container,
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
    pub dir: PathBuf,
}

/// The pod's own directory under the runner's state directory.
pub fn pod_dir(state: &Path, pod: &Pod) -> PathBuf {
    state.join("pods").join(format!(
        "{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("unnamed"),
        pod.metadata.uid.as_deref().unwrap_or("no-uid"),
    ))
}

pub async fn prepare(ctx: &Ctx, pod: &Pod, addrs: Addrs) -> Result<Prepared, PrepareError> {
    let ip = addrs.listen;
    // Downward-API values show the pod as the API does (its stand-in address).
    let api_ip = addrs.api;
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| Fatal("pod has no spec".into()))?;
    if spec.containers.len() != 1 || spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(Fatal(
            "the pod runner runs single-container pods without init containers only".into(),
        ));
    }
    let container = spec.containers[0].clone();
    let image = container.image.clone().unwrap_or_default();
    let binary = binary_for(&ctx.images, &image)
        .ok_or_else(|| {
            ImagePull(format!(
                "image {image:?} is not known to the pod runner (it runs: {})",
                ctx.images
                    .iter()
                    .map(|m| m.repository.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?
        .to_path_buf();
    if container.command.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(Fatal(
            "container command overrides are not supported by the pod runner".into(),
        ));
    }

    let dir = pod_dir(&ctx.state_dir, pod);
    let volumes_dir = dir.join("volumes");
    if volumes_dir.exists() {
        std::fs::remove_dir_all(&volumes_dir)
            .map_err(|e| Retry(format!("cannot clear {}: {e}", volumes_dir.display())))?;
    }
    let mut written = Written::default();
    let mut mounts = Vec::new();
    let mut kubeconfig = None;
    let volumes = spec.volumes.clone().unwrap_or_default();
    for m in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .iter()
            .find(|v| v.name == m.name)
            .ok_or_else(|| Fatal(format!("volume mount {:?} names no volume", m.name)))?;
        let host = volumes_dir.join(&volume.name);
        if !host.exists() {
            materialize(ctx, pod, api_ip, volume, &host, &mut written).await?;
        }
        if host.join("token").exists() && host.join("ca.crt").exists() {
            kubeconfig = Some(host.clone());
        }
        let host = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => host.join(sub),
            None => host,
        };
        mounts.push((m.mount_path.clone(), host));
    }
    let rewriter = Rewriter::new(mounts, ip);
    for file in &written.text {
        let text = std::fs::read(file)
            .map_err(|e| Retry(format!("cannot read {}: {e}", file.display())))?;
        if let Ok(text) = String::from_utf8(text) {
            write_file(file, rewriter.text(&text).as_bytes())?;
        }
    }

    // The environment a container gets: a PATH, HOSTNAME, the API server (the real one on
    // loopback; a Service IP would be unreachable here), then the pod's own variables.
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |vars: &mut BTreeMap<String, String>, k: String, v: String| {
        if !vars.contains_key(&k) {
            order.push(k.clone());
        }
        vars.insert(k, v);
    };
    set(
        &mut vars,
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    set(
        &mut vars,
        "HOSTNAME".into(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    set(
        &mut vars,
        "KUBERNETES_SERVICE_HOST".into(),
        ctx.api_host.clone(),
    );
    set(
        &mut vars,
        "KUBERNETES_SERVICE_PORT".into(),
        ctx.api_port.to_string(),
    );
    if let Some(sa_dir) = kubeconfig {
        let path = dir.join("kubeconfig");
        write_file(&path, pod_kubeconfig(&ctx.api_url, &sa_dir, pod).as_bytes())?;
        set(&mut vars, "KUBECONFIG".into(), path.display().to_string());
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.config_map_ref {
            referenced::<ConfigMap>(ctx, &ns, &r.name, r.optional.unwrap_or(false))
                .await?
                .map(|cm| cm.data.unwrap_or_default())
        } else if let Some(r) = &from.secret_ref {
            referenced::<Secret>(ctx, &ns, &r.name, r.optional.unwrap_or(false))
                .await?
                .map(|s| secret_strings(&s))
        } else {
            None
        };
        for (k, v) in data.unwrap_or_default() {
            set(&mut vars, format!("{prefix}{k}"), rewriter.arg(&v));
        }
    }
    for e in container.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            Some(expand(v, &vars))
        } else if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                Some(field_value(pod, api_ip, &f.field_path).ok_or_else(|| {
                    Fatal(format!(
                        "env {}: fieldRef {} is not supported",
                        e.name, f.field_path
                    ))
                })?)
            } else if let Some(r) = &src.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                let cm = referenced::<ConfigMap>(ctx, &ns, &r.name, optional).await?;
                let v = cm.and_then(|c| c.data.and_then(|d| d.get(&r.key).cloned()));
                if v.is_none() && !optional {
                    return Err(Retry(format!(
                        "env {}: key {} of ConfigMap {} not found",
                        e.name, r.key, r.name
                    )));
                }
                v
            } else if let Some(r) = &src.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                let s = referenced::<Secret>(ctx, &ns, &r.name, optional).await?;
                let v = s.and_then(|s| secret_strings(&s).remove(&r.key));
                if v.is_none() && !optional {
                    return Err(Retry(format!(
                        "env {}: key {} of Secret {} not found",
                        e.name, r.key, r.name
                    )));
                }
                v
            } else {
                return Err(Fatal(format!(
                    "env {}: only value, fieldRef, configMapKeyRef and secretKeyRef are supported",
                    e.name
                )));
            }
        } else {
            Some(String::new())
        };
        if let Some(v) = value {
            set(&mut vars, e.name.clone(), rewriter.arg(&v));
        }
    }
    let args = container
        .args
        .iter()
        .flatten()
        .map(|a| rewriter.arg(&expand(a, &vars)))
        .collect();
    let env = order
        .into_iter()
        .filter_map(|k| vars.get(&k).map(|v| (k.clone(), v.clone())))
        .collect();
    Ok(Prepared {
        binary,
        args,
        env,
        readiness: container.readiness_probe.clone(),
        liveness: container.liveness_probe.clone(),
        container,
        dir,
    })
}

/// Files written for one pod; `text` are the ConfigMap ones, rewritten once all mounts are known.
#[derive(Default)]
struct Written {
    text: Vec<PathBuf>,
}

async fn materialize(
    ctx: &Ctx,
    pod: &Pod,
    ip: Ipv4Addr,
    volume: &Volume,
    host: &Path,
    written: &mut Written,
) -> Result<(), PrepareError> {
    std::fs::create_dir_all(host)
        .map_err(|e| Retry(format!("cannot create {}: {e}", host.display())))?;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    if volume.empty_dir.is_some() {
        return Ok(());
    }
    if let Some(src) = &volume.config_map {
        if let Some(cm) =
            referenced::<ConfigMap>(ctx, &ns, &src.name, src.optional.unwrap_or(false)).await?
        {
            write_config_map(&cm, src.items.as_deref(), host, written)?;
        }
        return Ok(());
    }
    if let Some(src) = &volume.secret {
        let name = src.secret_name.clone().unwrap_or_default();
        if let Some(s) =
            referenced::<Secret>(ctx, &ns, &name, src.optional.unwrap_or(false)).await?
        {
            write_secret(&s, src.items.as_deref(), host)?;
        }
        return Ok(());
    }
    if let Some(src) = &volume.downward_api {
        return write_downward(pod, ip, src.items.as_deref().unwrap_or_default(), host);
    }
    if let Some(src) = &volume.projected {
        for s in src.sources.iter().flatten() {
            if let Some(p) = &s.config_map {
                if let Some(cm) =
                    referenced::<ConfigMap>(ctx, &ns, &p.name, p.optional.unwrap_or(false)).await?
                {
                    write_config_map(&cm, p.items.as_deref(), host, written)?;
                }
            } else if let Some(p) = &s.secret {
                if let Some(sec) =
                    referenced::<Secret>(ctx, &ns, &p.name, p.optional.unwrap_or(false)).await?
                {
                    write_secret(&sec, p.items.as_deref(), host)?;
                }
            } else if let Some(p) = &s.downward_api {
                write_downward(pod, ip, p.items.as_deref().unwrap_or_default(), host)?;
            } else if let Some(p) = &s.service_account_token {
                let token = service_account_token(
                    ctx,
                    pod,
                    p.audience.clone(),
                    p.expiration_seconds.unwrap_or(3600),
                )
                .await?;
                write_private(&host.join(&p.path), token.as_bytes())?;
            } else {
                return Err(Fatal(format!(
                    "volume {}: unsupported projected source",
                    volume.name
                )));
            }
        }
        return Ok(());
    }
    Err(Fatal(format!(
        "volume {}: only configMap, secret, projected, downwardAPI and emptyDir volumes are supported",
        volume.name
    )))
}

/// Writes a Secret value or a token: readable by the runner's user only.
fn write_private(path: &Path, data: &[u8]) -> Result<(), PrepareError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Retry(format!("cannot create {}: {e}", parent.display())))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .map_err(|e| Retry(format!("cannot write {}: {e}", path.display())))
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), PrepareError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Retry(format!("cannot create {}: {e}", parent.display())))?;
    }
    std::fs::write(path, data).map_err(|e| Retry(format!("cannot write {}: {e}", path.display())))
}

/// Keys to write: every key, or only the listed ones at their paths.
fn select<'a>(
    keys: impl Iterator<Item = &'a String>,
    items: Option<&[KeyToPath]>,
) -> Vec<(String, String)> {
    match items {
        Some(items) => items
            .iter()
            .map(|i| (i.key.clone(), i.path.clone()))
            .collect(),
        None => keys.map(|k| (k.clone(), k.clone())).collect(),
    }
}

fn write_config_map(
    cm: &ConfigMap,
    items: Option<&[KeyToPath]>,
    host: &Path,
    written: &mut Written,
) -> Result<(), PrepareError> {
    let data = cm.data.clone().unwrap_or_default();
    let binary = cm.binary_data.clone().unwrap_or_default();
    for (key, path) in select(data.keys().chain(binary.keys()), items) {
        let file = host.join(&path);
        if let Some(text) = data.get(&key) {
            write_file(&file, text.as_bytes())?;
            written.text.push(file);
        } else if let Some(bytes) = binary.get(&key) {
            write_file(&file, &bytes.0)?;
        }
    }
    Ok(())
}

fn write_secret(s: &Secret, items: Option<&[KeyToPath]>, host: &Path) -> Result<(), PrepareError> {
    let data = s.data.clone().unwrap_or_default();
    for (key, path) in select(data.keys(), items) {
        if let Some(bytes) = data.get(&key) {
            write_private(&host.join(&path), &bytes.0)?;
        }
    }
    Ok(())
}

fn write_downward(
    pod: &Pod,
    ip: Ipv4Addr,
    items: &[DownwardAPIVolumeFile],
    host: &Path,
) -> Result<(), PrepareError> {
    for item in items {
        let f = item.field_ref.as_ref().ok_or_else(|| {
            Fatal(format!(
                "downwardAPI {}: only fieldRef is supported",
                item.path
            ))
        })?;
        let v = field_value(pod, ip, &f.field_path).ok_or_else(|| {
            Fatal(format!(
                "downwardAPI fieldRef {} is not supported",
                f.field_path
            ))
        })?;
        write_file(&host.join(&item.path), v.as_bytes())?;
    }
    Ok(())
}

fn secret_strings(s: &Secret) -> BTreeMap<String, String> {
    s.data
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
        .collect()
}

/// The value of a downward-API field path.
pub fn field_value(pod: &Pod, ip: Ipv4Addr, path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let map_key = |prefix: &str| {
        path.strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_string)
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => pod.spec.as_ref()?.node_name.clone(),
        "spec.serviceAccountName" => pod.spec.as_ref()?.service_account_name.clone(),
        "status.podIP" | "status.podIPs" => Some(ip.to_string()),
        "status.hostIP" | "status.hostIPs" => Some("127.0.0.1".into()),
        _ => {
            if let Some(k) = map_key("metadata.labels['") {
                Some(meta.labels.as_ref()?.get(&k).cloned().unwrap_or_default())
            } else if let Some(k) = map_key("metadata.annotations['") {
                Some(
                    meta.annotations
                        .as_ref()?
                        .get(&k)
                        .cloned()
                        .unwrap_or_default(),
                )
            } else {
                None
            }
        }
    }
}

/// A namespaced object a pod refers to (ConfigMap, Secret): `None` when it is missing and the
/// reference is optional, a retry when it is missing otherwise.
async fn referenced<K>(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Option<K>, PrepareError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(object)) => Ok(Some(object)),
        Ok(None) if optional => Ok(None),
        Ok(None) => Err(Retry(format!("{kind} {ns}/{name} not found"))),
        Err(e) => Err(Retry(format!("cannot get {kind} {ns}/{name}: {e}"))),
    }
}

/// A bound service-account token for the pod, as the kubelet requests for projected volumes.
async fn service_account_token(
    ctx: &Ctx,
    pod: &Pod,
    audience: Option<String>,
    expiration_seconds: i64,
) -> Result<String, PrepareError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &ns);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(audience.into_iter().collect()),
            expiration_seconds: Some(expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        }),
        ..TokenRequest::default()
    };
    let response: TokenRequest = api
        .create_subresource("token", &sa, &PostParams::default(), &request)
        .await
        .map_err(|e| {
            Retry(format!(
                "cannot get a token for ServiceAccount {ns}/{sa}: {e}"
            ))
        })?;
    response
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| Retry(format!("no token returned for ServiceAccount {ns}/{sa}")))
}

/// A kubeconfig equivalent to the in-cluster configuration (whose file paths are fixed and
/// absolute, so they cannot be mapped): the API server, the pod's token and CA files.
fn pod_kubeconfig(api_url: &str, sa_dir: &Path, pod: &Pod) -> String {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "in-cluster", "cluster": {
            "server": api_url,
            "certificate-authority": sa_dir.join("ca.crt"),
        }}],
        "users": [{"name": "pod", "user": {"tokenFile": sa_dir.join("token")}}],
        "contexts": [{"name": "in-cluster", "context": {
            "cluster": "in-cluster", "user": "pod", "namespace": ns,
        }}],
        "current-context": "in-cluster",
    })
    .to_string()
}
