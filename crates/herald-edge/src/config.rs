//! The edge's flags (each also an environment variable) and the validated
//! configuration built from them before any port is bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use herald_core::cli::{CommonArgs, parse_region};
use herald_core::config_error::ConfigError;
use herald_core::tls::{ServerTls, TlsArgs};
use herald_domain::auth::Authenticator;
use herald_domain::claims::Rules;
use herald_domain::cursor::MAX_ENTRIES;
use herald_domain::region::Region;
use herald_nats::duration::parse_duration;
use herald_nats::history::HistoryArgs;

use crate::cors::AllowedOrigins;
use crate::ratelimit::ConnectRate;
use crate::resume::budget::ReplayLimits;

/// Shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: the key must be
/// at least as long as the hash output).
pub const MIN_SECRET_LEN: usize = 32;
/// Most clock skew `--jwt-leeway` may grant: RFC 7519 speaks of "a few minutes".
const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// Longest `--write-timeout`: a client that took nothing for an hour is
/// gone, and a stall is timed in milliseconds that wrap after 49 days.
const MAX_WRITE_TIMEOUT: Duration = Duration::from_secs(3600);

/// herald-edge: holds clients' SSE streams and delivers their events from NATS.
#[derive(Debug, clap::Parser)]
#[command(name = "herald-edge", version, about, long_about = None)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub history: HistoryArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// Address for SSE clients (GET /v1/events).
    #[arg(long, env = "HERALD_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "HERALD_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    /// HS256 secret that client tokens are signed with.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM file with the public key (RSA, EC P-256/P-384 or Ed25519) that
    /// verifies RS*/PS*, ES256/ES384 or EdDSA client tokens.
    #[arg(long, env = "HERALD_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<String>,

    /// Audience client tokens must name in `aud` (a string, or an array
    /// holding it); unset accepts any. Set it when the key is an identity
    /// provider's, which signs tokens for other applications too.
    #[arg(long, env = "HERALD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Issuer client tokens must name in `iss`; unset accepts any.
    #[arg(long, env = "HERALD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Clock skew tolerated on a token's `nbf` (at most 5s of it on `exp`,
    /// since a stream ends at `exp`), e.g. `30s`.
    #[arg(long, env = "HERALD_JWT_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,

    /// Origins whose pages may read streams from another origin (CORS),
    /// comma-separated and exact, e.g. `https://app.example.com`; or `*`
    /// for any page, without cookies (tokens in the query only). Unset:
    /// only pages of the edge's own origin.
    #[arg(long, env = "HERALD_ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,

    /// Interval of heartbeat comments on idle streams, e.g. `15s`.
    #[arg(long, env = "HERALD_HEARTBEAT", default_value = "15s", value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// A stream whose client's socket takes no bytes for this long (the
    /// client stopped reading) is closed, e.g. `30s`; a peer that vanished
    /// is given up when sent data has gone unacknowledged 30s longer.
    #[arg(long, env = "HERALD_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Interval of this node's presence heartbeat; presence forgets a node
    /// silent for 2.5 intervals (a crashed edge's users go offline).
    #[arg(long, env = "HERALD_PRESENCE_HEARTBEAT", default_value = "5s", value_parser = parse_duration)]
    pub presence_heartbeat: Duration,

    /// Reconnect delay suggested to clients (SSE `retry:`).
    #[arg(long, env = "HERALD_RETRY", default_value = "2s", value_parser = parse_duration)]
    pub retry: Duration,

    /// Most open streams on this edge; beyond it, 503 with Retry-After.
    #[arg(long, env = "HERALD_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,

    /// Most open streams per user on this edge; beyond it, 429.
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_USER", default_value_t = 16)]
    pub max_connections_per_user: usize,

    /// Most topics one stream may follow.
    #[arg(long, env = "HERALD_MAX_TOPICS", default_value_t = 32)]
    pub max_topics: usize,

    /// Every region of the supercluster, this one (`--region`) included,
    /// comma-separated: streams follow events stored in each of them.
    /// Default: `--region` alone.
    #[arg(long, env = "HERALD_REGIONS", value_delimiter = ',', value_parser = parse_region)]
    pub regions: Vec<Region>,

    /// Publish every stream's connect and disconnect as JSON on NATS
    /// subject `herald.lifecycle.<user token>` (`herald lifecycle` tails them).
    #[arg(long, env = "HERALD_LIFECYCLE_EVENTS")]
    pub lifecycle_events: bool,

    /// Most events one connect replays from its cursor; a subject whose
    /// missed events do not fit gets `herald.reset` (the app refetches).
    #[arg(long, env = "HERALD_MAX_REPLAY_EVENTS", default_value_t = 1000)]
    pub max_replay_events: usize,

    /// Most bytes of events one connect replays; beyond, `herald.reset`.
    #[arg(long, env = "HERALD_MAX_REPLAY_BYTES", default_value_t = 1024 * 1024)]
    pub max_replay_bytes: usize,

    /// Connects per second one user may sustain on this edge (a token
    /// bucket); beyond it and the burst, 429 with Retry-After.
    #[arg(long, env = "HERALD_CONNECT_RATE_PER_USER", default_value_t = 1.0)]
    pub connect_rate_per_user: f64,

    /// Connects one user may make at once on this edge (every tab after a
    /// network switch), refilled at --connect-rate-per-user.
    #[arg(long, env = "HERALD_CONNECT_BURST_PER_USER", default_value_t = 30)]
    pub connect_burst_per_user: u32,

    /// Events queued per stream; a client that falls this far behind is
    /// closed as a slow consumer and resumes later.
    #[arg(long, env = "HERALD_QUEUE_CAPACITY", default_value_t = 512)]
    pub queue_capacity: usize,

    /// On SIGTERM, open streams are closed at random points within this window.
    #[arg(long, env = "HERALD_DRAIN_WINDOW", default_value = "10s", value_parser = parse_duration)]
    pub drain_window: Duration,

    /// Upper bound on the whole drain, after which the edge exits anyway.
    #[arg(long, env = "HERALD_DRAIN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub drain_grace: Duration,

    /// What holds the streams' NATS subscriptions: `lean` (herald-subscriptions);
    /// `async-nats` is for tests and diagnosis only (docs/configuration.md).
    #[arg(long, env = "HERALD_NATS_SUBSCRIBER", default_value = "lean")]
    pub nats_subscriber: crate::fanout::NatsSubscriber,
}

