//! `metrics`: the operations listener (Prometheus `/metrics`, `/healthz`, `/readyz`), on a
//! port of its own so that clients never read the hub's metrics and a NetworkPolicy can
//! open it to scrapers only.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::Problems;

/// The metrics listener. Off unless `listen` is set: there is no fixed default port, because
/// the tests (and a developer's `make run` beside them) start many hubs at once on loopback and
/// a fixed port would collide; in Kubernetes the operator sets `0.0.0.0:9090`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the metrics listener, e.g. `0.0.0.0:9090` (port 0 picks a free one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// How long a connection may take to send a request's headers (counted from the
    /// connection's start or the end of the previous answer); past it it is closed.
    pub header_read_timeout: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            header_read_timeout: 10_000,
        }
    }
}

impl MetricsConfig {
    pub(crate) fn validate(&self, client: SocketAddr, bad: &mut Problems) {
        if let Some(addr) = self.listen {
            if addr.port() != 0 && addr == client {
                bad.add(
                    "metrics.listen",
                    "must differ from listen (metrics are not served on the client port)",
                );
            }
        }
        bad.millis("metrics.headerReadTimeout", self.header_read_timeout);
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, ConfigError};

    #[test]
    fn off_by_default_and_checked() {
        let config = Config::default();
        assert_eq!(config.metrics.listen, None, "no fixed port by default");
        let json = serde_json::to_string(&config).unwrap();
        assert!(!json.contains("\"listen\":null"), "{json}");

        let yaml = "metrics:\n  listen: 0.0.0.0:9090\n";
        let config = Config::parse(yaml, "yaml").unwrap();
        config.validate().unwrap();
        assert_eq!(config.metrics.listen, Some("0.0.0.0:9090".parse().unwrap()));
        assert_eq!(config.metrics.header_read_timeout, 10_000);

        let mut bad = Config::default();
        bad.metrics.listen = Some(bad.listen);
        bad.metrics.header_read_timeout = 0;
        let ConfigError::Invalid(errors) = bad.validate().unwrap_err() else {
            panic!("expected field errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["metrics.listen", "metrics.headerReadTimeout"]);
        // Port 0 on both sides picks two free ports: allowed.
        let mut any = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        any.metrics.listen = Some(any.listen);
        any.validate().unwrap();
        assert!(Config::parse("metrics:\n  port: 9090\n", "yaml").is_err());
    }
}
