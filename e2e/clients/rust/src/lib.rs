//! Helpers of the Rust suite of the stock-clients tier: the hub's control API
//! (e2e/clients/stack.mjs, plain HTTP on loopback), the management API through it, the results
//! file, and [`Peer`]: a stock `rust_socketio` client that records what it receives.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rust_socketio::client::Client;
use rust_socketio::{ClientBuilder, Event, Payload, RawClient, TransportType};
use serde_json::{json, Value};

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run this suite through e2e/clients/run.sh"))
}

/// Appends one line to the suite's results file.
pub fn record(line: Value) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env("ROOMCAST_CLIENTS_RESULTS"))
        .expect("results file");
    writeln!(f, "{line}").expect("write results");
}

/// The version of a package in this crate's Cargo.lock (what `--locked` built).
fn locked_version(name: &str) -> String {
    let lock = include_str!("../Cargo.lock");
    let needle = format!("name = \"{name}\"\nversion = \"");
    let start = lock.find(&needle).expect("package in Cargo.lock") + needle.len();
    lock[start..].split('"').next().unwrap().to_string()
}

/// Writes the client line of the results once, and the feature once a test passed: call it
/// as the last statement of a test.
pub fn passed(feature: &str) {
    static CLIENT: Once = Once::new();
    CLIENT.call_once(|| {
        record(json!({
            "type": "client",
            "version": format!("rust_socketio {} (rust_engineio {})", locked_version("rust_socketio"), locked_version("rust_engineio")),
            "details": { "tungstenite": locked_version("tungstenite"), "reqwest": locked_version("reqwest") },
        }))
    });
    record(json!({ "type": "feature", "feature": feature }));
}

/// Records a difference from the reference client that the suite observed (and asserted).
pub fn difference(text: &str) {
    record(json!({ "type": "difference", "text": text }));
}

/// A control API call (HTTP/1.0, so the answer ends with the connection); panics unless 200.
pub fn control(method: &str, route: &str, body: Option<Value>) -> Value {
    let base = env("ROOMCAST_CLIENTS_CONTROL");
    let host = base.strip_prefix("http://").expect("http:// control URL");
    let mut stream = TcpStream::connect(host).expect("connect to the control API");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {route} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("control answer");
    let (head, text) = answer.split_once("\r\n\r\n").expect("HTTP answer");
    let status = head.split(' ').nth(1).unwrap_or("");
    assert_eq!(status, "200", "control {route}: {answer}");
    serde_json::from_str(text).expect("control JSON")
}

pub fn proxy() -> String {
    control("GET", "/info", None)["proxy"]
        .as_str()
        .unwrap()
        .to_string()
}

pub fn token(claims: Value) -> String {
    control("POST", "/token", Some(claims))["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A management API call on a live member; asserts HTTP 200 and returns the body.
pub fn mgmt(method: &str, path: &str, body: Value) -> Value {
    let res = control(
        "POST",
        "/mgmt",
        Some(json!({ "method": method, "path": path, "body": body })),
    );
    assert_eq!(res["status"], 200, "{method} {path}: {res}");
    res["body"].clone()
}

pub fn fetch_sockets(namespace: &str, room: &str) -> Vec<Value> {
    let ns = namespace.replace('/', "%2F");
    mgmt(
        "POST",
        &format!("/v1/namespaces/{ns}/sockets/fetch"),
        json!({ "rooms": [room] }),
    )["sockets"]
        .as_array()
        .unwrap()
        .clone()
}

pub fn owner_of(socket_id: &str) -> String {
    String::from_utf8(URL_SAFE_NO_PAD.decode(&socket_id[16..]).unwrap()).unwrap()
}

pub fn rand() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:x}{}", nanos, N.fetch_add(1, Ordering::Relaxed))
}

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub fn pattern(n: usize, seed: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + seed) & 0xff) as u8).collect()
}

pub fn eventually(what: &str, ms: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_millis(ms);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {ms} ms waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A received payload as JSON: text arguments as they are, binary as {"_bytes": base64}.
pub fn payload_json(p: &Payload) -> Value {
    match p {
        Payload::Text(values) => Value::Array(values.clone()),
        Payload::Binary(bytes) => json!([{ "_bytes": b64(bytes) }]),
        #[allow(deprecated)]
        Payload::String(s) => json!([s]),
    }
}

type Log = Arc<Mutex<Vec<(String, Value)>>>;

/// A stock rust_socketio client (blocking `ClientBuilder`) that records every event it gets as
/// (name, arguments as JSON), every error, and its connects and closes.
pub struct Peer {
    pub client: Client,
    pub got: Log,
    pub errors: Arc<Mutex<Vec<String>>>,
    pub connects: Arc<AtomicUsize>,
    pub closes: Arc<AtomicUsize>,
}

pub struct Options {
    pub namespace: &'static str,
    pub transport: TransportType,
    pub auth: Option<Value>,
    pub reconnect: bool,
    /// Called (on the client's thread) on every connect.
    pub on_connect: Option<Box<dyn Fn(&RawClient) + Send + Sync>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            namespace: "/",
            transport: TransportType::Websocket,
            auth: None,
            reconnect: false,
            on_connect: None,
        }
    }
}

