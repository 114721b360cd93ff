//! herald-presence's flags (each also an environment variable).

use std::net::SocketAddr;

use herald_core::api_token::ApiAuthArgs;
use herald_core::cli::CommonArgs;
use herald_core::config_error::ConfigError;
use herald_core::tls::{ServerTls, TlsArgs};

/// herald-presence: knows which users are connected, on which edges.
#[derive(Debug, clap::Parser)]
#[command(name = "herald-presence", version, about, long_about = None)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// Address of the gRPC API (Presence, health, reflection).
    #[arg(long, env = "HERALD_LISTEN", default_value = "0.0.0.0:50052")]
    pub listen: SocketAddr,

    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "HERALD_ADMIN_LISTEN", default_value = "0.0.0.0:9092")]
    pub admin_listen: SocketAddr,

    #[command(flatten)]
    pub api_auth: ApiAuthArgs,

    /// Most users one GetPresence may ask about.
    #[arg(long, env = "HERALD_MAX_USERS_PER_QUERY", default_value_t = 1000)]
    pub max_users: usize,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: String,
    /// What gRPC callers must send; `None` = open (see `ApiAuthArgs::validate`).
    pub api_token: Option<String>,
    pub max_users: usize,
    /// gRPC over TLS (and mutual TLS with `--tls-client-ca`).
    pub tls: Option<ServerTls>,
}

impl Args {
    /// Checks the flags; on error names the flag and what is wrong.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let api_token = self.api_auth.validate(self.listen)?;
        if self.max_users == 0 {
            return Err(ConfigError::new(
                "--max-users-per-query",
                "must be at least 1",
            ));
        }
        Ok(Config {
            node_id: self.common.node_id(),
            api_token,
            max_users: self.max_users,
            tls: self.tls.server_config(&[b"h2"])?,
        })
    }
}

impl Config {
    /// Defaults as the flags give them, on loopback (so no API token is
    /// needed); for tests and embedding.
    pub fn defaults(node_id: &str) -> Self {
        let args = <Args as clap::Parser>::parse_from([
            "herald-presence",
            "--node-id",
            node_id,
            "--listen",
            "127.0.0.1:0",
        ]);
        args.validate().unwrap_or_else(|e| panic!("{e}"))
    }
}
