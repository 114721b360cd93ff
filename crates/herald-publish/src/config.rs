//! herald-publish's flags (each also an environment variable), validated
//! before any port is bound.

use std::net::SocketAddr;

use herald_core::api_token::ApiAuthArgs;
use herald_core::cli::CommonArgs;
use herald_core::config_error::ConfigError;
use herald_core::tls::{ServerTls, TlsArgs};
use herald_domain::region::Region;
use herald_nats::buckets::BucketArgs;
use herald_nats::history::HistoryArgs;

/// herald-publish: the gRPC Publish API internal services call to push events.
#[derive(Debug, clap::Parser)]
#[command(name = "herald-publish", version, about, long_about = None)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub history: HistoryArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub buckets: BucketArgs,

    /// Address of the gRPC API (Publisher, Control, health, reflection).
    #[arg(long, env = "HERALD_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "HERALD_ADMIN_LISTEN", default_value = "0.0.0.0:9091")]
    pub admin_listen: SocketAddr,

    #[command(flatten)]
    pub api_auth: ApiAuthArgs,

    /// Largest event `data`, in bytes.
    #[arg(long, env = "HERALD_MAX_PAYLOAD", default_value_t = 64 * 1024)]
    pub max_payload: usize,

    /// Most users one Publish may target.
    #[arg(long, env = "HERALD_MAX_USERS_PER_PUBLISH", default_value_t = 1000)]
    pub max_users: usize,

    /// Most requests in one PublishBatch (or HTTP `POST /v1/publish:batch`).
    #[arg(long, env = "HERALD_MAX_BATCH", default_value_t = 1000)]
    pub max_batch: usize,

    /// Most bytes of one PublishBatch's requests, protobuf-encoded; also
    /// the largest HTTP request body (JSON), in bytes.
    #[arg(long, env = "HERALD_MAX_BATCH_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_batch_bytes: usize,

    /// Most topics a user may follow server-side (`Control.Follow`); the
    /// edges' `--max-topics` bounds what one stream asks for.
    #[arg(long, env = "HERALD_MAX_TOPICS", default_value_t = 32)]
    pub max_topics: usize,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: String,
    /// Where events published here are stored and sent from (see
    /// `herald_domain::region`).
    pub region: Region,
    /// What callers must send; `None` = open (see `ApiAuthArgs::validate`).
    pub api_token: Option<String>,
    pub max_payload: usize,
    pub max_users: usize,
    /// Most requests in one batch.
    pub max_batch: usize,
    /// Most encoded bytes of one batch's requests; the HTTP body limit.
    pub max_batch_bytes: usize,
    pub history: HistoryArgs,
    pub buckets: BucketArgs,
    pub max_topics: usize,
    /// gRPC over TLS (and mutual TLS with `--tls-client-ca`).
    pub tls: Option<ServerTls>,
}

impl Args {
    /// Checks the flags; on error names the flag and what is wrong.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let api_token = self.api_auth.validate(self.listen)?;
        if self.max_payload == 0 {
            return Err(ConfigError::new("--max-payload", "must be at least 1"));
        }
        if self.max_users == 0 {
            return Err(ConfigError::new(
                "--max-users-per-publish",
                "must be at least 1",
            ));
        }
        if self.max_batch == 0 {
            return Err(ConfigError::new("--max-batch", "must be at least 1"));
        }
        if self.max_topics == 0 {
            return Err(ConfigError::new("--max-topics", "must be at least 1"));
        }
        if self.buckets.revocation_ttl < std::time::Duration::from_secs(60) {
            return Err(ConfigError::new("--revocation-ttl", "must be at least 1m"));
        }
        if self.max_batch_bytes < self.max_payload {
            return Err(ConfigError::new(
                "--max-batch-bytes",
                format!("must be at least --max-payload ({})", self.max_payload),
            ));
        }
        Ok(Config {
            node_id: self.common.node_id(),
            region: self.common.region.clone(),
            api_token,
            max_payload: self.max_payload,
            max_users: self.max_users,
            max_batch: self.max_batch,
            max_batch_bytes: self.max_batch_bytes,
            history: self.history.clone(),
            buckets: self.buckets.clone(),
            max_topics: self.max_topics,
            // HTTP/1.1 for the JSON API beside gRPC's HTTP/2.
            tls: self.tls.server_config(&[b"h2", b"http/1.1"])?,
        })
    }
}

impl Config {
    /// Defaults as the flags give them, on loopback (so no API token is
    /// needed); for tests and embedding.
    pub fn defaults(node_id: &str) -> Self {
        let args = <Args as clap::Parser>::parse_from([
            "herald-publish",
            "--node-id",
            node_id,
            "--listen",
            "127.0.0.1:0",
        ]);
        args.validate().unwrap_or_else(|e| panic!("{e}"))
    }
}
