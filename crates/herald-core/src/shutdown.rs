//! The one shutdown mechanism: a [`CancellationToken`] cancelled by SIGTERM
//! or SIGINT; and, last of all, handing NATS what the process published.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures::StreamExt;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled on the first SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; shut down with SIGKILL");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        cancel.cancel();
    });
    token
}

/// Runs `work` until it ends by itself or, once `shutdown` is cancelled,
/// for at most `grace` more; `None` if it was cut. Each service bounds
/// its stop this way: work that outlives the grace (a stalled peer, a
/// retry loop) is dropped rather than holding the process.
pub async fn within_grace<F: Future>(
    work: F,
    shutdown: &CancellationToken,
    grace: Duration,
) -> Option<F::Output> {
    let mut work = pin!(work);
    tokio::select! {
        done = &mut work => return Some(done),
        _ = shutdown.cancelled() => {}
    }
    tokio::time::timeout(grace, work).await.ok()
}

/// Longest a stopping service waits for NATS to take what it published.
pub const NATS_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Hands NATS everything this process published before it exits.
///
/// `publish` only queues a message in the client, and a call is
/// acknowledged (an ephemeral or DROP-policy event) once it is queued, so
/// exiting with the queue unsent would lose it. `flush` writes the queue
/// to the socket; `drain` then unsubscribes (the server stops sending) and
/// the client closes the socket itself once it has read what the server
/// had sent, so the close is an orderly FIN after the data rather than a
/// reset at process exit, which could discard data not yet acknowledged
/// by TCP. Bounded by [`NATS_CLOSE_TIMEOUT`]: with NATS gone, the process
/// still exits (what was queued is lost, and logged).
pub async fn close_nats(nats: &async_nats::Client) {
    tracing::info!("handing queued messages to NATS before exit");
    let closing = async {
        // Ends when the client has closed: its subscriptions end with it.
        // Refused by the server's permissions or not, it ends all the same.
        let mut sentinel = nats
            .subscribe(nats.new_inbox())
            .await
            .map_err(|e| e.to_string())?;
        nats.flush().await.map_err(|e| e.to_string())?;
        nats.drain().await.map_err(|e| e.to_string())?;
        while sentinel.next().await.is_some() {}
        Ok::<(), String>(())
    };
    match tokio::time::timeout(NATS_CLOSE_TIMEOUT, closing).await {
        Ok(Ok(())) => tracing::debug!("NATS connection flushed and closed"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot flush NATS; messages still queued are lost")
        }
        Err(_) => tracing::warn!(
            timeout = ?NATS_CLOSE_TIMEOUT,
            "NATS did not take the queued messages in time; they are lost"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn work_that_ignores_shutdown_is_cut_after_the_grace() {
        let shutdown = CancellationToken::new();
        let start = Instant::now();
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            cancel.cancel();
        });
        let forever = std::future::pending::<()>();
        let done = within_grace(forever, &shutdown, Duration::from_secs(2)).await;
        assert_eq!(done, None);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_ends_in_time_gives_its_output() {
        let shutdown = CancellationToken::new();
        let slow = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            7
        };
        // No shutdown: the work runs as long as it takes.
        assert_eq!(within_grace(slow, &shutdown, Duration::ZERO).await, Some(7));
        shutdown.cancel();
        let finishing = async {
            tokio::time::sleep(Duration::from_millis(900)).await;
            8
        };
        let done = within_grace(finishing, &shutdown, Duration::from_secs(1)).await;
        assert_eq!(done, Some(8));
    }
}
