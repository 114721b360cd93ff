//! Following a control bucket (revocations, follows): every entry read
//! at start, then every change, into memory, so that a connect checks
//! memory and never waits on the network. A watch that ends (NATS away,
//! the bucket's leader moved) is made again and reads everything again:
//! what was missed meanwhile is caught up, since the bucket is the state
//! and the orders only its news.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long to wait before asking again for a bucket that does not exist
/// yet (herald-publish creates it) or a watch that ended.
const RETRY: Duration = Duration::from_secs(1);

/// After this long without a change, an unloaded bucket is looked at again.
const QUIET: Duration = Duration::from_secs(5);

/// One change read from a bucket.
pub(crate) enum Change<'a> {
    /// `key` is now `value`.
    Put { key: &'a str, value: &'a [u8] },
    /// `key` was deleted or purged.
    Gone { key: &'a str },
}

/// Follows `bucket` until `stop`, giving every entry and change to
/// `apply`; `loaded` turns true once every entry there was at start has
/// been given (at once when the bucket does not exist: nothing was ever
/// written to it).
pub(crate) async fn follow(
    js: jetstream::Context,
    bucket: &'static str,
    apply: impl Fn(Change<'_>) + Send,
    loaded: watch::Sender<bool>,
    stop: CancellationToken,
) {
    loop {
        let following = follow_once(&js, bucket, &apply, &loaded);
        let error = tokio::select! {
            _ = stop.cancelled() => return,
            error = following => error,
        };
        tracing::debug!(bucket, %error, "following the bucket again");
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Reads every entry, then every change, until the watch fails.
async fn follow_once(
    js: &jetstream::Context,
    bucket: &'static str,
    apply: &impl Fn(Change<'_>),
    loaded: &watch::Sender<bool>,
) -> String {
    let store = match js.get_key_value(bucket).await {
        Ok(store) => store,
        Err(e) => {
            if is_missing(js, bucket).await {
                loaded.send_replace(true);
            }
            return e.to_string();
        }
    };
    let empty = match store.status().await {
        Ok(status) => status.info.state.messages == 0,
        Err(e) => return e.to_string(),
    };
    let mut watch = match store.watch_with_history(">").await {
        Ok(watch) => watch,
        Err(e) => return e.to_string(),
    };
    if empty {
        loaded.send_replace(true);
    }
    loop {
        let next = tokio::time::timeout(QUIET, watch.next()).await;
        let Ok(next) = next else {
            // Entries counted at start may have expired before they were
            // read: an emptied bucket is loaded too.
            if !*loaded.borrow()
                && store
                    .status()
                    .await
                    .is_ok_and(|s| s.info.state.messages == 0)
            {
                loaded.send_replace(true);
            }
            continue;
        };
        let Some(entry) = next else { break };
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => return e.to_string(),
        };
        match entry.operation {
            kv::Operation::Put => apply(Change::Put {
                key: &entry.key,
                value: &entry.value,
            }),
            kv::Operation::Delete | kv::Operation::Purge => apply(Change::Gone { key: &entry.key }),
        }
        if entry.delta == 0 {
            loaded.send_replace(true);
        }
    }
    "the watch ended".into()
}

/// Whether JetStream says the bucket's stream does not exist (not merely
/// that it did not answer).
async fn is_missing(js: &jetstream::Context, bucket: &str) -> bool {
    use jetstream::context::GetStreamErrorKind;
    match js.get_stream(format!("KV_{bucket}")).await {
        Ok(_) => false,
        Err(e) => {
            matches!(e.kind(), GetStreamErrorKind::JetStream(ref e) if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
        }
    }
}
