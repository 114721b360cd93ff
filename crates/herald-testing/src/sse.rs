//! A spec-following SSE client for tests, on reqwest + `eventsource-stream`.

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};

/// How long a stream (or a queue, or a bucket) must stay silent for a test
/// to take it that nothing more is coming: a delivery on loopback takes
/// milliseconds, so this is ample even on a loaded machine.
pub const QUIET: Duration = Duration::from_millis(500);

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// One open SSE stream.
pub struct SseStream {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    events: Events,
}

impl SseStream {
    /// Opens `url` with a bearer token; panics unless the answer is 200.
    pub async fn open(client: &reqwest::Client, url: &str, token: &str) -> Self {
        let response = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("connect");
        Self::from_response(response).await
    }

    /// Reads a response as an SSE stream; panics unless it is a 200.
    pub async fn from_response(response: reqwest::Response) -> Self {
        let url = response.url().to_string();
        let status = response.status();
        assert_eq!(
            status,
            200,
            "GET {url}: {}",
            response.text().await.unwrap_or_default()
        );
        let headers = response.headers().clone();
        Self {
            status,
            headers,
            events: Box::pin(response.bytes_stream().eventsource()),
        }
    }

    /// The next event (comments are not events), or `None` at the end of
    /// the stream, when the connection breaks, or after `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<Event> {
        match tokio::time::timeout(timeout, self.events.next()).await {
            Ok(Some(Ok(event))) => Some(event),
            // A broken connection ends the stream, as it does for EventSource.
            Ok(Some(Err(_))) | Ok(None) | Err(_) => None,
        }
    }

    /// The next event, panicking if none arrives within 10 s.
    pub async fn next(&mut self) -> Event {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("an event within 10s")
    }

    /// Asserts that no event arrives within `quiet`.
    pub async fn assert_silent(&mut self, quiet: Duration) {
        if let Some(event) = self.next_within(quiet).await {
            panic!("unexpected event: {event:?}");
        }
    }
}