impl Peer {
    /// Builds and connects the client; returns once the namespace is connected, or Err with
    /// what the error callback got (a connect_error, a transport failure) within 10 s.
    pub fn connect(proxy: &str, opts: Options) -> Result<Peer, String> {
        let got: Log = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let connects = Arc::new(AtomicUsize::new(0));
        let closes = Arc::new(AtomicUsize::new(0));
        let auth = opts.auth.unwrap_or_else(
            || json!({ "token": token(json!({ "sub": format!("rust-{}", rand()) })) }),
        );
        let on_connect = opts.on_connect;
        // The namespace goes in `namespace()` only: a path in the URL is taken for the
        // Engine.IO path by rust_socketio (unlike the JS client's `io(url + nsp)`).
        let builder = ClientBuilder::new(proxy)
            .namespace(opts.namespace)
            .transport_type(opts.transport)
            .auth(auth)
            .reconnect(opts.reconnect)
            .reconnect_on_disconnect(opts.reconnect)
            .reconnect_delay(100, 500)
            .on_any({
                let got = got.clone();
                move |event: Event, payload: Payload, _: RawClient| {
                    got.lock()
                        .unwrap()
                        .push((event.as_str().to_string(), payload_json(&payload)));
                }
            })
            .on(Event::Connect, {
                let connects = connects.clone();
                move |_, client: RawClient| {
                    connects.fetch_add(1, Ordering::SeqCst);
                    if let Some(hook) = &on_connect {
                        hook(&client);
                    }
                }
            })
            .on(Event::Close, {
                let closes = closes.clone();
                move |_, _| {
                    closes.fetch_add(1, Ordering::SeqCst);
                }
            })
            .on(Event::Error, {
                let errors = errors.clone();
                move |payload: Payload, _| {
                    let text = match payload {
                        Payload::Text(v) => v
                            .iter()
                            .map(|x| x.as_str().map(str::to_string).unwrap_or(x.to_string()))
                            .collect::<Vec<_>>()
                            .join(" "),
                        other => format!("{other:?}"),
                    };
                    errors.lock().unwrap().push(text);
                }
            });
        let client = builder.connect().map_err(|e| format!("connect: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if connects.load(Ordering::SeqCst) > 0 {
                break;
            }
            if let Some(e) = errors.lock().unwrap().last() {
                let _ = client.disconnect();
                return Err(e.clone());
            }
            if Instant::now() > deadline {
                let _ = client.disconnect();
                return Err("no connect within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Peer {
            client,
            got,
            errors,
            connects,
            closes,
        })
    }

    /// emit with an ack; the ack's payload as JSON (see [`payload_json`]).
    pub fn call(&self, event: &str, payload: impl Into<Payload>) -> Value {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        self.client
            .emit_with_ack(
                event,
                payload,
                Duration::from_secs(5),
                move |p: Payload, _: RawClient| {
                    let _ = tx.lock().unwrap().send(ack_args(p));
                },
            )
            .expect("emit_with_ack");
        rx.recv_timeout(Duration::from_secs(6))
            .unwrap_or_else(|_| panic!("no ack for {event} within 5 s"))
    }

    /// `call` whose ack carries one value: that value.
    pub fn call1(&self, event: &str, payload: impl Into<Payload>) -> Value {
        let v = self.call(event, payload);
        assert_eq!(v.as_array().map(Vec::len), Some(1), "one ack argument: {v}");
        v[0].clone()
    }

    pub fn join(&self, room: &str) {
        assert_eq!(
            self.call1("roomcast:join", json!(room)),
            json!({ "ok": true }),
            "join {room}"
        );
    }

    /// This client's socket: joins a fresh room and finds itself there through fetchSockets.
    pub fn lookup(&self, namespace: &str) -> Value {
        let probe = format!("room:probe-{}", rand());
        self.join(&probe);
        let sockets = fetch_sockets(namespace, &probe);
        assert_eq!(sockets.len(), 1, "{sockets:?}");
        sockets[0].clone()
    }

    pub fn events(&self, name: &str) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(e, _)| e == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
    }
}

/// An answer {ok: true, KEY: n}: the hub counts the sockets of the node that served the call
/// only (docs/configuration.md, cluster), so through the proxy n is at most `most`; what each
/// client got is counted separately.
pub fn assert_ok(res: &Value, key: &str, most: u64) {
    let obj = res
        .as_object()
        .unwrap_or_else(|| panic!("an object: {res}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = vec!["ok", key];
    want.sort_unstable();
    assert_eq!(keys, want, "{res}");
    assert_eq!(obj["ok"], true, "{res}");
    let n = obj[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {res}"));
    assert!(n <= most, "{res}: {key} not in 0..{most}");
}

/// A management emit's answer {recipients: n}, n at most `most` (see [`assert_ok`]).
pub fn assert_recipients(res: &Value, most: u64) {
    let obj = res
        .as_object()
        .unwrap_or_else(|| panic!("an object: {res}"));
    assert_eq!(obj.keys().collect::<Vec<_>>(), vec!["recipients"], "{res}");
    assert!(
        obj["recipients"].as_u64().unwrap() <= most,
        "{res}: recipients not in 0..{most}"
    );
}

/// An ack's arguments: rust_socketio hands an ack's text over as one value, the JSON array of
/// its arguments.
pub fn ack_args(p: Payload) -> Value {
    match p {
        Payload::Text(mut v) if v.len() == 1 && v[0].is_array() => v.remove(0),
        other => payload_json(&other),
    }
}

/// Waits until each (peer, n) got n `event`s, then checks that exactly that many came.
pub fn settle_counts(pairs: &[(&Peer, usize)], event: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && pairs.iter().any(|(p, n)| p.events(event).len() < *n) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let got: Vec<usize> = pairs.iter().map(|(p, _)| p.events(event).len()).collect();
    let want: Vec<usize> = pairs.iter().map(|(_, n)| *n).collect();
    assert_eq!(got, want, "{what}: deliveries per socket");
}
