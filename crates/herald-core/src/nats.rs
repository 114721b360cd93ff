//! Connecting to NATS the same way in every service.

use std::time::Duration;

/// Connects to the first reachable of `urls`, failing fast at start-up so a
/// wrong `--nats-url` is reported at once rather than retried forever.
/// Once connected, the client reconnects on its own for as long as needed.
pub async fn connect(
    urls: &[String],
    name: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(|event| async move {
            tracing::info!(%event, "nats connection event");
        })
        .connect(urls.join(","))
        .await
}
