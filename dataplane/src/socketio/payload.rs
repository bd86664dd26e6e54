//! Event arguments: JSON values plus binary attachments.

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
}
