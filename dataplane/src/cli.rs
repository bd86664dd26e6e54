//! Command-line flags shared by the hub binary and the examples.

pub mod certs;

use std::net::SocketAddr;

use clap::Args;

use crate::config::{Config, TransportKind};

/// Flags that override the configuration. Every flag also reads an environment variable.
#[derive(Debug, Clone, Default, Args)]
pub struct HubArgs {
    /// Configuration file (YAML, TOML or JSON); flags and environment variables override it.
    #[arg(long, env = "ROOMCAST_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Address to listen on for Socket.IO clients, e.g. 0.0.0.0:3000 (port 0 picks a free one).
    #[arg(long, env = "ROOMCAST_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Stable member id of this node (the pod name in Kubernetes).
    #[arg(long, env = "ROOMCAST_NODE_ID")]
    pub node_id: Option<String>,
    /// HTTP path of the Socket.IO endpoint.
    #[arg(long, env = "ROOMCAST_PATH")]
    pub path: Option<String>,
    /// Milliseconds between server pings.
    #[arg(long, env = "ROOMCAST_PING_INTERVAL")]
    pub ping_interval: Option<u64>,
    /// Milliseconds a client has to answer a ping.
    #[arg(long, env = "ROOMCAST_PING_TIMEOUT")]
    pub ping_timeout: Option<u64>,
    /// Largest accepted message or HTTP body, in bytes.
    #[arg(long, env = "ROOMCAST_MAX_PAYLOAD")]
    pub max_payload: Option<usize>,
    /// Open Engine.IO sessions allowed on this node.
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Milliseconds a new session may stay without joining a namespace.
    #[arg(long, env = "ROOMCAST_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<u64>,
    /// Transports to accept, comma separated: polling,websocket.
    #[arg(long, env = "ROOMCAST_TRANSPORTS", value_delimiter = ',')]
    pub transports: Option<Vec<String>>,
    /// Namespaces clients may join, comma separated; `*` matches any run of characters.
    #[arg(long, env = "ROOMCAST_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Option<Vec<String>>,
    /// Namespaces one session may join at once.
    #[arg(long, env = "ROOMCAST_MAX_NAMESPACES")]
    pub max_namespaces: Option<usize>,
    /// Frames queued per connection before volatile packets drop and the client is cut.
    #[arg(long, env = "ROOMCAST_MAX_OUTBOUND_FRAMES")]
    pub max_outbound_frames: Option<usize>,
    /// Allowed CORS origins, comma separated (`*` for any).
    #[arg(long, env = "ROOMCAST_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origin: Option<Vec<String>>,
    /// Address of the peer (gRPC) endpoint other cluster members connect to, e.g. 127.0.0.11:7000.
    #[arg(long, env = "ROOMCAST_PEER_LISTEN")]
    pub peer_listen: Option<SocketAddr>,
    /// Every cluster member, this node included: ID=IP:PORT,ID=IP:PORT,... (peer addresses).
    #[arg(long, env = "ROOMCAST_MEMBERS")]
    pub members: Option<String>,
    /// Client (Socket.IO) address peers forward other nodes' requests to, e.g.
    /// 10.0.0.5:3000 (default: the bound --listen address, 0.0.0.0 replaced by this node's IP).
    #[arg(long, env = "ROOMCAST_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<SocketAddr>,
    /// File of cluster members (ID=IP:PORT per line or comma separated, # comments), re-read
    /// every discovery interval.
    #[arg(long, env = "ROOMCAST_MEMBERS_FILE")]
    pub members_file: Option<std::path::PathBuf>,
    /// DNS SRV name listing the cluster members (a headless Service), e.g.
    /// _peer._tcp.hub-peers.default.svc.cluster.local.
    #[arg(long, env = "ROOMCAST_PEER_DNS")]
    pub peer_dns: Option<String>,
    /// IP:PORT of the DNS server for --peer-dns (default: those of /etc/resolv.conf).
    #[arg(long, env = "ROOMCAST_PEER_DNS_SERVER")]
    pub peer_dns_server: Option<SocketAddr>,
    /// Milliseconds between two lookups of the members file or DNS.
    #[arg(long, env = "ROOMCAST_DISCOVERY_INTERVAL")]
    pub discovery_interval: Option<u64>,
    /// Folder of this member's peer TLS files, as `certs member` writes them: ca.crt,
    /// tls.crt and tls.key (sets cluster.tls).
    #[arg(long, env = "ROOMCAST_PEER_TLS_DIR", conflicts_with = "peer_plaintext")]
    pub peer_tls_dir: Option<std::path::PathBuf>,
    /// Run the peer port without TLS (cluster.plaintext): only where nothing else can reach it.
    #[arg(long, env = "ROOMCAST_PEER_PLAINTEXT")]
    pub peer_plaintext: bool,
    /// Log format: text or json.
    #[arg(long, env = "ROOMCAST_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

impl HubArgs {
    /// The configuration to run with: `base` (the caller's embedded default), then the
    /// `--config` file if given, then flags and environment variables; validated.
    pub fn resolve(&self, base: Config) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => base,
        };
        self.apply(&mut config)?;
        config.validate()?;
        Ok(config)
    }
}

