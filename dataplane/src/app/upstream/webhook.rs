//! Sends CloudEvents to the application's webhook: timeouts, a per-node concurrency limit,
//! bounded retries (for `disconnect` only), signatures and counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::cloudevent::CloudEvent;
use crate::config::UpstreamConfig;

/// Why a webhook call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("the application did not answer within {0} ms")]
    Timeout(u64),
    #[error("the application answered HTTP {0}")]
    Status(u16),
    #[error("the application could not be reached: {0}")]
    Unreachable(String),
    #[error("the application's answer is larger than {0} bytes (limits.maxUpstreamAnswerBytes)")]
    AnswerTooLarge(usize),
}

impl UpstreamError {
    /// The machine-readable reason given to clients.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Timeout(_) => "upstream_timeout",
            UpstreamError::Status(_) | UpstreamError::AnswerTooLarge(_) => "upstream_error",
            UpstreamError::Unreachable(_) => "upstream_unavailable",
        }
    }
}

/// Counters of webhook traffic on this node.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    pub timeouts: AtomicU64,
    pub latency_micros_total: AtomicU64,
}

/// One namespace's webhook.
pub struct Webhook {
    client: reqwest::Client,
    pub config: UpstreamConfig,
    key: Option<Vec<u8>>,
    permits: Arc<Semaphore>,
    stats: Arc<UpstreamStats>,
    /// `limits.maxUpstreamAnswerBytes`: a larger answer is a failure.
    max_answer_bytes: usize,
}

impl Webhook {
    /// Reads the signing key (from `secret` or `secretFile`) and prepares the client.
    pub fn new(
        config: UpstreamConfig,
        client: reqwest::Client,
        permits: Arc<Semaphore>,
        stats: Arc<UpstreamStats>,
        max_answer_bytes: usize,
    ) -> anyhow::Result<Self> {
        let key = match (&config.secret, &config.secret_file) {
            (Some(secret), _) => Some(secret.as_bytes().to_vec()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read upstream secretFile {}: {e}", path.display())
                })?;
                Some(text.trim_end().as_bytes().to_vec())
            }
            (None, None) => None,
        };
        Ok(Self {
            client,
            config,
            key,
            permits,
            stats,
            max_answer_bytes,
        })
    }

    pub fn wants(&self, kind: &str) -> bool {
        self.config.events.iter().any(|e| e == kind)
    }

    /// Posts one event and returns the answer body. The timeout covers waiting for a
    /// concurrency permit too, so a saturated node answers clients in bounded time.
    pub async fn send(&self, event: &CloudEvent) -> Result<Bytes, UpstreamError> {
        let timeout_ms = self.config.timeout;
        let started = Instant::now();
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let result =
            tokio::time::timeout(Duration::from_millis(timeout_ms), self.post(event)).await;
        self.stats
            .latency_micros_total
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let result = match result {
            Ok(inner) => inner,
            Err(_) => {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(UpstreamError::Timeout(timeout_ms))
            }
        };
        if let Err(error) = &result {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(url = %self.config.url, kind = event.kind, namespace = %event.namespace,
                socket = %event.subject, %error, "webhook failed");
        }
        result
    }

    async fn post(&self, event: &CloudEvent) -> Result<Bytes, UpstreamError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| UpstreamError::Unreachable("shutting down".into()))?;
        let body = serde_json::to_vec(&event.body).unwrap_or_default();
        let mut request = self.client.post(&self.config.url);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for (name, value) in event.headers(&body, self.key.as_deref(), now) {
            request = request.header(name, value);
        }
        let mut response = request
            .body(body)
            .send()
            .await
            .map_err(|e| UpstreamError::Unreachable(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(UpstreamError::Status(status.as_u16()));
        }
        // Read at most `max_answer_bytes`: refused from the Content-Length when it says more,
        // else as soon as the chunks read so far pass the limit.
        let max = self.max_answer_bytes;
        if response
            .content_length()
            .is_some_and(|length| length > max as u64)
        {
            return Err(UpstreamError::AnswerTooLarge(max));
        }
        let mut answer = bytes::BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| UpstreamError::Unreachable(e.without_url().to_string()))?
        {
            if answer.len().saturating_add(chunk.len()) > max {
                return Err(UpstreamError::AnswerTooLarge(max));
            }
            answer.extend_from_slice(&chunk);
        }
        Ok(answer.freeze())
    }

    /// `send` with up to `disconnectRetries` more attempts, backing off 100 ms, 200 ms, ...
    pub async fn send_with_retries(&self, event: &CloudEvent) -> Result<Bytes, UpstreamError> {
        let mut attempt = 0;
        loop {
            match self.send(event).await {
                Ok(body) => return Ok(body),
                Err(error) if attempt >= self.config.disconnect_retries => return Err(error),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
                }
            }
        }
    }
}
