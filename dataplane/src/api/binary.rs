//! Binary values in JSON: the management API's convention.
//!
//! JSON has no bytes, so a binary argument is written as an object with one member,
//! `{"_binary": "<base64>"}` (standard alphabet, padding optional), anywhere inside `args`
//! (top level or nested in objects and arrays). On the way in each becomes a Socket.IO
//! binary attachment, so the client receives a `Buffer`/`ArrayBuffer`; on the way out
//! (ack replies) every attachment a client sent comes back in the same form.
//!
//! Objects with a `_placeholder` member are reserved for the wire format and refused on the
//! way in.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::socketio::Payload;

/// The member name that marks a binary value.
pub const BINARY_KEY: &str = "_binary";

const DECODER: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Turns JSON arguments into a payload: every `{"_binary": "..."}` becomes an attachment.
/// The error names the offending argument by its JSON pointer.
pub fn decode_args(args: Vec<Value>) -> Result<Payload, String> {
    let mut payload = Payload::default();
    let mut out = Vec::with_capacity(args.len());
    for (i, arg) in args.into_iter().enumerate() {
        let mut path = format!("/args/{i}");
        out.push(decode_value(arg, &mut payload, &mut path)?);
    }
    payload.args = out;
    Ok(payload)
}

fn decode_value(value: Value, payload: &mut Payload, path: &mut String) -> Result<Value, String> {
    match value {
        Value::Object(map) => {
            if map.contains_key("_placeholder") {
                return Err(format!(
                    "{path}: objects with a \"_placeholder\" member are reserved; \
                     send binary values as {{\"{BINARY_KEY}\": \"<base64>\"}}"
                ));
            }
            if let Some(b64) = map.get(BINARY_KEY) {
                let (Some(b64), 1) = (b64.as_str(), map.len()) else {
                    return Err(format!(
                        "{path}: a binary value is an object with a single \"{BINARY_KEY}\" \
                         member holding a base64 string"
                    ));
                };
                let data = DECODER
                    .decode(b64)
                    .map_err(|e| format!("{path}: invalid base64 in \"{BINARY_KEY}\": {e}"))?;
                return Ok(payload.attach(Bytes::from(data)));
            }
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                let len = path.len();
                path.push('/');
                path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                let v = decode_value(v, payload, path)?;
                path.truncate(len);
                out.insert(k, v);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, v) in items.into_iter().enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                out.push(decode_value(v, payload, path)?);
                path.truncate(len);
            }
            Ok(Value::Array(out))
        }
        other => Ok(other),
    }
}

/// Turns a received payload back into JSON: every attachment placeholder becomes
/// `{"_binary": "<base64>"}`.
pub fn encode_args(args: Vec<Value>, attachments: &[Bytes]) -> Vec<Value> {
    if attachments.is_empty() {
        return args;
    }
    args.into_iter()
        .map(|v| encode_value(v, attachments))
        .collect()
}

fn encode_value(value: Value, attachments: &[Bytes]) -> Value {
    match value {
        Value::Object(map) => {
            if map.get("_placeholder") == Some(&Value::Bool(true)) {
                let data = map
                    .get("num")
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok())
                    .and_then(|n| attachments.get(n));
                if let Some(data) = data {
                    let mut out = Map::with_capacity(1);
                    out.insert(BINARY_KEY.into(), Value::String(STANDARD.encode(data)));
                    return Value::Object(out);
                }
            }
            Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, encode_value(v, attachments)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| encode_value(v, attachments))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn binary_values_become_attachments_and_back() {
        let args = vec![
            json!("text"),
            json!({"_binary": "AQID"}),
            json!({"nested": [{"_binary": "BA"}], "n": 1}),
        ];
        let payload = decode_args(args.clone()).unwrap();
        assert_eq!(
            payload.attachments,
            vec![Bytes::from_static(&[1, 2, 3]), Bytes::from_static(&[4])]
        );
        assert_eq!(
            payload.args,
            vec![
                json!("text"),
                json!({"_placeholder": true, "num": 0}),
                json!({"nested": [{"_placeholder": true, "num": 1}], "n": 1}),
            ]
        );
        let back = encode_args(payload.args, &payload.attachments);
        assert_eq!(back[1], json!({"_binary": "AQID"}));
        assert_eq!(back[2], json!({"nested": [{"_binary": "BA=="}], "n": 1}));
    }

    #[test]
    fn bad_binary_values_are_named() {
        let err = decode_args(vec![json!({"a": [1, {"_binary": "!!"}]})]).unwrap_err();
        assert!(err.starts_with("/args/0/a/1: invalid base64"), "{err}");
        let err = decode_args(vec![json!({"_binary": 5})]).unwrap_err();
        assert!(err.contains("single \"_binary\" member"), "{err}");
        let err = decode_args(vec![json!({"_binary": "AA", "x": 1})]).unwrap_err();
        assert!(err.starts_with("/args/0:"), "{err}");
        let err = decode_args(vec![json!({"_placeholder": true, "num": 0})]).unwrap_err();
        assert!(err.contains("reserved"), "{err}");
    }
}
