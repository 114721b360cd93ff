//! The connection the streams' subjects are held on, made by one of two
//! subscribers behind one interface: the lean one Herald runs
//! (herald-subscriptions), or async-nats `Subscriber`s, the mature client
//! the lean one is checked against (`--nats-subscriber`). The fan-out
//! above does not know which.

use std::sync::Arc;

use herald_nats::connection::{LossCounter, NatsSecurity};
use herald_subscriptions::{ConnectError, Deliver, RoundTripError, Sid, Stats, Subscriptions};

use super::mature;

/// Which subscriber holds the streams' subjects. (Plain comments on the
/// variants: `--help` then lists the values on one line, as for every
/// other flag.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum NatsSubscriber {
    // herald-subscriptions: every subject on one connection, a map entry
    // each; knows which subscription NATS refused; moves away from a
    // server in lame duck mode before it leaves.
    #[default]
    Lean,
    // A `Subscriber` and a task per subject on an async-nats client: for
    // tests and diagnosis (see `mature`).
    AsyncNats,
}

impl NatsSubscriber {
    /// Its name as the flag and metrics give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lean => "lean",
            Self::AsyncNats => "async-nats",
        }
    }
}

/// The subscription connection, by subscriber.
pub(super) enum Link {
    Lean(Subscriptions),
    Mature(mature::Subscribers),
}

impl Link {
    /// Connects with `subscriber`, failing fast at start-up; its losses
    /// count in `losses`, its messages and refusals go to `deliver`.
    pub(super) async fn connect(
        subscriber: NatsSubscriber,
        urls: &[String],
        security: &NatsSecurity,
        name: &str,
        losses: LossCounter,
        deliver: Arc<dyn Deliver>,
    ) -> Result<Self, ConnectError> {
        Ok(match subscriber {
            NatsSubscriber::Lean => {
                Self::Lean(Subscriptions::connect(urls, security, name, losses, deliver).await?)
            }
            NatsSubscriber::AsyncNats => Self::Mature(
                mature::Subscribers::connect(urls, security, name, losses, deliver).await?,
            ),
        })
    }

    pub(super) fn subscribe(&self, subject: &str) -> Sid {
        match self {
            Self::Lean(lean) => lean.subscribe(subject),
            Self::Mature(mature) => mature.subscribe(subject),
        }
    }

    pub(super) fn unsubscribe(&self, sid: Sid) {
        match self {
            Self::Lean(lean) => lean.unsubscribe(sid),
            Self::Mature(mature) => mature.unsubscribe(sid),
        }
    }

    /// Resolves once the server has processed every subscription made
    /// before the call (and the lean subscriber has handed on any it
    /// refused).
    pub(super) async fn round_trip(&self) -> Result<(), RoundTripError> {
        match self {
            Self::Lean(lean) => lean.round_trip().await,
            Self::Mature(mature) => mature.round_trip().await,
        }
    }

    pub(super) fn stats_reader(&self) -> StatsReader {
        match self {
            Self::Lean(lean) => StatsReader::Lean(lean.stats_reader()),
            Self::Mature(mature) => StatsReader::Mature(mature.stats_reader()),
        }
    }
}

/// Reads the subscription connection's [`Stats`], for readiness and
/// metrics, without keeping the connection open.
#[derive(Debug, Clone)]
pub enum StatsReader {
    Lean(herald_subscriptions::StatsReader),
    Mature(mature::StatsReader),
}

impl StatsReader {
    pub fn read(&self) -> Stats {
        match self {
            Self::Lean(lean) => lean.read(),
            Self::Mature(mature) => mature.read(),
        }
    }

    pub fn subscriber(&self) -> NatsSubscriber {
        match self {
            Self::Lean(_) => NatsSubscriber::Lean,
            Self::Mature(_) => NatsSubscriber::AsyncNats,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use clap::ValueEnum;
    use herald_subscriptions::{Refusal, Source};

    use super::*;

    #[test]
    fn each_subscriber_has_one_name() {
        for subscriber in NatsSubscriber::value_variants() {
            let value = subscriber.to_possible_value().unwrap();
            assert_eq!(value.get_name(), subscriber.as_str());
        }
    }

    /// What a link handed on, by sid.
    #[derive(Default)]
    struct Handed(Mutex<Vec<(Sid, String, Source)>>);

    impl Deliver for Handed {
        fn deliver(&self, sid: Sid, message: &async_nats::Message, source: Source) {
            let payload = String::from_utf8_lossy(&message.payload).into_owned();
            self.0.lock().unwrap().push((sid, payload, source));
        }

        fn refused(&self, _: Sid, _: &Refusal) {}
    }

    impl Handed {
        async fn until(&self, n: usize) -> Vec<(Sid, String, Source)> {
            let within = Duration::from_secs(5);
            herald_testing::eventually(within, "messages handed on", || async {
                let got = self.0.lock().unwrap().clone();
                (got.len() >= n).then_some(got)
            })
            .await
        }
    }

    /// The same checks on both subscribers: a confirmed subscription gets
    /// what is published next, once, by its sid; an unsubscribed one
    /// nothing; a lost server counts as a loss, and once the subscriptions
    /// are back (counted again) they receive again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_subscribers_hand_on_confirm_unsubscribe_and_count_losses_alike() {
        for subscriber in NatsSubscriber::value_variants() {
            let mut server = herald_testing::NatsServer::start();
            let urls = [server.client_url()];
            let security = NatsSecurity::default();
            let handed = Arc::new(Handed::default());
            let losses = LossCounter::new(0);
            let mut lost = losses.subscribe();
            let deliver = handed.clone();
            let link = Link::connect(*subscriber, &urls, &security, "link-test", losses, deliver)
                .await
                .unwrap();
            let publisher = async_nats::connect(server.client_url()).await.unwrap();

            let (kept, dropped) = (link.subscribe("a"), link.subscribe("b"));
            link.round_trip().await.unwrap();
            publisher.publish("a", "1".into()).await.unwrap();
            assert_eq!(handed.until(1).await, [(kept, "1".into(), Source::Only)]);
            link.unsubscribe(dropped);
            link.round_trip().await.unwrap();
            publisher.publish("b", "ignored".into()).await.unwrap();
            publisher.publish("a", "2".into()).await.unwrap();
            // Published after "ignored" on one connection: had that come,
            // it would be second.
            assert_eq!(handed.until(2).await[1], (kept, "2".into(), Source::Only));
            assert!(link.stats_reader().read().connected, "{subscriber:?}");
            assert_eq!(link.stats_reader().subscriber(), *subscriber);

            server.restart();
            let publisher = async_nats::connect(server.client_url()).await.unwrap();
            // Lost, then back with every subscription.
            let within = Duration::from_secs(10);
            herald_testing::eventually(within, "two losses", || {
                let count = *lost.borrow_and_update();
                async move { (count >= 2).then_some(()) }
            })
            .await;
            link.round_trip().await.unwrap();
            publisher.publish("a", "3".into()).await.unwrap();
            assert_eq!(handed.until(3).await[2], (kept, "3".into(), Source::Only));
            assert!(link.stats_reader().read().connects >= 2, "{subscriber:?}");
        }
    }
}
