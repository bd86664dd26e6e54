//! Event arguments: JSON values plus binary attachments.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

/// Arguments of an event or ack. Binary values stay out of the JSON: each is an entry of
/// `attachments`, referenced from `args` by a `{"_placeholder":true,"num":N}` object, which
/// is exactly how they travel on the wire, so payloads pass through without re-encoding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    pub args: Vec<Value>,
    pub attachments: Vec<Bytes>,
}

impl Payload {
    pub fn new(args: Vec<Value>) -> Self {
        Self {
            args,
            attachments: Vec::new(),
        }
    }

    /// Adds a binary value as an attachment and returns the placeholder to put in `args`.
    pub fn attach(&mut self, data: Bytes) -> Value {
        let num = self.attachments.len();
        self.attachments.push(data);
        placeholder(num)
    }

    /// The attachment a placeholder value refers to, if `value` is one.
    pub fn binary(&self, value: &Value) -> Option<&Bytes> {
        let map = value.as_object()?;
        if map.get("_placeholder") != Some(&Value::Bool(true)) {
            return None;
        }
        let num = map.get("num")?.as_u64()?;
        self.attachments.get(usize::try_from(num).ok()?)
    }
}

/// The JSON convention for binary values outside the Socket.IO wire format (webhooks and the
/// management API): a binary value is the object `{"_binary": "<base64>"}`.
pub const BINARY_KEY: &str = "_binary";

impl Payload {
    /// The arguments as plain JSON, each attachment inlined as `{"_binary": "<base64>"}`.
    pub fn to_json_base64(&self) -> Vec<Value> {
        fn walk(value: &Value, payload: &Payload) -> Value {
            if let Some(data) = payload.binary(value) {
                return json!({ BINARY_KEY: STANDARD.encode(data) });
            }
            match value {
                Value::Array(items) => {
                    Value::Array(items.iter().map(|v| walk(v, payload)).collect())
                }
                Value::Object(map) => Value::Object(
                    map.iter()
                        .map(|(k, v)| (k.clone(), walk(v, payload)))
                        .collect(),
                ),
                other => other.clone(),
            }
        }
        self.args.iter().map(|v| walk(v, self)).collect()
    }

    /// Builds a payload from plain JSON arguments, turning every `{"_binary": "<base64>"}`
    /// into an attachment. Fails on invalid base64.
    pub fn from_json_base64(args: Vec<Value>) -> Result<Payload, String> {
        fn walk(value: Value, payload: &mut Payload) -> Result<Value, String> {
            match value {
                Value::Object(map) if map.len() == 1 && map.contains_key(BINARY_KEY) => {
                    let encoded = map
                        .get(BINARY_KEY)
                        .and_then(Value::as_str)
                        .ok_or("_binary must be a base64 string")?;
                    let data = STANDARD
                        .decode(encoded)
                        .map_err(|_| "_binary is not valid base64".to_string())?;
                    Ok(payload.attach(Bytes::from(data)))
                }
                Value::Object(map) => {
                    let mut out = serde_json::Map::with_capacity(map.len());
                    for (k, v) in map {
                        out.insert(k, walk(v, payload)?);
                    }
                    Ok(Value::Object(out))
                }
                Value::Array(items) => Ok(Value::Array(
                    items
                        .into_iter()
                        .map(|v| walk(v, payload))
                        .collect::<Result<_, _>>()?,
                )),
                other => Ok(other),
            }
        }
        let mut payload = Payload::default();
        let mut out = Vec::with_capacity(args.len());
        for arg in args {
            out.push(walk(arg, &mut payload)?);
        }
        payload.args = out;
        Ok(payload)
    }
}

/// The placeholder object for attachment `num`.
pub fn placeholder(num: usize) -> Value {
    json!({ "_placeholder": true, "num": num })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_and_resolve() {
        let mut p = Payload::default();
        let ph = p.attach(Bytes::from_static(b"abc"));
        p.args.push(json!({ "file": ph.clone() }));
        assert_eq!(p.binary(&ph), Some(&Bytes::from_static(b"abc")));
        assert_eq!(p.binary(&json!({"_placeholder": true, "num": 5})), None);
        assert_eq!(p.binary(&json!("x")), None);
    }

    #[test]
    fn base64_convention_round_trip() {
        let mut p = Payload::default();
        let ph = p.attach(Bytes::from_static(&[0, 1, 255]));
        p.args = vec![json!("name"), json!({ "file": ph, "list": [1, 2] })];
        let plain = p.to_json_base64();
        assert_eq!(plain[1]["file"], json!({ "_binary": "AAH/" }));
        assert_eq!(Payload::from_json_base64(plain).unwrap(), p);
        assert!(Payload::from_json_base64(vec![json!({ "_binary": "!!" })]).is_err());
        assert!(Payload::from_json_base64(vec![json!({ "_binary": 5 })]).is_err());
    }
}
