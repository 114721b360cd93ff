//! `herald-bench`: load against a running Herald on loopback. Every loop is
//! bounded in count and time.
//!
//! - `fanout`: opens many SSE streams on one edge (or nginx with Nchan) (over several 127.0.0.x
//!   source addresses), measures the edge's memory per stream, then
//!   publishes to a topic they all follow and measures deliveries per second.
//! - `publish`: one stream; the same events published ephemeral and then
//!   persisted, reporting publish throughput and publish→deliver latency of
//!   each and their ratio, measured in the same run.
//! - `unicast`: one stream per user, events to random users at rising
//!   rates: achieved rate, latency percentiles, lost and duplicated events
//!   (`--peer nats`: the same traffic on NATS alone, the broker ceiling;
//!   `--via grpc|batch|http`: Herald's Publish, PublishBatch or HTTP publish;
//!   `--cpu-pid name=pid`: CPU per event of a server process).
//! - `storm`: every client drops at once, events are published meanwhile,
//!   and all reconnect together with their last ids: time until all stream
//!   again and have caught up, errors, lost and duplicated events.
//! - `churn`: streams replaced by new users at a steady pace while events
//!   flow, then all closed: the server's resident memory over time and after.
//! - `disconnect`: one stream per user over one or two edges, then
//!   `Control.Disconnect` for all of them in batches: the delay from each
//!   call's answer to its streams' ends (p50, p99, max).
//! - `receipts`: a Publish with its receipt against the presence round trip
//!   it avoids, in the same run.
//! - `scale`: very many streams over several edges, held by `scale-agent`
//!   processes it spawns; open, idle, a topic fan-out burst and a unicast
//!   ramp (bench/scale.sh runs it).
//! - `regions`: two regions of a supercluster (bench/regions.sh): delivery
//!   within and across regions, persisted publish in each, connect time,
//!   gateway messages per event and without interest.
//! - `secure-idle`: idle streams over TLS (HTTP/1.1 or HTTP/2), which
//!   Herald's edge serves with hyper: memory and CPU per stream.
//! - `delay`: a TCP relay holding bytes for a while each way, the WAN
//!   between regions where the kernel has no netem.
//! - `pushpin-origin`: the GRIP origin behind Pushpin (bench/pushpin.conf),
//!   holding each stream request on its channel.
//!
//! `--peer` picks the system: Herald, Nchan, Pushpin, or NATS alone.

mod churn;
mod delay;
mod disconnect;
mod fanout;
mod peer;
mod publish;
mod pushpin_origin;
mod receipts;
mod regions;
mod scale;
mod scale_agent;
mod scale_agents;
mod scale_args;
mod scale_publish;
mod scale_stream;
mod secure_idle;
mod storm;
mod stream;
mod unicast;
mod via;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use herald_domain::claims::Claims;

#[derive(Debug, Parser)]
#[command(name = "herald-bench", about)]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    scenario: Scenario,
}

/// The system under test, and where it runs.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Herald, or a peer it is compared with (Nchan, Pushpin, NATS alone).
    #[arg(long, value_enum, default_value = "herald")]
    pub peer: peer::Kind,
    /// SSE address: Herald's edge, nginx with Nchan, or Pushpin.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub edge: SocketAddr,
    /// Publish URL: herald-publish's gRPC, nginx's base URL for Nchan,
    /// Pushpin's control port, or a NATS URL.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub publish: String,
    /// The edge's HS256 secret (Herald only).
    #[arg(
        long,
        env = "HERALD_JWT_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    pub secret: String,
    /// herald-publish's API token (Herald only; unset on a loopback stack
    /// started without one).
    #[arg(long, env = "HERALD_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Give up waiting for deliveries after this many seconds.
    #[arg(long, default_value = "120", value_parser = |s: &str| s.parse().map(Duration::from_secs))]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    Fanout(fanout::Args),
    Publish(publish::Args),
    Receipts(receipts::Args),
    Unicast(unicast::Args),
    Storm(storm::Args),
    Churn(churn::Args),
    Disconnect(disconnect::Args),
    Scale(scale_args::Args),
    Regions(regions::Args),
    /// Idle streams over TLS, HTTP/1.1 or HTTP/2 (served by hyper).
    SecureIdle(secure_idle::Args),
    /// A WAN link's delay between two regions (bench/regions.sh).
    Delay(delay::Args),
    /// The GRIP origin behind Pushpin (bench/run.sh starts it).
    PushpinOrigin(pushpin_origin::Args),
    /// One load-generator process of `scale` (spawned by it).
    #[command(hide = true)]
    ScaleAgent(scale_agent::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Fanout(args) => fanout::run(&cli.target, &args).await,
        Scenario::Publish(args) => publish::run(&cli.target, &args).await,
        Scenario::Receipts(args) => receipts::run(&cli.target, &args).await,
        Scenario::Unicast(args) => unicast::run(&cli.target, &args).await,
        Scenario::Storm(args) => storm::run(&cli.target, &args).await,
        Scenario::Churn(args) => churn::run(&cli.target, &args).await,
        Scenario::Disconnect(args) => disconnect::run(&cli.target, &args).await,
        Scenario::Scale(args) => scale::run(&cli.target, &args).await,
        Scenario::Regions(args) => regions::run(&cli.target, &args).await,
        Scenario::SecureIdle(args) => secure_idle::run(&cli.target, &args).await,
        Scenario::Delay(args) => delay::run(&args).await,
        Scenario::PushpinOrigin(args) => pushpin_origin::run(&args).await,
        Scenario::ScaleAgent(args) => scale_agent::run(&cli.target, &args).await,
    }
}

/// An HS256 token for `sub` following `topics`.
pub fn token(secret: &str, sub: &str, topics: &[&str]) -> anyhow::Result<String> {
    let claims = Claims::new(sub).topics(topics);
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &key,
    )?)
}

/// Microseconds since the epoch: the send stamp events carry.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Whether a ramp step held: at least 95% of the target rate reached,
/// p99 within the limit, nothing lost (bench/run.sh's `best` uses the same
/// rule). The ramp stops at the first step that does not.
pub fn step_held(
    target_rate: u64,
    achieved_rate: f64,
    p99_ms: f64,
    p99_limit_ms: u64,
    lost: u64,
) -> bool {
    achieved_rate >= 0.95 * target_rate as f64 && p99_ms <= p99_limit_ms as f64 && lost == 0
}
