//! The scale run's flags: a leaf that the run, its agents and its
//! publishers all read, so none of them imports another for them.

use std::net::{IpAddr, SocketAddr};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// SSE addresses of the edges; agent `g` opens its streams on edge `g`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub edges: Vec<SocketAddr>,
    /// Edge process ids (memory and CPU), in any order.
    #[arg(long = "edge-pid", required = true)]
    pub edge_pids: Vec<u32>,
    /// Other processes whose CPU each phase reports (`name=pid`, e.g.
    /// `nats=123`; repeatable, summed per name).
    #[arg(long = "cpu-pid")]
    pub cpu_pids: Vec<String>,
    /// Streams to open, one user each.
    #[arg(long, default_value_t = 100_000)]
    pub streams: usize,
    /// Streams opened per second, all agents together (0: each agent as
    /// fast as 256 connects at once go).
    #[arg(long, default_value_t = 0.0)]
    pub open_rate: f64,
    /// Tries per stream, the first included: a stream refused for now
    /// (503 or 429 with `retry-after`) comes back after the wait, as an
    /// EventSource does. 1: no retry.
    #[arg(long, default_value_t = 1)]
    pub open_attempts: u32,
    /// Topics that the odd streams follow besides their user.
    #[arg(long, default_value_t = 4)]
    pub topics: usize,
    /// Source addresses for the agents, each given `--sources-per-agent`
    /// in turn from this list.
    #[arg(long, value_delimiter = ',', required = true)]
    pub sources: Vec<IpAddr>,
    #[arg(long, default_value_t = 2)]
    pub sources_per_agent: usize,
    /// The edges' heartbeat interval.
    #[arg(long, default_value_t = 5)]
    pub heartbeat_secs: u64,
    /// Heartbeat intervals the streams are held idle through (1 or 2):
    /// every stream must get this many heartbeats.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=2))]
    pub idle_heartbeats: u64,
    /// Events to each topic in the fan-out burst.
    #[arg(long, default_value_t = 25)]
    pub fanout_events: u64,
    /// Unicast rates to try, events per second, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2000,3000,4000,5000,7500,10000"
    )]
    pub rates: Vec<u64>,
    /// Seconds at each unicast rate.
    #[arg(long, default_value_t = 5)]
    pub secs: u64,
    /// Concurrent publish calls: enough that a persisted publish's round
    /// trip (~10-20 ms with 3 replicas) does not cap the rate first.
    #[arg(long, default_value_t = 256)]
    pub publishers: u64,
    /// A unicast step whose p99 passes this ends the ramp.
    #[arg(long, default_value_t = 100)]
    pub p99_limit_ms: u64,
}
