//! Command-line helpers every Herald binary shares: common flags and the
//! one-line, exit-code-2 treatment of misconfiguration.

use std::fmt::Display;

use clap::Parser;

/// Exit code for every misconfiguration. It is part of the documented
/// interface (docs/configuration.md): scripts and supervisors tell a bad
/// flag from a crash by it.
pub const EXIT_MISCONFIGURED: i32 = 2;

/// Flags shared by all services.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Comma-separated NATS server URLs.
    #[arg(
        long,
        env = "HERALD_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        value_delimiter = ','
    )]
    pub nats_url: Vec<String>,

    #[command(flatten)]
    pub nats_security: herald_nats::connection::NatsSecurity,

    #[command(flatten)]
    pub listener: crate::listener::ListenerArgs,

    /// This service's region in a supercluster: the name of the NATS
    /// cluster it connects to (checked at start); empty for one region.
    #[arg(long, env = "HERALD_REGION", default_value = "", value_parser = parse_region)]
    pub region: herald_domain::region::Region,

    /// This instance's name, reported in logs and metrics; defaults to the hostname.
    #[arg(long, env = "HERALD_NODE_ID")]
    pub node_id: Option<String>,

    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "HERALD_LOG_FORMAT", default_value = "text")]
    pub log_format: crate::telemetry::LogFormat,

    /// Log filter in `tracing` syntax, e.g. `info,herald_edge=debug`.
    #[arg(long, env = "HERALD_LOG", default_value = "info")]
    pub log: String,

    /// OpenTelemetry collector for span export over OTLP/gRPC, e.g.
    /// `http://otel-collector:4317`; unset = no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl CommonArgs {
    /// The node id, falling back to the hostname, then to `herald`.
    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "herald".to_owned())
    }
}

/// Parses a `--region` value.
pub fn parse_region(raw: &str) -> Result<herald_domain::region::Region, String> {
    herald_domain::region::Region::parse(raw).map_err(|e| e.to_string())
}

/// Parses the command line; a bad flag ends the process with one line and exit code 2.
pub fn parse<T: Parser>() -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            let rendered = e.to_string();
            let line = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("{line} (see --help)");
            std::process::exit(EXIT_MISCONFIGURED);
        }
    }
}

/// Ends the process after a misconfiguration named by its flag.
pub fn misconfigured(flag: &str, problem: impl Display) -> ! {
    eprintln!("error: {flag}: {problem}");
    std::process::exit(EXIT_MISCONFIGURED)
}
