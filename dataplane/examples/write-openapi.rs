//! Writes the management API's OpenAPI document to docs/management-api.openapi.json (or to
//! the path given as the first argument, `-` for stdout).
//!
//!     cargo run -p roomcast-dataplane --example write-openapi

fn main() -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(&roomcast_dataplane::api::openapi::document())?;
    text.push('\n');
    let default = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/management-api.openapi.json"
    );
    match std::env::args().nth(1).as_deref() {
        Some("-") => print!("{text}"),
        Some(path) => std::fs::write(path, text)?,
        None => std::fs::write(default, text)?,
    }
    Ok(())
}