/// A flag value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid --{flag}: {reason}")]
pub struct FlagError {
    pub flag: &'static str,
    pub reason: String,
}

impl HubArgs {
    /// Applies the flags given on top of `config`.
    pub fn apply(&self, config: &mut Config) -> Result<(), FlagError> {
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = &self.node_id {
            config.node_id = v.clone();
        }
        if let Some(v) = &self.path {
            if !v.starts_with('/') {
                return Err(FlagError {
                    flag: "path",
                    reason: "must start with /".into(),
                });
            }
            config.engine.path = if v.ends_with('/') {
                v.clone()
            } else {
                format!("{v}/")
            };
        }
        if let Some(v) = self.ping_interval {
            config.engine.ping_interval = v;
        }
        if let Some(v) = self.ping_timeout {
            config.engine.ping_timeout = v;
        }
        if let Some(v) = self.max_payload {
            config.engine.max_http_buffer_size = v;
        }
        if let Some(v) = self.max_connections {
            config.limits.max_connections = v;
        }
        if let Some(v) = self.connect_timeout {
            config.socketio.connect_timeout = v;
        }
        if let Some(list) = &self.transports {
            let mut transports = Vec::new();
            for t in list {
                transports.push(match t.trim() {
                    "polling" => TransportKind::Polling,
                    "websocket" => TransportKind::Websocket,
                    other => {
                        return Err(FlagError {
                            flag: "transports",
                            reason: format!(
                                "unknown transport {other:?} (expected polling or websocket)"
                            ),
                        })
                    }
                });
            }
            if transports.is_empty() {
                return Err(FlagError {
                    flag: "transports",
                    reason: "at least one transport is needed".into(),
                });
            }
            config.engine.transports = transports;
        }
        if let Some(v) = &self.namespaces {
            config.socketio.namespaces = v.iter().map(|n| n.as_str().into()).collect();
        }
        if let Some(v) = self.max_namespaces {
            config.limits.max_namespaces_per_session = v;
        }
        if let Some(v) = self.max_outbound_frames {
            config.limits.max_outbound_frames = v;
        }
        if let Some(v) = &self.cors_origin {
            config.engine.cors.origin = v.clone();
        }
        if let Some(v) = self.peer_listen {
            config.cluster.peer_listen = Some(v);
        }
        if let Some(v) = self.advertise_address {
            config.cluster.advertise_address = Some(v);
        }
        self.apply_members(config)?;
        if let Some(v) = self.discovery_interval {
            config.cluster.discovery_interval = Some(v);
        }
        if let Some(dir) = &self.peer_tls_dir {
            let tls = config
                .cluster
                .tls
                .get_or_insert_with(|| crate::config::PeerTlsConfig::files(dir));
            tls.ca_file = dir.join("ca.crt");
            tls.cert_file = dir.join("tls.crt");
            tls.key_file = dir.join("tls.key");
            config.cluster.plaintext = false;
        }
        if self.peer_plaintext {
            config.cluster.plaintext = true;
            config.cluster.tls = None;
        }
        Ok(())
    }

    /// A member source given by flags replaces the configuration file's.
    fn apply_members(&self, config: &mut Config) -> Result<(), FlagError> {
        let given = [
            self.members.is_some(),
            self.members_file.is_some(),
            self.peer_dns.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(FlagError {
                flag: "members",
                reason: "give only one of --members, --members-file and --peer-dns".into(),
            });
        }
        if let (Some(server), None) = (self.peer_dns_server, &self.peer_dns) {
            match &mut config.cluster.dns {
                Some(dns) => dns.nameserver = Some(server),
                None => {
                    return Err(FlagError {
                        flag: "peer-dns-server",
                        reason: "needs --peer-dns (or cluster.dns in the configuration)".into(),
                    })
                }
            }
        }
        if !given.contains(&true) {
            return Ok(());
        }
        let c = &mut config.cluster;
        c.members.clear();
        c.members_file = None;
        c.dns = None;
        c.kubernetes = None;
        if let Some(v) = &self.members {
            let members = crate::cluster::Members::parse(v).map_err(|e| FlagError {
                flag: "members",
                reason: e.to_string(),
            })?;
            c.members = members
                .iter()
                .map(|(id, addr)| format!("{id}={addr}"))
                .collect();
        }
        c.members_file.clone_from(&self.members_file);
        if let Some(name) = &self.peer_dns {
            c.dns = Some(crate::config::DnsConfig {
                name: name.clone(),
                nameserver: self.peer_dns_server,
            });
        }
        Ok(())
    }

