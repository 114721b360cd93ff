//! `herald subscribe`: tails a user's stream (and topics) from a terminal
//! the way a browser's EventSource follows it: one `GET /v1/events`,
//! events printed as they come ([`crate::output`]), and after the stream
//! ends a reconnect with `Last-Event-ID` so nothing is missed
//! ([`crate::reconnect`]). Why the server ended a stream (its
//! `: closing: <reason>` comment) goes to stderr; a refusal a browser
//! would not retry (401, 403, 400) ends the command with exit code 1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use herald_core::config_error::ConfigError;
use herald_domain::claims::{Audience, Claims};
use herald_domain::subject::{IdError, Topic, UserId};
use http::Uri;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::connect::{Client, OpenError};
use crate::reconnect::Reconnect;
use crate::sse::{Item, Parser};
use crate::{output, token};

#[derive(Debug, clap::Args)]
pub(crate) struct SubscribeArgs {
    /// The edge's base URL, e.g. `http://127.0.0.1:8080`; the stream is
    /// `<url>/v1/events`.
    #[arg(long, env = "HERALD_EDGE_URL", value_parser = parse_base_url)]
    url: Uri,
    /// A client token (JWT) from your auth service.
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Mint the token instead, with this HS256 secret (the edge's
    /// --jwt-secret), for --user; a fresh one on every connect. For
    /// development.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// The user (`sub`) a minted token is for.
    #[arg(long, value_parser = parse_user)]
    user: Option<String>,
    /// Topic to follow besides the user's own stream (repeatable). A
    /// minted token allows exactly these.
    #[arg(long = "topic", value_parser = parse_topic)]
    topics: Vec<String>,
    /// One JSON object per event: `{"id":…,"event":…,"data":…}`.
    #[arg(long)]
    json: bool,
    /// Start after this event id, as a reconnect would.
    #[arg(long)]
    last_event_id: Option<String>,
    /// Lifetime of a minted token.
    #[arg(long, default_value = "1h", value_parser = herald_nats::duration::parse_duration)]
    ttl: Duration,
    /// `aud` of a minted token, for an edge started with --jwt-audience.
    #[arg(long, env = "HERALD_JWT_AUDIENCE")]
    aud: Option<String>,
    /// `iss` of a minted token, for an edge started with --jwt-issuer.
    #[arg(long, env = "HERALD_JWT_ISSUER")]
    iss: Option<String>,
    /// Reconnect when nothing, not even a heartbeat, arrived for this long
    /// (a connection a proxy or NAT dropped without a word).
    #[arg(long, default_value = "60s", value_parser = herald_nats::duration::parse_duration)]
    idle_timeout: Duration,
    /// PEM CA certificates to trust for an `https://` edge instead of the
    /// built-in roots.
    #[arg(long, env = "HERALD_CA_FILE")]
    ca_file: Option<PathBuf>,
}

/// Where the token comes from.
enum Credentials {
    Given(String),
    Minted { secret: String, user: String },
}

/// How one stream ended.
enum End {
    /// The body ended; `reason` is the server's, if it gave one.
    Closed { reason: Option<String> },
    /// The connection broke, or went silent for too long.
    Broken(String),
    /// Stdout is gone: nobody reads the events any more.
    StdoutClosed,
}

/// Runs until a final refusal (exit 1) or stdout closes (exit 0); a
/// signal is handled by the caller.
pub(crate) async fn run(args: SubscribeArgs) -> ExitCode {
    let credentials = match credentials(&args) {
        Ok(c) => c,
        Err(e) => return misconfigured(e),
    };
    let client = match Client::new(args.ca_file.as_deref()) {
        Ok(c) => c,
        Err(e) => return misconfigured(e),
    };
    let uri = events_uri(&args.url, &args.topics);
    let mut parser = Parser::default();
    parser.set_last_event_id(args.last_event_id.as_deref().unwrap_or_default());
    let mut reconnect = Reconnect::default();
    loop {
        let token = match token_for(&credentials, &args) {
            Ok(t) => t,
            Err(e) => return misconfigured(ConfigError::new("--jwt-secret", e)),
        };
        let resume = parser.last_event_id().to_owned();
        let wait = match client.open(&uri, &token, &resume).await {
            Ok(body) => {
                reconnect.opened();
                if resume.is_empty() {
                    eprintln!("connected to {uri}");
                } else {
                    eprintln!("connected to {uri}, resuming after {resume}");
                }
                parser.reset_connection();
                let end = read(body, &mut parser, &mut reconnect, &args).await;
                let wait = reconnect.next_delay(None);
                match end {
                    End::StdoutClosed => return ExitCode::SUCCESS,
                    End::Closed { reason: Some(r) } => {
                        eprintln!("the server closed the stream: {r}; reconnecting in {wait:.1?}")
                    }
                    End::Closed { reason: None } => {
                        eprintln!("the stream ended without a reason; reconnecting in {wait:.1?}")
                    }
                    End::Broken(e) => {
                        eprintln!("connection lost: {e}; reconnecting in {wait:.1?}")
                    }
                }
                wait
            }
            Err(OpenError::Refused { status, message }) => {
                eprintln!("refused by {uri}: {status}: {message}");
                return ExitCode::FAILURE;
            }
            Err(OpenError::Busy {
                status,
                message,
                retry_after,
            }) => {
                let wait = reconnect.next_delay(retry_after);
                eprintln!("{uri} answered {status}: {message}; retrying in {wait:.1?}");
                wait
            }
            Err(OpenError::Unreachable(e)) => {
                let wait = reconnect.next_delay(None);
                eprintln!("cannot reach {uri}: {e}; retrying in {wait:.1?}");
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Reads one stream to its end, printing events as they come.
async fn read(
    mut body: Incoming,
    parser: &mut Parser,
    reconnect: &mut Reconnect,
    args: &SubscribeArgs,
) -> End {
    let mut reason = None;
    let mut items = Vec::new();
    loop {
        let frame = match tokio::time::timeout(args.idle_timeout, body.frame()).await {
            Err(_) => return End::Broken(format!("nothing for {:?}", args.idle_timeout)),
            Ok(None) => return End::Closed { reason },
            Ok(Some(Err(e))) => return End::Broken(e.to_string()),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(bytes) = frame.into_data() else {
            continue; // trailers
        };
        if let Err(e) = parser.feed(&bytes, &mut items) {
            return End::Broken(e.to_string());
        }
        for item in items.drain(..) {
            match item {
                Item::Event(event) => {
                    if !output::emit(&output::line(&event, args.json)) {
                        return End::StdoutClosed;
                    }
                }
                Item::Retry(ms) => reconnect.hint(ms),
                Item::Comment(text) => {
                    if let Some(why) = text.strip_prefix("closing:") {
                        reason = Some(why.trim().to_owned());
                    }
                }
            }
        }
    }
}

fn credentials(args: &SubscribeArgs) -> Result<Credentials, ConfigError> {
    match (&args.token, &args.jwt_secret, &args.user) {
        (Some(token), _, None) => Ok(Credentials::Given(token.clone())),
        (None, Some(secret), Some(user)) => Ok(Credentials::Minted {
            secret: secret.clone(),
            user: user.clone(),
        }),
        (Some(_), _, Some(_)) => Err(ConfigError::new(
            "--token / --user",
            "give one, not both: --user mints a token",
        )),
        (None, None, _) => Err(ConfigError::new(
            "--token",
            "required, or --jwt-secret and --user to mint one",
        )),
        (None, Some(_), None) => Err(ConfigError::new(
            "--user",
            "required with --jwt-secret: the user to mint a token for",
        )),
    }
}

fn token_for(
    credentials: &Credentials,
    args: &SubscribeArgs,
) -> Result<String, jsonwebtoken::errors::Error> {
    match credentials {
        Credentials::Given(token) => Ok(token.clone()),
        Credentials::Minted { secret, user } => {
            let claims = Claims {
                aud: args.aud.clone().map(Audience::One),
                iss: args.iss.clone(),
                ..Claims::new(user).topics(&args.topics).valid_for(args.ttl)
            };
            token::hs256(&claims, secret)
        }
    }
}

fn misconfigured(e: ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(herald_core::cli::EXIT_MISCONFIGURED as u8)
}

/// Why `--url` is not an edge's base URL.
#[derive(Debug, thiserror::Error)]
enum UrlError {
    #[error("{0}; expected e.g. http://127.0.0.1:8080")]
    Unreadable(#[from] http::uri::InvalidUri),
    #[error("the URL must start with http:// or https://")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    #[error("give the base URL without a query; topics go in --topic")]
    Query,
}

/// An `http://` or `https://` base URL with a host and no query.
fn parse_base_url(raw: &str) -> Result<Uri, UrlError> {
    let uri: Uri = raw.parse()?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(UrlError::Scheme),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    if uri.query().is_some() {
        return Err(UrlError::Query);
    }
    Ok(uri)
}

/// `<base>/v1/events?topic=…`; a base that already ends in `/v1/events`
/// is taken as it is.
fn events_uri(base: &Uri, topics: &[String]) -> Uri {
    let path = base.path().trim_end_matches('/');
    let path = path.strip_suffix("/v1/events").unwrap_or(path);
    let mut query = form_urlencoded::Serializer::new(String::new());
    for topic in topics {
        query.append_pair("topic", topic);
    }
    let query = query.finish();
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
    let sep = if query.is_empty() { "" } else { "?" };
    format!("{scheme}://{authority}{path}/v1/events{sep}{query}")
        .parse()
        .expect("built from a valid URI and encoded topics")
}

fn parse_topic(raw: &str) -> Result<String, IdError> {
    Topic::parse(raw).map(|t| t.as_str().to_owned())
}

fn parse_user(raw: &str) -> Result<String, IdError> {
    UserId::parse(raw).map(|u| u.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(base: &str, topics: &[&str]) -> String {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        events_uri(&parse_base_url(base).unwrap(), &topics).to_string()
    }

    #[test]
    fn the_events_url_is_built_under_the_base() {
        assert_eq!(
            uri("http://127.0.0.1:8080", &[]),
            "http://127.0.0.1:8080/v1/events"
        );
        assert_eq!(
            uri("https://push.example.com/herald/", &["news", "a&b=#"]),
            "https://push.example.com/herald/v1/events?topic=news&topic=a%26b%3D%23"
        );
        assert_eq!(
            uri("http://[::1]:8080/v1/events", &["café"]),
            "http://[::1]:8080/v1/events?topic=caf%C3%A9"
        );
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for bad in [
            "",
            "127.0.0.1:8080",
            "ftp://host/",
            "http://",
            "http://host/?topic=x",
            "http://ho st/",
            "/v1/events",
        ] {
            assert!(parse_base_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topics_are_checked_as_the_edge_checks_them() {
        assert!(parse_topic("room.42").is_ok());
        for bad in ["", "a b", "news*", "x\u{0}", &"t".repeat(300)] {
            assert!(parse_topic(bad).is_err(), "{bad:?}");
        }
    }
}
