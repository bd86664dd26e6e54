//! A stand-in for prometheus-adapter: the custom metrics API (`custom.metrics.k8s.io/v1beta2`)
//! serving the per-pod metric `roomcast_connections`, registered with the real kube-apiserver
//! through an APIService (the aggregation layer), so the real HorizontalPodAutoscaler controller
//! of kube-controller-manager reads it exactly as it would read prometheus-adapter.
//!
//! Why a stand-in: the operator tier has no kubelet, so hub pods never run and there is no
//! Prometheus to scrape them; the test sets the value every pod of a namespace reports
//! ([`MetricsStandin::set`]). Everything else is real: the APIService, the front-proxy client
//! certificate kube-apiserver presents (checked against the CA it publishes in
//! `kube-system/extension-apiserver-authentication`), the HPA controller, the scale subresource.
//!
//! It serves TLS on 127.0.0.1; an `ExternalName` Service (`localhost`) points the APIService at
//! it, because kube-apiserver resolves such a Service to its name and the APIService's port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

pub const GROUP: &str = "custom.metrics.k8s.io";
pub const VERSION: &str = "v1beta2";
pub const METRIC: &str = "roomcast_connections";
const SERVICE: &str = "roomcast-metrics-standin";

/// One metrics request the stand-in answered: who asked (the `X-Remote-User` kube-apiserver
/// forwards) and for which pods (`labelSelector`).
#[derive(Clone, Debug)]
pub struct Query {
    pub user: String,
    pub namespace: String,
    pub selector: String,
}

#[derive(Default)]
struct State {
    /// `roomcast_connections` of every pod in a namespace; none: no series (empty list).
    values: HashMap<String, u64>,
    queries: Vec<Query>,
}

