//! HTTP long-polling: GET waits for queued frames, POST delivers client packets.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::cork;
use super::outbox::Frame;
use super::packet::{push_base64, records, RECORD_SEPARATOR};
use super::response::{Body, EngineError, Responder};
use super::session::{FlagGuard, Session};
use super::sessions::Engine;
use super::CloseReason;
use crate::config::TransportKind;

/// Joins frames into one polling payload: text as is, binary as `b` + base64.
fn encode_payload(frames: &[Frame]) -> Bytes {
    let size: usize = frames.iter().map(|f| f.len() + 1).sum();
    let mut out = Vec::with_capacity(size + size / 3);
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            out.push(RECORD_SEPARATOR);
        }
        match frame {
            Frame::Text(text) => out.extend_from_slice(text.as_bytes()),
            Frame::Binary(data) => push_base64(&mut out, data),
        }
    }
    Bytes::from(out)
}

fn is_close(frame: &Frame) -> bool {
    matches!(frame, Frame::Text(text) if text.as_bytes() == b"1")
}

/// A polling GET: answers at once with what is queued, or waits for the next frames.
pub(super) async fn poll(
    engine: &Engine,
    session: &Arc<Session>,
    responder: &Responder,
) -> Response<Body> {
    {
        let mut t = session.transport.lock();
        if t.get_active {
            drop(t);
            // Two concurrent GETs: the reference server fails the session.
            session.close(CloseReason::TransportError);
            return responder.error(EngineError::BadRequest);
        }
        t.get_active = true;
    }
    let _guard = FlagGuard { session, get: true };
    let mut frames = Vec::new();
    loop {
        let ready = session.outbox.ready();
        // Polling answers with everything queued: flush boundaries matter only on WebSocket.
        while session.outbox.drain_into(&mut frames) {}
        // A server-side close after packets: they go in this answer, the close packet in the
        // next (the session lingers for it), as the reference server's close waits for its
        // write buffer to drain. In one payload the client would act on the close first and
        // drop the packets before it (a DISCONNECT would read as a lost connection).
        if frames.len() > 1 && frames.last().is_some_and(is_close) {
            frames.pop();
        }
        if !frames.is_empty() {
            if frames.last().is_some_and(is_close) {
                session.collected_close();
            }
            engine
                .stats
                .frames_sent
                .fetch_add(frames.len() as u64, Ordering::Relaxed);
            return responder.build(
                StatusCode::OK,
                "text/plain; charset=UTF-8",
                encode_payload(&frames),
            );
        }
        if session.outbox.is_closed() {
            session.collected_close();
            return responder.build(StatusCode::OK, "text/plain; charset=UTF-8", "1");
        }
        {
            // During an upgrade the pending GET is released with a noop so the client can
            // finish the switch; once upgraded, polling gets nothing more.
            let t = session.transport.lock();
            if t.upgrading || t.transport != TransportKind::Polling {
                return responder.build(StatusCode::OK, "text/plain; charset=UTF-8", "6");
            }
        }
        ready.await;
    }
}

/// A polling POST: decodes the payload and hands every packet to the session.
pub(super) async fn data(
    engine: &Engine,
    session: &Arc<Session>,
    req: Request<Incoming>,
    responder: &Responder,
) -> Response<Body> {
    {
        let mut t = session.transport.lock();
        if t.post_active {
            drop(t);
            session.close(CloseReason::TransportError);
            return responder.error(EngineError::BadRequest);
        }
        t.post_active = true;
    }
    let _guard = FlagGuard {
        session,
        get: false,
    };
    let max = engine.settings.max_payload;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max) {
        session.close(CloseReason::TransportError);
        return responder.status_json(
            StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::BadRequest.code(),
            "Payload too large",
        );
    }
    // A body that trickles in (slowloris) is cut at the deadline: its session is closed too,
    // since the packets it carried are lost mid-payload.
    let collect = Limited::new(req.into_body(), max).collect();
    let collected = match tokio::time::timeout(engine.settings.polling_body_timeout, collect).await
    {
        Ok(collected) => collected,
        Err(_) => {
            tracing::debug!(sid = %session.sid, "polling body too slow");
            session.close(CloseReason::TransportError);
            let mut res = responder.status_json(
                StatusCode::REQUEST_TIMEOUT,
                EngineError::BadRequest.code(),
                "Request body timeout",
            );
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return res;
        }
    };
    let body = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            let too_large = err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            session.close(CloseReason::TransportError);
            return if too_large {
                responder.status_json(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    EngineError::BadRequest.code(),
                    "Payload too large",
                )
            } else {
                responder.error(EngineError::BadRequest)
            };
        }
    };
    // Decoded one record at a time: a payload of many tiny packets is never a vector of them.
    let failure = match records(body) {
        Ok(packets) => {
            let mut handled = 0u64;
            // One write-combining scope for the whole payload (see `cork`).
            let failure = cork::corked(|| {
                for packet in packets {
                    match packet {
                        Ok(packet) => {
                            handled = handled.saturating_add(1);
                            session.on_packet(packet);
                            // A close packet (or a close it caused) ends the payload.
                            if session.is_closed() {
                                break;
                            }
                        }
                        Err(error) => return Some(error),
                    }
                }
                None
            });
            engine
                .stats
                .packets_received
                .fetch_add(handled, Ordering::Relaxed);
            failure
        }
        Err(error) => Some(error),
    };
    match failure {
        None => responder.build(StatusCode::OK, "text/html", "ok"),
        Some(error) => {
            tracing::debug!(sid = %session.sid, %error, "malformed polling payload");
            session.close(CloseReason::ParseError);
            responder.error(EngineError::BadRequest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_encoding() {
        let frames = vec![
            Frame::from("4hello".to_string()),
            Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            Frame::PING,
        ];
        assert_eq!(&encode_payload(&frames)[..], b"4hello\x1ebAQIDBA==\x1e2");
    }
}
