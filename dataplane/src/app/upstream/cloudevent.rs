//! CloudEvents 1.0 in HTTP binary content mode: the requests Roomcast sends to the app and
//! how it reads the answers. Pure code, no I/O.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// The header carrying `v1=<hex>`: the HMAC-SHA256, under the webhook's secret, of
/// [`signed_text`] (timestamp, event id, type and body).
pub const SIGNATURE_HEADER: &str = "x-roomcast-signature";
/// The header carrying the Unix time (seconds) at which the request was signed.
pub const TIMESTAMP_HEADER: &str = "x-roomcast-timestamp";

/// CloudEvents `type` values.
pub const TYPE_CONNECT: &str = "dev.roomcast.socket.connect";
pub const TYPE_EVENT: &str = "dev.roomcast.socket.event";
pub const TYPE_DISCONNECT: &str = "dev.roomcast.socket.disconnect";
/// A socket came back through connection state recovery (no `connect` is sent for it).
pub const TYPE_RECONNECT: &str = "dev.roomcast.socket.reconnect";

/// One outgoing webhook request: CloudEvents attributes as headers, JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    pub id: String,
    pub kind: &'static str,
    /// `roomcast://<node>/<namespace>`.
    pub source: String,
    /// The socket id.
    pub subject: String,
    /// RFC 3339 time.
    pub time: String,
    pub namespace: String,
    /// For `event`: the client's event name.
    pub event: Option<String>,
    pub body: Value,
}

impl CloudEvent {
    /// The headers of binary content mode, plus the timestamp and the signature when a key
    /// is set. `now` is the Unix time in seconds (each retry is signed anew).
    pub fn headers(
        &self,
        body: &[u8],
        key: Option<&[u8]>,
        now: u64,
    ) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("ce-specversion", "1.0".to_string()),
            ("ce-id", self.id.clone()),
            ("ce-type", self.kind.to_string()),
            ("ce-source", self.source.clone()),
            ("ce-subject", self.subject.clone()),
            ("ce-time", self.time.clone()),
            ("ce-namespace", self.namespace.clone()),
            ("content-type", "application/json".to_string()),
        ];
        if let Some(event) = &self.event {
            headers.push(("ce-event", event.clone()));
        }
        if let Some(key) = key {
            let text = signed_text(now, &self.id, self.kind, body);
            headers.push((TIMESTAMP_HEADER, now.to_string()));
            headers.push((SIGNATURE_HEADER, sign(key, &text)));
        }
        headers
    }
}

/// What a signature covers: `v1:<timestamp>:<ce-id>:<ce-type>:` followed by the body bytes,
/// so that a captured request cannot be replayed later (timestamp), as another event (id)
/// or as another kind of event (type).
pub fn signed_text(timestamp: u64, id: &str, kind: &str, body: &[u8]) -> Vec<u8> {
    let mut text = format!("v1:{timestamp}:{id}:{kind}:").into_bytes();
    text.extend_from_slice(body);
    text
}

/// `v1=<hex>` of the HMAC-SHA256 of `text` under `key`.
pub fn sign(key: &[u8], text: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(text);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// RFC 3339 UTC time of `t` (seconds precision plus milliseconds).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The app's answer to a `connect` event.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectAnswer {
    Accept {
        data: Value,
        rooms: Vec<String>,
    },
    Reject {
        message: String,
        data: Option<Value>,
    },
}

/// Reads a `connect` answer: an empty body accepts; `{"accept": false, "message", "data"}`
/// rejects; `{"accept": true, "data", "rooms"}` accepts with socket data and initial rooms.
pub fn parse_connect_answer(body: &[u8]) -> Result<ConnectAnswer, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ConnectAnswer::Accept {
            data: Value::Null,
            rooms: Vec::new(),
        });
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("connect answer is not JSON: {e}"))?;
    let accept = value
        .get("accept")
        .and_then(Value::as_bool)
        .ok_or("connect answer needs a boolean \"accept\"")?;
    if accept {
        let rooms = match value.get("rooms") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|r| {
                    r.as_str()
                        .map(str::to_string)
                        .ok_or("rooms must be strings")
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("rooms must be an array of strings".into()),
        };
        Ok(ConnectAnswer::Accept {
            data: value.get("data").cloned().unwrap_or(Value::Null),
            rooms,
        })
    } else {
        Ok(ConnectAnswer::Reject {
            message: value
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("connection refused")
                .to_string(),
            data: value.get("data").cloned(),
        })
    }
}

