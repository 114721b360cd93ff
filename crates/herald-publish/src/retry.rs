//! When to ask JetStream again for a stream it refused. A cluster that has
//! just formed refuses for a few seconds, and that passes by itself: with
//! no meta leader yet a request gets no answer at all, and while the
//! servers are still learning of each other it answers "no suitable
//! peers" or "insufficient resources". Those are asked again quickly
//! (each attempt waits at most [`ATTEMPT_TIMEOUT`], a pause after an
//! answer from [`FIRST_PAUSE`] doubling to [`MAX_SETTLING_PAUSE`]), so the
//! streams exist moments after the cluster can hold them. Anything else
//! (more replicas than a lone server has, a subject another stream holds,
//! JetStream off) waits for an operator: asked again every
//! [`LASTING_PAUSE`], logged as an error each time. A leaf module: pure
//! policy, tested on its own.

use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};

/// Longest wait for one answer. Without a meta leader JetStream drops the
/// request, and async-nats' default wait (10 s) is what kept a fresh
/// cluster from storing events for 10.5 s after it could. An answer that
/// takes longer (a loaded server creating a replicated stream) is not
/// lost: creating a stream with the same configuration again is harmless
/// and answers once the first is done.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// The pause after the first refusal that passes by itself.
pub const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// The longest pause between attempts while the cluster settles.
pub const MAX_SETTLING_PAUSE: Duration = Duration::from_millis(500);
/// The pause after a refusal that waits for an operator.
pub const LASTING_PAUSE: Duration = Duration::from_secs(5);

/// What kind of refusal an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No answer within [`ATTEMPT_TIMEOUT`]: no meta leader yet, or busy.
    NoAnswer,
    /// The cluster is still forming: passes by itself.
    Settling,
    /// Needs an operator: a configuration JetStream will not take.
    Lasting,
}

impl Refusal {
    pub fn of(error: &CreateStreamError) -> Self {
        match error.kind() {
            CreateStreamErrorKind::TimedOut => Self::NoAnswer,
            CreateStreamErrorKind::JetStream(e) if settles(e.error_code()) => Self::Settling,
            _ => Self::Lasting,
        }
    }
}

/// The JetStream errors of a cluster still electing leaders or learning
/// its peers (nats-server's `JSClusterNotAvail`, `JSClusterNoPeers`,
/// `JSInsufficientResources`, …).
fn settles(code: ErrorCode) -> bool {
    [
        ErrorCode::CLUSTER_NOT_AVAILABLE,
        ErrorCode::CLUSTER_NO_PEERS,
        ErrorCode::INSUFFICIENT_RESOURCES,
        ErrorCode::CLUSTER_INCOMPLETE,
        ErrorCode::CLUSTER_NOT_ACTIVE,
        ErrorCode::CLUSTER_NOT_ASSIGNED,
        ErrorCode::CLUSTER_NOT_LEADER,
        ErrorCode::RAFT_GENERAL,
        ErrorCode::PEER_REMAP,
    ]
    .contains(&code)
}

/// One stream's run of refusals.
#[derive(Debug, Default)]
pub struct Retry {
    /// The pause after the next settling refusal; zero before the first.
    next: Duration,
    /// Refusals so far.
    pub failures: u32,
}

impl Retry {
    /// Counts a refusal; returns the pause before the next attempt.
    pub fn failed(&mut self, refusal: Refusal) -> Duration {
        self.failures += 1;
        match refusal {
            // The attempt's own wait was the pause.
            Refusal::NoAnswer => Duration::ZERO,
            Refusal::Settling => {
                let pause = self.next.max(FIRST_PAUSE);
                self.next = (pause * 2).min(MAX_SETTLING_PAUSE);
                pause
            }
            Refusal::Lasting => LASTING_PAUSE,
        }
    }

    /// Whether this refusal is worth a warning rather than a debug line:
    /// the first, and then every tenth, of a run that passes by itself.
    pub fn loud(&self) -> bool {
        self.failures % 10 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jetstream(code: u64, description: &str) -> CreateStreamError {
        let json = format!(r#"{{"code":503,"err_code":{code},"description":"{description}"}}"#);
        let error: async_nats::jetstream::Error = serde_json::from_str(&json).unwrap();
        CreateStreamError::new(CreateStreamErrorKind::JetStream(error))
    }

    #[test]
    fn a_forming_cluster_settles_and_a_bad_configuration_lasts() {
        let timed_out = CreateStreamError::new(CreateStreamErrorKind::TimedOut);
        assert_eq!(Refusal::of(&timed_out), Refusal::NoAnswer);
        for (code, description) in [
            (10005, "no suitable peers for placement"),
            (10023, "insufficient resources"),
            (10008, "JetStream system temporarily unavailable"),
        ] {
            let refusal = Refusal::of(&jetstream(code, description));
            assert_eq!(refusal, Refusal::Settling, "{description}");
        }
        for (code, description) in [
            (10074, "replicas > 1 not supported in non-clustered mode"),
            (10065, "subjects overlap with an existing stream"),
            (10039, "jetstream not enabled for account"),
        ] {
            let refusal = Refusal::of(&jetstream(code, description));
            assert_eq!(refusal, Refusal::Lasting, "{description}");
        }
        let off = CreateStreamError::new(CreateStreamErrorKind::JetStreamUnavailable);
        assert_eq!(Refusal::of(&off), Refusal::Lasting);
    }

    #[test]
    fn settling_is_asked_again_quickly_and_lasting_slowly() {
        let mut retry = Retry::default();
        let pauses: Vec<u128> = (0..6)
            .map(|_| retry.failed(Refusal::Settling).as_millis())
            .collect();
        assert_eq!(pauses, [50, 100, 200, 400, 500, 500]);
        assert_eq!(retry.failed(Refusal::NoAnswer), Duration::ZERO);
        assert_eq!(retry.failed(Refusal::Lasting), LASTING_PAUSE);
        assert_eq!(retry.failures, 8);
    }

    #[test]
    fn a_long_run_is_loud_now_and_then() {
        let mut retry = Retry::default();
        let loud: Vec<u32> = (0..25)
            .filter_map(|_| {
                retry.failed(Refusal::NoAnswer);
                retry.loud().then_some(retry.failures)
            })
            .collect();
        assert_eq!(loud, [1, 11, 21]);
    }
}
