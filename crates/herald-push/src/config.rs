//! herald-push-worker's flags (each also an environment variable),
//! validated before any port is bound.

use std::net::SocketAddr;
use std::time::Duration;

use herald_core::cli::CommonArgs;
use herald_core::config_error::ConfigError;
use herald_nats::duration::parse_duration;

use crate::account::ServiceAccount;

/// herald-push-worker: sends events queued for offline users as mobile push
/// through FCM, and keeps the users' device tokens.
#[derive(Debug, clap::Parser)]
#[command(name = "herald-push-worker", version, about, long_about = None)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub tls: herald_core::tls::TlsArgs,

    /// Address of the device registration API (HTTP, or HTTPS with --tls-cert).
    #[arg(long, env = "HERALD_LISTEN", default_value = "0.0.0.0:50053")]
    pub listen: SocketAddr,

    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "HERALD_ADMIN_LISTEN", default_value = "0.0.0.0:9093")]
    pub admin_listen: SocketAddr,

    #[command(flatten)]
    pub api_auth: herald_core::api_token::ApiAuthArgs,

    /// Firebase service-account key (JSON file) the worker signs in with.
    #[arg(long, env = "HERALD_FCM_CREDENTIALS")]
    pub fcm_credentials: Option<String>,

    /// Firebase project; defaults to the service account's `project_id`.
    #[arg(long, env = "HERALD_FCM_PROJECT_ID")]
    pub fcm_project_id: Option<String>,

    /// Base URL of the FCM HTTP v1 API.
    #[arg(
        long,
        env = "HERALD_FCM_ENDPOINT",
        default_value = "https://fcm.googleapis.com"
    )]
    pub fcm_endpoint: String,

    /// OAuth token URL; defaults to the service account's `token_uri`.
    #[arg(long, env = "HERALD_FCM_TOKEN_URL")]
    pub fcm_token_url: Option<String>,

    /// Tries per device (first send included) on 429, 5xx or network errors.
    #[arg(long, env = "HERALD_FCM_MAX_ATTEMPTS", default_value_t = 5)]
    pub fcm_max_attempts: u32,

    /// First pause between tries; doubles each time (with jitter), unless
    /// FCM says `Retry-After`.
    #[arg(long, env = "HERALD_FCM_BACKOFF", default_value = "1s", value_parser = parse_duration)]
    pub fcm_backoff: Duration,

    /// Longest pause between tries.
    #[arg(long, env = "HERALD_FCM_MAX_BACKOFF", default_value = "60s", value_parser = parse_duration)]
    pub fcm_max_backoff: Duration,

    /// Queued events handled at once.
    #[arg(long, env = "HERALD_PUSH_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,

    /// Most device tokens kept per user; registering one more drops the oldest.
    #[arg(long, env = "HERALD_MAX_DEVICES_PER_USER", default_value_t = 10)]
    pub max_devices: usize,

    /// Copies of the device-token bucket (1, or 3 in a cluster).
    #[arg(long, env = "HERALD_DEVICES_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub devices_replicas: u8,

    /// On SIGTERM, how long events in hand may take to finish; those still
    /// unfinished are not acknowledged, and JetStream delivers them again.
    #[arg(long, env = "HERALD_DRAIN_GRACE", default_value = "15s", value_parser = parse_duration)]
    pub drain_grace: Duration,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: String,
    /// Whose offline queue this worker empties (see `herald_nats::offline`).
    pub region: herald_domain::region::Region,
    /// What callers of the device API must send; `None` = open (see
    /// `ApiAuthArgs::validate`).
    pub api_token: Option<String>,
    /// HTTPS for the registration API.
    pub tls: Option<herald_core::tls::ServerTls>,
    pub fcm: FcmConfig,
    pub retry: RetryPolicy,
    pub concurrency: usize,
    pub max_devices: usize,
    pub devices_replicas: usize,
    /// How long events in hand may take to finish at shutdown.
    pub drain_grace: Duration,
}

/// Where and as whom to send.
#[derive(Debug, Clone)]
pub struct FcmConfig {
    pub account: ServiceAccount,
    pub project_id: String,
    pub endpoint: String,
    pub token_url: String,
}

/// How sends are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Args {
    /// Checks the flags and reads the service account; on error names the
    /// flag and what is wrong.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let path = self.fcm_credentials.as_deref().ok_or_else(|| {
            ConfigError::new(
                "--fcm-credentials",
                "required: the Firebase service-account JSON file (HERALD_FCM_CREDENTIALS)",
            )
        })?;
        let account = ServiceAccount::read(path).map_err(ConfigError::of("--fcm-credentials"))?;
        let project_id = self
            .fcm_project_id
            .clone()
            .or_else(|| account.project_id.clone())
            .ok_or_else(|| {
                ConfigError::new(
                    "--fcm-project-id",
                    "required: the service account names no project_id",
                )
            })?;
        for (flag, url) in [
            ("--fcm-endpoint", Some(&self.fcm_endpoint)),
            ("--fcm-token-url", self.fcm_token_url.as_ref()),
        ] {
            if url.is_some_and(|u| !(u.starts_with("https://") || u.starts_with("http://"))) {
                return Err(ConfigError::new(flag, "must be an http(s) URL"));
            }
        }
        if self.fcm_max_attempts == 0 {
            return Err(ConfigError::new("--fcm-max-attempts", "must be at least 1"));
        }
        if self.fcm_max_backoff < self.fcm_backoff {
            return Err(ConfigError::new(
                "--fcm-max-backoff",
                "must be at least --fcm-backoff",
            ));
        }
        if self.concurrency == 0 || self.max_devices == 0 {
            return Err(ConfigError::new(
                "--concurrency / --max-devices-per-user",
                "must be at least 1",
            ));
        }
        Ok(Config {
            node_id: self.common.node_id(),
            region: self.common.region.clone(),
            api_token: self.api_auth.validate(self.listen)?,
            tls: self.tls.server_config(&[b"h2", b"http/1.1"])?,
            fcm: FcmConfig {
                token_url: self
                    .fcm_token_url
                    .clone()
                    .unwrap_or_else(|| account.token_uri.clone()),
                endpoint: self.fcm_endpoint.trim_end_matches('/').to_owned(),
                project_id,
                account,
            },
            retry: RetryPolicy {
                max_attempts: self.fcm_max_attempts,
                backoff: self.fcm_backoff,
                max_backoff: self.fcm_max_backoff,
            },
            concurrency: self.concurrency,
            max_devices: self.max_devices,
            devices_replicas: usize::from(self.devices_replicas),
            drain_grace: self.drain_grace,
        })
    }
}

impl RetryPolicy {
    /// The pause before try `attempt + 1` (attempt counts from 1): doubling
    /// from the first backoff, capped, with up to 20% jitter either way so a
    /// fleet of workers does not retry in step.
    pub fn pause(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max_backoff);
        }
        let doubled = self.backoff.saturating_mul(1 << (attempt - 1).min(16));
        doubled
            .min(self.max_backoff)
            .mul_f64(0.8 + 0.4 * fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_stay_capped_and_honour_retry_after() {
        let policy = RetryPolicy {
            max_attempts: 10,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
        };
        let p1 = policy.pause(1, None);
        let p3 = policy.pause(3, None);
        assert!((800..=1200).contains(&p1.as_millis()), "{p1:?}");
        assert!((3200..=4800).contains(&p3.as_millis()), "{p3:?}");
        assert!(policy.pause(40, None) <= Duration::from_secs(12));
        assert_eq!(
            policy.pause(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            policy.pause(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(10)
        );
    }
}
