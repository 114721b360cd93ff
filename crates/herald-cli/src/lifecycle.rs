//! `herald lifecycle [--user U]`: tails the streams' connects and
//! disconnects the edges publish with `--lifecycle-events`, one line each
//! (or the JSON as published, with `--json`), until Ctrl-C.

use futures::StreamExt;
use herald_domain::control::{LIFECYCLE_PREFIX, LIFECYCLE_WILDCARD};
use herald_domain::subject::{UserId, encode_token};
use herald_nats::connection::NatsSecurity;
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub(crate) struct LifecycleArgs {
    /// Comma-separated NATS server URLs.
    #[arg(
        long,
        env = "HERALD_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        value_delimiter = ','
    )]
    nats_url: Vec<String>,
    #[command(flatten)]
    security: NatsSecurity,
    /// Only this user's streams.
    #[arg(long)]
    user: Option<String>,
    /// Print each event's JSON as published.
    #[arg(long)]
    json: bool,
}

/// Tails until `stop`.
pub(crate) async fn tail(
    args: LifecycleArgs,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let subject = match &args.user {
        Some(user) => {
            let user = UserId::parse(user).map_err(|e| anyhow::anyhow!("--user: {e}"))?;
            format!("{LIFECYCLE_PREFIX}{}", encode_token(user.as_str()))
        }
        None => LIFECYCLE_WILDCARD.to_owned(),
    };
    let (client, _) =
        herald_nats::connection::connect(&args.nats_url, &args.security, "herald-cli lifecycle")
            .await?;
    let mut events = client.subscribe(subject).await?;
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            message = events.next() => match message {
                Some(message) => message,
                None => anyhow::bail!("the NATS subscription ended"),
            },
        };
        if args.json {
            println!("{}", String::from_utf8_lossy(&message.payload));
            continue;
        }
        match serde_json::from_slice::<Value>(&message.payload) {
            Ok(event) => println!("{}", line(&event)),
            Err(_) => eprintln!("skipped an event that is not JSON on {}", message.subject),
        }
    }
}

/// `<at> connect|disconnect <user> <stream> topics=a,b [<duration> ms <reason>]`.
fn line(event: &Value) -> String {
    let text = |key: &str| event[key].as_str().unwrap_or("?").to_owned();
    let topics: Vec<&str> = event["topics"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut line = format!(
        "{} {} {} {} topics={}",
        text("at"),
        text("type"),
        text("user"),
        text("stream"),
        topics.join(",")
    );
    if let Some(ms) = event["duration_ms"].as_u64() {
        line.push_str(&format!(" after {ms} ms: {}", text("reason")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disconnect_reads_as_one_line() {
        let event = serde_json::json!({"type": "disconnect", "user": "a", "node": "e1",
            "stream": "e1-3", "topics": ["news", "x"], "at": "2026-12-07T00:00:00.000Z",
            "duration_ms": 1500, "reason": "client_gone"});
        assert_eq!(
            line(&event),
            "2026-12-07T00:00:00.000Z disconnect a e1-3 topics=news,x after 1500 ms: client_gone"
        );
    }
}