/// Validated edge configuration.
#[derive(Clone)]
pub struct Config {
    pub node_id: String,
    /// This edge's region, first, then the others of the supercluster:
    /// a stream follows each subject on every one's origin subject.
    pub regions: Vec<Region>,
    pub auth: Arc<Authenticator>,
    /// Which other origins' pages may read streams.
    pub origins: AllowedOrigins,
    pub heartbeat: Duration,
    /// How long a stream's socket may take no bytes.
    pub write_timeout: Duration,
    pub presence_heartbeat: Duration,
    pub retry: Duration,
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    pub max_topics: usize,
    /// Publish streams' connects and disconnects (`--lifecycle-events`).
    pub lifecycle_events: bool,
    /// What one connect may replay.
    pub replay: ReplayLimits,
    pub connect_rate: ConnectRate,
    pub queue_capacity: usize,
    pub drain_window: Duration,
    pub drain_grace: Duration,
    pub history: HistoryArgs,
    /// HTTPS (HTTP/2 and HTTP/1.1 by ALPN) instead of plain HTTP.
    pub tls: Option<ServerTls>,
}

impl Args {
    /// Checks the flags; on error names the flag and what is wrong.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        if self.jwt_secret.is_none() && self.jwt_public_key.is_none() {
            return Err(ConfigError::new(
                "--jwt-secret / --jwt-public-key",
                "one is required (HERALD_JWT_SECRET or HERALD_JWT_PUBLIC_KEY) to verify client tokens",
            ));
        }
        if self
            .jwt_secret
            .as_deref()
            .is_some_and(|s| s.len() < MIN_SECRET_LEN)
        {
            return Err(ConfigError::new(
                "--jwt-secret",
                format!(
                    "must be at least {MIN_SECRET_LEN} bytes (RFC 7518: an HS256 key is at least 256 bits); make one with `openssl rand -base64 32`"
                ),
            ));
        }
        let rules = self.jwt_rules()?;
        let pem = match &self.jwt_public_key {
            Some(path) => Some((
                path.as_str(),
                Authenticator::read_pem(path).map_err(ConfigError::of("--jwt-public-key"))?,
            )),
            None => None,
        };
        let auth = Authenticator::new(
            self.jwt_secret.as_deref().map(str::as_bytes),
            pem.as_ref().map(|(p, k)| (*p, k.as_slice())),
            rules,
        )
        .map_err(ConfigError::of("--jwt-public-key"))?;
        for (flag, value) in [
            ("--max-connections", self.max_connections),
            ("--max-connections-per-user", self.max_connections_per_user),
            ("--queue-capacity", self.queue_capacity),
            ("--max-replay-events", self.max_replay_events),
            ("--max-replay-bytes", self.max_replay_bytes),
            (
                "--connect-burst-per-user",
                self.connect_burst_per_user as usize,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::new(flag, "must be at least 1"));
            }
        }
        let rate = self.connect_rate_per_user;
        if !(rate.is_finite() && rate > 0.0) {
            return Err(ConfigError::new(
                "--connect-rate-per-user",
                format!("must be a number of connects per second above 0, not {rate}"),
            ));
        }
        if self.presence_heartbeat < Duration::from_millis(10) {
            return Err(ConfigError::new(
                "--presence-heartbeat",
                "must be at least 10ms",
            ));
        }
        if self.write_timeout > MAX_WRITE_TIMEOUT {
            return Err(ConfigError::new("--write-timeout", "must be at most 1h"));
        }
        if self.drain_grace < self.drain_window {
            return Err(ConfigError::new(
                "--drain-grace",
                "must be at least --drain-window",
            ));
        }
        let regions = self.regions()?;
        let origins = AllowedOrigins::parse(self.allowed_origins.as_deref().unwrap_or_default())
            .map_err(ConfigError::of("--allowed-origins"))?;
        let tls = self.tls.server_config(&[b"h2", b"http/1.1"])?;
        Ok(Config {
            node_id: self.common.node_id(),
            regions,
            auth: Arc::new(auth),
            origins,
            heartbeat: self.heartbeat,
            write_timeout: self.write_timeout,
            presence_heartbeat: self.presence_heartbeat,
            retry: self.retry,
            max_connections: self.max_connections,
            max_connections_per_user: self.max_connections_per_user,
            max_topics: self.max_topics,
            lifecycle_events: self.lifecycle_events,
            replay: ReplayLimits {
                events: self.max_replay_events,
                bytes: self.max_replay_bytes,
            },
            connect_rate: ConnectRate {
                per_second: rate,
                burst: self.connect_burst_per_user,
            },
            queue_capacity: self.queue_capacity,
            drain_window: self.drain_window,
            drain_grace: self.drain_grace,
            history: self.history.clone(),
            tls,
        })
    }
}

