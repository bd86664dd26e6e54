//! The SocketIOHub field reference in Markdown, generated from the CRD's OpenAPI schema (so the
//! docs cannot drift from the types; `operator/tests/crd.rs` checks docs/operator.md).

use kube::CustomResourceExt;
use serde_json::Value;

use crate::crd::SocketIOHub;
use crate::Result;

/// Marks the generated part of docs/operator.md.
pub const BEGIN: &str =
    "<!-- BEGIN GENERATED SOCKETIOHUB REFERENCE (roomcast-operator crd --write) -->";
pub const END: &str = "<!-- END GENERATED SOCKETIOHUB REFERENCE -->";

/// Fields documented as a whole (Kubernetes core types), not field by field.
const OPAQUE: &[(&str, &str)] = &[
    ("spec.resources", "core/v1 ResourceRequirements"),
    ("spec.placement.affinity", "core/v1 Affinity"),
    ("spec.placement.tolerations", "list of core/v1 Toleration"),
    (
        "spec.placement.topologySpreadConstraints",
        "list of core/v1 TopologySpreadConstraint",
    ),
    ("status.conditions", "list of meta/v1 Condition"),
];

/// The reference tables (spec, then status).
pub fn reference_markdown() -> Result<String> {
    let crd = serde_json::to_value(SocketIOHub::crd())?;
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut out = String::new();
    for (section, title) in [("spec", "Spec"), ("status", "Status")] {
        out.push_str(&format!(
            "\n#### {title}\n\n| Field | Type | Default | Constraints | Description |\n|---|---|---|---|---|\n"
        ));
        walk(&root["properties"][section], section, &mut out);
    }
    if let Some(rules) = root["x-kubernetes-validations"].as_array() {
        out.push_str("\nObject-level rules: ");
        let msgs: Vec<String> = rules
            .iter()
            .filter_map(|r| {
                r["message"]
                    .as_str()
                    .map(|m| format!("{m} (`{}`)", r["rule"].as_str().unwrap_or_default()))
            })
            .collect();
        out.push_str(&msgs.join("; "));
        out.push('\n');
    }
    Ok(out)
}

fn walk(schema: &Value, path: &str, out: &mut String) {
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    for (name, s) in props {
        let p = format!("{path}.{name}");
        row(&p, s, out);
        if OPAQUE.iter().any(|(o, _)| *o == p) {
            continue;
        }
        walk(s, &p, out);
        if s["type"] == "array" {
            walk(&s["items"], &format!("{p}[]"), out);
        }
    }
}

fn type_of(path: &str, s: &Value) -> String {
    if let Some((_, t)) = OPAQUE.iter().find(|(o, _)| *o == path) {
        return (*t).to_string();
    }
    if s["x-kubernetes-int-or-string"] == true {
        return "int or string".to_string();
    }
    match s["type"].as_str() {
        Some("array") => match s["items"]["type"].as_str() {
            Some("object") => "list of objects".to_string(),
            Some(t) => format!("list of {t}"),
            None => "list".to_string(),
        },
        Some("object") if s["additionalProperties"].is_object() => "map of string".to_string(),
        Some(t) => t.to_string(),
        None => "any".to_string(),
    }
}

fn row(path: &str, s: &Value, out: &mut String) {
    let mut constraints = Vec::new();
    if let Some(e) = s["enum"]
        .as_array()
        .or_else(|| s["items"]["enum"].as_array())
    {
        let vals: Vec<String> = e
            .iter()
            .filter_map(|v| v.as_str())
            .map(|v| format!("`{v}`"))
            .collect();
        constraints.push(format!("one of {}", vals.join(", ")));
    }
    for (k, label) in [
        ("minimum", "min"),
        ("maximum", "max"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("maxItems", "max items"),
    ] {
        if let Some(v) = s[k].as_f64() {
            constraints.push(format!("{label} {v}"));
        }
    }
    if let Some(p) = s["pattern"].as_str() {
        constraints.push(format!("pattern `{p}`"));
    }
    if let Some(rules) = s["x-kubernetes-validations"].as_array() {
        for r in rules {
            if let Some(m) = r["message"].as_str() {
                constraints.push(m.to_string());
            }
        }
    }
    let default = match &s["default"] {
        Value::Null => String::new(),
        Value::Object(o) if o.is_empty() => String::new(),
        v => format!("`{v}`"),
    };
    let desc = s["description"]
        .as_str()
        .unwrap_or_default()
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .replace('\n', " ");
    out.push_str(&format!(
        "| `{}` | {} | {} | {} | {} |\n",
        path,
        type_of(path, s),
        escape(&default),
        escape(&constraints.join("; ")),
        escape(&desc)
    ));
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// `doc` with the text between the markers replaced by the current reference.
pub fn splice(doc: &str) -> Result<String> {
    let generated = reference_markdown()?;
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if b < e => {
            Ok(format!("{}{BEGIN}\n{generated}\n{}", &doc[..b], &doc[e..]))
        }
        _ => Err(crate::Error::Render(format!(
            "markers {BEGIN:?} / {END:?} not found"
        ))),
    }
}