    /// Installs the tracing subscriber (logs to stderr; `RUST_LOG` sets the level).
    pub fn init_logging(&self) {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        if self.log_format == "json" {
            builder.json().init();
        } else {
            builder.init();
        }
    }
}

/// Binds the listener, prints the ready line on stdout and runs until SIGTERM/Ctrl-C.
pub async fn serve(
    server: crate::server::Server,
    listen: SocketAddr,
    path: &str,
) -> anyhow::Result<()> {
    let listener =
        crate::cluster::listen::bind_client(listen, server.engine().settings.defer_accept)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    // Tests and scripts wait for this exact line.
    println!("listening on http://{addr} (path {path})");
    tracing::info!(%addr, path, "listening");
    server
        .run(listener, crate::server::shutdown_signal())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_flags_set_the_cluster_section() {
        let args = HubArgs {
            node_id: Some("hub-0".into()),
            peer_listen: Some("127.0.0.11:7000".parse().unwrap()),
            members: Some("hub-1=127.0.0.12:7000, hub-0=127.0.0.11:7000".into()),
            advertise_address: Some("127.0.0.11:3000".parse().unwrap()),
            peer_tls_dir: Some("/etc/peer".into()),
            ..HubArgs::default()
        };
        let config = args.resolve(Config::default()).unwrap();
        let tls = config.cluster.tls.clone().unwrap();
        assert_eq!(
            (tls.ca_file, tls.cert_file, tls.key_file),
            (
                "/etc/peer/ca.crt".into(),
                "/etc/peer/tls.crt".into(),
                "/etc/peer/tls.key".into()
            )
        );
        let plain = HubArgs {
            peer_plaintext: true,
            ..args.clone()
        };
        let plain = plain.resolve(Config::default()).unwrap().cluster;
        assert!(plain.plaintext && plain.tls.is_none());
        assert_eq!(
            config.cluster.members,
            ["hub-0=127.0.0.11:7000", "hub-1=127.0.0.12:7000"]
        );
        assert_eq!(config.cluster.peer_listen, args.peer_listen);
        assert_eq!(config.cluster.advertise_address, args.advertise_address);

        let bad = HubArgs {
            members: Some("hub-0".into()),
            ..HubArgs::default()
        };
        let err = bad.resolve(Config::default()).unwrap_err().to_string();
        assert!(err.contains("--members"), "{err}");
    }

    #[test]
    fn a_member_source_flag_replaces_the_configured_one() {
        let mut config = Config {
            node_id: "hub-0".into(),
            ..Config::default()
        };
        config.cluster.peer_listen = Some("127.0.0.11:7000".parse().unwrap());
        config.cluster.members = vec!["hub-0=127.0.0.11:7000".into()];
        config.cluster.plaintext = true;
        let file = HubArgs {
            members_file: Some("/tmp/members".into()),
            discovery_interval: Some(500),
            ..HubArgs::default()
        };
        let resolved = file.resolve(config.clone()).unwrap();
        assert!(resolved.cluster.members.is_empty());
        assert_eq!(resolved.cluster.members_file, file.members_file);
        assert_eq!(resolved.cluster.discovery_interval, Some(500));

        let dns = HubArgs {
            peer_dns: Some("_peer._tcp.hub".into()),
            peer_dns_server: Some("127.0.0.1:5353".parse().unwrap()),
            ..HubArgs::default()
        };
        let resolved = dns.resolve(config.clone()).unwrap();
        let d = resolved.cluster.dns.unwrap();
        assert_eq!(
            (d.name.as_str(), d.nameserver),
            ("_peer._tcp.hub", dns.peer_dns_server)
        );

        let both = HubArgs {
            members_file: Some("/tmp/members".into()),
            peer_dns: Some("_peer._tcp.hub".into()),
            ..HubArgs::default()
        };
        let err = both.resolve(config.clone()).unwrap_err().to_string();
        assert!(
            err.contains("--members-file") && err.contains("--peer-dns"),
            "{err}"
        );
        let server_alone = HubArgs {
            peer_dns_server: Some("127.0.0.1:5353".parse().unwrap()),
            ..HubArgs::default()
        };
        let err = server_alone.resolve(config).unwrap_err().to_string();
        assert!(err.contains("--peer-dns-server"), "{err}");
    }
}