pub struct MetricsStandin {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    ca_pem: String,
    service_ns: String,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsStandin {
    /// Starts serving on 127.0.0.1 with a certificate for `roomcast-metrics-standin.<service_ns>.svc`
    /// (the name kube-apiserver verifies), accepting only clients with a certificate of the
    /// front-proxy CA.
    pub async fn start(client: &Client, service_ns: &str) -> Self {
        let front_proxy_ca = front_proxy_ca(client).await;
        let (ca_pem, cert_pem, key_pem) = serving_certificate(service_ns);
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(front_proxy_ca.as_bytes()) {
            roots
                .add(der.expect("front-proxy CA PEM"))
                .expect("front-proxy CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("serving cert"),
                PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("serving key"),
            )
            .expect("TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let (st, kube) = (state.clone(), client.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, st, kube) = (acceptor.clone(), st.clone(), kube.clone());
                tokio::spawn(async move {
                    // A client without a front-proxy certificate fails the handshake here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (st, kube) = (st.clone(), kube.clone());
                        async move { Ok::<_, std::convert::Infallible>(route(req, &st, &kube).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            state,
            addr,
            ca_pem,
            service_ns: service_ns.to_string(),
            task,
        }
    }

    /// Every pod of `namespace` reports `value` from now on.
    pub fn set(&self, namespace: &str, value: u64) {
        let mut st = self.state.lock().unwrap();
        st.values.insert(namespace.to_string(), value);
    }

    /// The metrics requests answered so far.
    pub fn queries(&self) -> Vec<Query> {
        self.state.lock().unwrap().queries.clone()
    }

    /// Creates the `ExternalName` Service and the APIService `v1beta2.custom.metrics.k8s.io`
    /// (trusting this server's CA) and waits until kube-apiserver reports it Available.
    pub async fn register(&self, client: &Client) {
        let services: Api<Service> = Api::namespaced(client.clone(), &self.service_ns);
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": SERVICE},
            "spec": {"type": "ExternalName", "externalName": "localhost"}
        }))
        .unwrap();
        services.create(&PostParams::default(), &svc).await.unwrap();
        let apis: Api<APIService> = Api::all(client.clone());
        use base64::Engine as _;
        let api: APIService = serde_json::from_value(json!({
            "metadata": {"name": format!("{VERSION}.{GROUP}")},
            "spec": {
                "group": GROUP, "version": VERSION,
                "groupPriorityMinimum": 100, "versionPriority": 200,
                "service": {"namespace": self.service_ns, "name": SERVICE, "port": self.addr.port()},
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&self.ca_pem),
            }
        }))
        .unwrap();
        apis.create(&PostParams::default(), &api).await.unwrap();
        let start = std::time::Instant::now();
        loop {
            let available = apis.get(&api.name_any()).await.ok().and_then(|a| {
                a.status?
                    .conditions?
                    .into_iter()
                    .find(|c| c.type_ == "Available")
            });
            match available {
                Some(c) if c.status == "True" => break,
                c => assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "APIService not Available: {c:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Removes the APIService and the Service and stops serving. An APIService left
    /// unavailable would break discovery (and namespace deletion) for the tests after this one.
    pub async fn unregister(&self, client: &Client) {
        let apis: Api<APIService> = Api::all(client.clone());
        let _ = apis
            .delete(&format!("{VERSION}.{GROUP}"), &DeleteParams::default())
            .await;
        let services: Api<Service> = Api::namespaced(client.clone(), &self.service_ns);
        let _ = services.delete(SERVICE, &DeleteParams::default()).await;
        self.task.abort();
    }
}

/// The CA kube-apiserver's proxy client certificate chains to, as it publishes it for
/// extension API servers.
async fn front_proxy_ca(client: &Client) -> String {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let cm = cms
        .get("extension-apiserver-authentication")
        .await
        .expect("extension-apiserver-authentication ConfigMap");
    cm.data
        .and_then(|d| d.get("requestheader-client-ca-file").cloned())
        .expect("requestheader-client-ca-file: kube-apiserver runs without --requestheader-client-ca-file")
}

/// `(ca, cert, key)` PEMs: a throwaway CA and a serving certificate for the Service's name.
fn serving_certificate(service_ns: &str) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec![format!("{SERVICE}.{service_ns}.svc")]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// `/apis/custom.metrics.k8s.io/v1beta2` (discovery),
/// `/apis/custom.metrics.k8s.io/v1beta2/namespaces/<ns>/pods/*/roomcast_connections` and an
/// empty `/openapi/v2`; anything else (the aggregated discovery at `/apis` among them, for
/// which kube-apiserver falls back to the version's discovery) is a 404.
async fn route(
    req: Request<Incoming>,
    state: &Mutex<State>,
    client: &Client,
) -> Response<Full<Bytes>> {
    let base = format!("/apis/{GROUP}/{VERSION}");
    let path = req.uri().path();
    if path == base {
        return json_response(
            StatusCode::OK,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"),
                "resources": [{"name": format!("pods/{METRIC}"), "singularName": "", "namespaced": true,
                    "kind": "MetricValueList", "verbs": ["get"]}]}),
        );
    }
    if path == "/openapi/v2" {
        // kube-apiserver merges every APIService's OpenAPI document into its own; none to add.
        return json_response(
            StatusCode::OK,
            json!({"swagger": "2.0", "info": {"title": SERVICE, "version": VERSION}, "paths": {}}),
        );
    }
    let rest: Vec<&str> = path
        .strip_prefix(&base)
        .unwrap_or_default()
        .split('/')
        .collect();
    // client-go escapes the `*` (all pods) as %2A.
    let ["", "namespaces", ns, "pods", "*" | "%2A", METRIC] = rest[..] else {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                "reason": "NotFound", "message": format!("metrics stand-in: no {path}")}),
        );
    };
    let selector = form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let user = req
        .headers()
        .get("x-remote-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let value = {
        let mut st = state.lock().unwrap();
        st.queries.push(Query {
            user,
            namespace: ns.to_string(),
            selector: selector.clone(),
        });
        st.values.get(ns).copied()
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let items: Vec<serde_json::Value> = value
        .map(|v| {
            listed
                .iter()
                .map(|p| {
                    json!({"describedObject": {"kind": "Pod", "apiVersion": "/v1", "namespace": ns, "name": p.name_any()},
                        "metric": {"name": METRIC}, "timestamp": now, "windowSeconds": 30, "value": v.to_string()})
                })
                .collect()
        })
        .unwrap_or_default();
    json_response(
        StatusCode::OK,
        json!({"kind": "MetricValueList", "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items}),
    )
}
