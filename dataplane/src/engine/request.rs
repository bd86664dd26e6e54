//! What the engine reads of a request, whoever parsed it (hyper for the router, the direct
//! WebSocket path for itself): the Engine.IO query parameters and the size of the headers.

/// The query parameters the engine reads.
#[derive(Debug, Default)]
pub(super) struct Query<'a> {
    pub eio: Option<&'a str>,
    pub transport: Option<&'a str>,
    pub sid: Option<&'a str>,
}

pub(super) fn parse_query(query: &str) -> Query<'_> {
    let mut q = Query::default();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "EIO" => q.eio = Some(value),
            "transport" => q.transport = Some(value),
            "sid" => q.sid = Some(value),
            _ => {}
        }
    }
    q
}

/// The bytes of a request's headers as `limits.maxHandshakeHeaderBytes` counts them: every
/// name and value (not the separators the parser took away).
pub(super) fn header_bytes<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> usize {
    pairs
        .into_iter()
        .map(|(name, value)| name.len().saturating_add(value.len()))
        .fold(0, usize::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let q = parse_query("EIO=4&transport=polling&t=abc&sid=xyz");
        assert_eq!(q.eio, Some("4"));
        assert_eq!(q.transport, Some("polling"));
        assert_eq!(q.sid, Some("xyz"));
        let q = parse_query("");
        assert_eq!(q.eio, None);
    }

    #[test]
    fn header_bytes_count_names_and_values() {
        use http::{header, HeaderMap, HeaderValue};
        let mut headers = HeaderMap::new();
        let count = |h: &HeaderMap| header_bytes(h.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
        assert_eq!(count(&headers), 0);
        headers.insert("x-a", HeaderValue::from_static("12345"));
        headers.append("x-a", HeaderValue::from_static("67"));
        headers.insert(header::HOST, HeaderValue::from_static("h"));
        assert_eq!(count(&headers), (3 + 5) + (3 + 2) + (4 + 1));
    }
}
