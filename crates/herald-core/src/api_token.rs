//! The bearer token of the internal APIs (Publish, Presence, the push
//! worker's device API): the flags that set it, the rule that decides
//! whether a service may start without one, and the check of each call.
//!
//! The rule (fail closed): a service whose API listener can be reached
//! from other hosts refuses to start without `--api-token`, unless the
//! operator says `--insecure-no-auth`, which is then warned about at every
//! start. Only the API listener (`--listen`) counts: the admin port serves
//! `/metrics`, `/healthz` and `/readyz`, which no token protects anywhere.

use std::net::SocketAddr;

use prometheus_client::metrics::counter::Counter;
use tonic::{Request, Status};

use crate::config_error::ConfigError;

/// Shortest token accepted: 16 characters, so it cannot be guessed online.
pub const MIN_TOKEN_LEN: usize = 16;

/// The flags of an internal API, flattened into each service's `Args`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ApiAuthArgs {
    /// Bearer token callers must send (`authorization: Bearer <token>`), at
    /// least 16 characters; required unless --listen is a loopback address
    /// or --insecure-no-auth is given.
    #[arg(long, env = "HERALD_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Serve the API without --api-token on a non-loopback address: anyone
    /// who reaches the port may call it. Warned about at every start.
    #[arg(long, env = "HERALD_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

impl ApiAuthArgs {
    /// The token the API on `api_listen` requires (`None`: open), or why the
    /// service must not start, naming `--api-token`.
    pub fn validate(&self, api_listen: SocketAddr) -> Result<Option<String>, ConfigError> {
        match &self.api_token {
            Some(token) if token.chars().count() < MIN_TOKEN_LEN => Err(ConfigError::new(
                "--api-token",
                format!("must be at least {MIN_TOKEN_LEN} characters (try `openssl rand -hex 32`)"),
            )),
            Some(token) => Ok(Some(token.clone())),
            None if self.insecure_no_auth || is_loopback(api_listen) => Ok(None),
            None => Err(ConfigError::new(
                "--api-token",
                format!(
                    "required: {api_listen} is reachable from other hosts; set --api-token \
                     (HERALD_API_TOKEN), listen on 127.0.0.1, or accept an open API with \
                     --insecure-no-auth"
                ),
            )),
        }
    }

    /// Logs, at every start, that the API is open to whoever reaches it,
    /// when the operator chose so. Call once logging is up.
    pub fn warn_if_insecure(&self, api_listen: SocketAddr) {
        if self.insecure_no_auth && self.api_token.is_none() {
            tracing::warn!(
                listen = %api_listen,
                "--insecure-no-auth: the API accepts calls from anyone who can reach {api_listen}; set --api-token"
            );
        }
    }
}

/// True when only this host can connect to `addr` (IPv4 `127.0.0.0/8`,
/// IPv6 `::1`, or `::ffff:127.x.y.z`); `0.0.0.0` and `::` are not.
pub fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// Checks `authorization: Bearer <token>` on every call when a token is set.
#[derive(Clone)]
pub struct ApiToken {
    expected: Option<Vec<u8>>,
    refused: Counter,
}

impl ApiToken {
    /// `refused` counts the calls turned away.
    pub fn new(expected: Option<String>, refused: Counter) -> Self {
        Self {
            expected: expected.map(String::into_bytes),
            refused,
        }
    }

    pub fn check<T>(&self, request: Request<T>) -> Result<Request<T>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match self.verdict(authorization) {
            Verdict::Allowed => Ok(request),
            Verdict::Wrong => Err(self.refuse("wrong API token")),
            Verdict::Missing => {
                Err(self.refuse("missing API token: send `authorization: Bearer <token>`"))
            }
        }
    }

    /// Judges an `authorization` header value (for APIs other than gRPC);
    /// a refusal is counted.
    pub fn verdict(&self, authorization: Option<&str>) -> Verdict {
        let Some(expected) = &self.expected else {
            return Verdict::Allowed;
        };
        let verdict = match authorization.and_then(|v| v.strip_prefix("Bearer ")) {
            Some(token) if constant_time_eq(token.as_bytes(), expected) => Verdict::Allowed,
            Some(_) => Verdict::Wrong,
            None => Verdict::Missing,
        };
        if verdict != Verdict::Allowed {
            self.refused.inc();
        }
        verdict
    }

    fn refuse(&self, message: &str) -> Status {
        Status::unauthenticated(message)
    }
}

/// What [`ApiToken::verdict`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Missing,
    Wrong,
}

/// Compares without an early exit, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(token: Option<&str>) -> Result<(), tonic::Code> {
        let check = ApiToken::new(Some("0123456789abcdef".into()), Counter::default());
        let mut request = Request::new(());
        if let Some(t) = token {
            request
                .metadata_mut()
                .insert("authorization", t.parse().unwrap());
        }
        check.check(request).map(|_| ()).map_err(|s| s.code())
    }

    fn auth(args: &[&str]) -> ApiAuthArgs {
        #[derive(clap::Parser)]
        struct Args {
            #[command(flatten)]
            auth: ApiAuthArgs,
        }
        let argv = std::iter::once("test").chain(args.iter().copied());
        <Args as clap::Parser>::try_parse_from(argv).unwrap().auth
    }

    fn flag_at_fault(args: &[&str], listen: &str) -> Option<&'static str> {
        auth(args)
            .validate(listen.parse().unwrap())
            .err()
            .map(|e| e.flag)
    }

    #[test]
    fn an_api_reachable_from_other_hosts_needs_a_token() {
        for listen in [
            "0.0.0.0:50051",
            "[::]:50051",
            "10.1.2.3:50051",
            "[fe80::1]:1",
        ] {
            assert_eq!(flag_at_fault(&[], listen), Some("--api-token"), "{listen}");
        }
        for listen in [
            "127.0.0.1:50051",
            "127.9.9.9:1",
            "[::1]:50051",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert_eq!(
                auth(&[]).validate(listen.parse().unwrap()),
                Ok(None),
                "{listen}"
            );
        }
        let open = auth(&["--insecure-no-auth"]);
        assert_eq!(open.validate("0.0.0.0:1".parse().unwrap()), Ok(None));
        let token = auth(&["--api-token", "0123456789abcdef"]);
        assert_eq!(
            token.validate("0.0.0.0:1".parse().unwrap()),
            Ok(Some("0123456789abcdef".into()))
        );
    }

    #[test]
    fn short_tokens_are_refused_even_with_insecure_no_auth() {
        for args in [
            &["--api-token", "short"][..],
            &["--api-token", "0123456789abcde", "--insecure-no-auth"],
            &["--api-token", ""],
        ] {
            assert_eq!(
                flag_at_fault(args, "127.0.0.1:1"),
                Some("--api-token"),
                "{args:?}"
            );
        }
    }

    #[test]
    fn only_the_exact_token_passes() {
        assert_eq!(call(Some("Bearer 0123456789abcdef")), Ok(()));
        assert_eq!(call(None), Err(tonic::Code::Unauthenticated));
        assert_eq!(
            call(Some("Bearer 0123456789abcdeF")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            call(Some("Bearer 0123456789abcde")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            call(Some("0123456789abcdef")),
            Err(tonic::Code::Unauthenticated)
        );
    }
}