/// Reads an `event` answer into ack arguments: a JSON array is the argument list, any other
/// JSON value is the single argument, an empty body means no arguments.
pub fn parse_ack_answer(body: &[u8]) -> Result<Vec<Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    match serde_json::from_slice(body).map_err(|e| format!("event answer is not JSON: {e}"))? {
        Value::Array(items) => Ok(items),
        other => Ok(vec![other]),
    }
}

/// The ack a client gets when the app could not answer: `{"error": reason, "message"}`.
pub fn error_ack(reason: &str, message: &str) -> Vec<Value> {
    vec![json!({ "error": reason, "message": message })]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let sig = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "v1=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn connect_answers() {
        assert_eq!(
            parse_connect_answer(b"").unwrap(),
            ConnectAnswer::Accept {
                data: Value::Null,
                rooms: vec![]
            }
        );
        assert_eq!(
            parse_connect_answer(br#"{"accept":true,"data":{"n":1},"rooms":["a"]}"#).unwrap(),
            ConnectAnswer::Accept {
                data: json!({"n":1}),
                rooms: vec!["a".into()]
            }
        );
        assert_eq!(
            parse_connect_answer(br#"{"accept":false,"message":"banned","data":{"until":5}}"#)
                .unwrap(),
            ConnectAnswer::Reject {
                message: "banned".into(),
                data: Some(json!({"until":5}))
            }
        );
        assert!(parse_connect_answer(b"garbage").is_err());
        assert!(parse_connect_answer(br#"{"accept":"yes"}"#).is_err());
        assert!(parse_connect_answer(br#"{"accept":true,"rooms":[1]}"#).is_err());
    }

    #[test]
    fn ack_answers() {
        assert_eq!(parse_ack_answer(b"").unwrap(), Vec::<Value>::new());
        assert_eq!(
            parse_ack_answer(b"[1,2]").unwrap(),
            vec![json!(1), json!(2)]
        );
        assert_eq!(
            parse_ack_answer(br#"{"ok":true}"#).unwrap(),
            vec![json!({"ok":true})]
        );
        assert!(parse_ack_answer(b"{").is_err());
    }

    #[test]
    fn times_are_rfc3339() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn headers_carry_attributes() {
        let ev = CloudEvent {
            id: "1".into(),
            kind: TYPE_EVENT,
            source: "roomcast://n/".into(),
            subject: "sock".into(),
            time: "t".into(),
            namespace: "/".into(),
            event: Some("chat".into()),
            body: json!({}),
        };
        let headers = ev.headers(b"{}", Some(b"k"), 1_700_000_000);
        assert!(headers.contains(&("ce-type", TYPE_EVENT.to_string())));
        assert!(headers.contains(&("ce-event", "chat".to_string())));
        assert!(headers.contains(&(TIMESTAMP_HEADER, "1700000000".to_string())));
        let expected = sign(b"k", b"v1:1700000000:1:dev.roomcast.socket.event:{}");
        assert!(headers.contains(&(SIGNATURE_HEADER, expected)));
        // Another id, type or time gives another signature.
        let other = sign(b"k", &signed_text(1_700_000_001, "1", TYPE_EVENT, b"{}"));
        assert!(!headers.contains(&(SIGNATURE_HEADER, other)));
        assert!(!ev
            .headers(b"{}", None, 1)
            .iter()
            .any(|(k, _)| *k == SIGNATURE_HEADER));
    }
}