impl Args {
    /// `--region` first, then the rest of `--regions`, each once; and
    /// room in an event id for a position per subject and region.
    fn regions(&self) -> Result<Vec<Region>, ConfigError> {
        let own = &self.common.region;
        if own.is_unnamed() {
            if !self.regions.is_empty() {
                return Err(ConfigError::new(
                    "--regions",
                    "needs --region: the name of this edge's region among them",
                ));
            }
            return Ok(vec![own.clone()]);
        }
        if !self.regions.is_empty() && !self.regions.contains(own) {
            return Err(ConfigError::new(
                "--regions",
                format!("must include this edge's own region `{own}` (--region)"),
            ));
        }
        let mut regions = vec![own.clone()];
        for region in &self.regions {
            if region.is_unnamed() {
                return Err(ConfigError::new("--regions", "a region name is empty"));
            }
            if !regions.contains(region) {
                regions.push(region.clone());
            }
        }
        let entries = (self.max_topics + 1) * regions.len();
        if entries > MAX_ENTRIES {
            return Err(ConfigError::new(
                "--max-topics",
                format!(
                    "{} topics and the user on {} regions make {entries} positions in an event id; \
                     the most is {MAX_ENTRIES}: lower --max-topics",
                    self.max_topics,
                    regions.len()
                ),
            ));
        }
        Ok(regions)
    }

    /// What tokens must say besides being signed.
    fn jwt_rules(&self) -> Result<Rules, ConfigError> {
        for (flag, value) in [
            ("--jwt-audience", &self.jwt_audience),
            ("--jwt-issuer", &self.jwt_issuer),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(ConfigError::new(
                    flag,
                    "must not be empty; leave it unset to accept any",
                ));
            }
        }
        if self.jwt_leeway > MAX_LEEWAY {
            return Err(ConfigError::new("--jwt-leeway", "must be at most 5m"));
        }
        Ok(Rules {
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
            leeway: self.jwt_leeway.as_secs(),
        })
    }
}

impl Config {
    /// Defaults as the flags give them, with an HS256 secret; for tests and embedding.
    pub fn with_secret(node_id: &str, secret: &str) -> Self {
        let args = <Args as clap::Parser>::parse_from([
            "herald-edge",
            "--jwt-secret",
            secret,
            "--node-id",
            node_id,
        ]);
        args.validate().unwrap_or_else(|e| panic!("{e}"))
    }
}
