//! What the fan-out hands to streams: one framed event, shared by all, and
//! the queue it goes into.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::fanout::queue::{self, TrySendError};
use crate::fanout::signal::Signal;
use crate::metrics::{CloseReason, Metrics};

/// Identifies one stream on this node.
pub type ConnId = u64;

/// One event on its way to a stream: framed once, shared by all.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub frame: Bytes,
    /// The subject's cursor key and the event's stream sequence, for
    /// persisted events; `None` for ephemeral ones (no id, no replay).
    pub position: Option<(u32, u64)>,
}

/// The frame of a start mark: no event, only an `id:` line before it.
const MARK: &[u8] = b"\n";

impl Delivery {
    /// Where a stream starts on subject `key`, learned after it joined
    /// (see `orders::mark_starts`): an `id:` line and no event.
    pub fn mark(key: u32, seq: u64) -> Self {
        Self {
            frame: Bytes::from_static(MARK),
            position: Some((key, seq)),
        }
    }

    pub fn is_mark(&self) -> bool {
        self.frame == MARK
    }
}

/// What a subject holds for one stream.
#[derive(Debug, Clone)]
pub struct Member {
    /// Bounded: when full, the stream is closed as a slow consumer.
    pub queue: queue::Sender<Delivery>,
    pub signal: Arc<Signal>,
}

/// A subject's members. Most user subjects have one (a single tab): it
/// is held inline, where a map would allocate a table for it.
#[derive(Debug, Default)]
pub enum Members {
    #[default]
    None,
    One(ConnId, Member),
    Many(HashMap<ConnId, Member>),
}

impl Members {
    /// Adds stream `id` (or replaces it).
    pub fn insert(&mut self, id: ConnId, member: Member) {
        *self = match std::mem::take(self) {
            Members::None => Members::One(id, member),
            Members::One(have, _) if have == id => Members::One(id, member),
            Members::One(have, first) => {
                Members::Many(HashMap::from([(have, first), (id, member)]))
            }
            Members::Many(mut map) => {
                map.insert(id, member);
                Members::Many(map)
            }
        };
    }

    /// Removes stream `id`; a map left with one member gives way to it.
    pub fn remove(&mut self, id: ConnId) {
        match self {
            Members::One(have, _) if *have == id => *self = Members::None,
            Members::Many(map) => {
                map.remove(&id);
                self.settle();
            }
            _ => {}
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Members::None => 0,
            Members::One(..) => 1,
            Members::Many(map) => map.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Members::None)
    }

    pub fn contains(&self, id: ConnId) -> bool {
        match self {
            Members::None => false,
            Members::One(have, _) => *have == id,
            Members::Many(map) => map.contains_key(&id),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &Member)> {
        let (one, many) = match self {
            Members::None => (None, None),
            Members::One(id, member) => (Some((*id, member)), None),
            Members::Many(map) => (None, Some(map.iter().map(|(id, m)| (*id, m)))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// Keeps the members `keep` says to.
    fn retain(&mut self, mut keep: impl FnMut(&Member) -> bool) {
        match self {
            Members::None => {}
            Members::One(_, member) => {
                if !keep(member) {
                    *self = Members::None;
                }
            }
            Members::Many(map) => {
                map.retain(|_, member| keep(member));
                self.settle();
            }
        }
    }

    /// A map of one member or none becomes the inline form.
    fn settle(&mut self) {
        if let Members::Many(map) = self
            && map.len() <= 1
        {
            let last = map.drain().next();
            *self = match last {
                Some((id, member)) => Members::One(id, member),
                None => Members::None,
            };
        }
    }
}

/// Gives `delivery` to every member: a reference-counted copy into each
/// queue, no lock, no allocation per member. A member whose queue is full
/// is a slow consumer: closed, and dropped from the subject.
pub fn hand_out(members: &mut Members, delivery: &Delivery, metrics: &Metrics) {
    members.retain(|member| match member.queue.try_send(delivery.clone()) {
        Ok(()) => true,
        Err(TrySendError::Full) => {
            // Counted here, at once: an HTTP/2 stream that stopped reading
            // ends only when its client reads it again or the connection
            // closes (HTTP/1.1 ones are dropped now).
            if member.signal.close(CloseReason::SlowConsumer) {
                metrics.slow_consumer_closes.inc();
            }
            false
        }
        Err(TrySendError::Closed) => false,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::signal::Signal;

    fn member() -> Member {
        let (queue, _) = queue::bounded(4);
        Member {
            queue,
            signal: Signal::new(None, 0),
        }
    }

    #[test]
    fn one_member_is_inline_and_more_go_to_a_map_and_back() {
        let mut members = Members::default();
        members.insert(1, member());
        assert!(matches!(members, Members::One(1, _)));
        members.insert(1, member());
        assert_eq!(members.len(), 1, "the same stream again replaces it");
        members.insert(2, member());
        members.insert(3, member());
        assert!(matches!(members, Members::Many(_)));
        assert_eq!(members.len(), 3);
        assert!(members.contains(2) && !members.contains(4));
        let mut ids: Vec<ConnId> = members.iter().map(|(id, _)| id).collect();
        ids.sort();
        assert_eq!(ids, [1, 2, 3]);
        members.remove(2);
        members.remove(4);
        assert_eq!(members.len(), 2);
        members.remove(1);
        assert!(
            matches!(members, Members::One(3, _)),
            "a map of one gives way"
        );
        members.remove(3);
        assert!(members.is_empty());
        assert_eq!(members.iter().count(), 0);
    }

    #[test]
    fn a_full_queue_is_a_slow_consumer_closed_and_dropped() {
        let metrics = Metrics::default();
        let (queue, _inbox) = queue::bounded(1);
        let slow = Member {
            queue,
            signal: Signal::new(None, 0),
        };
        let signal = slow.signal.clone();
        let mut members = Members::default();
        members.insert(1, slow);
        let delivery = Delivery::mark(0, 1);
        hand_out(&mut members, &delivery, &metrics);
        assert_eq!(members.len(), 1);
        hand_out(&mut members, &delivery, &metrics);
        assert_eq!(members.len(), 0, "dropped");
        assert_eq!(signal.reason(), Some(CloseReason::SlowConsumer));

        // A map of members that drops to one by slow consumers gives way.
        let (queue, _kept) = queue::bounded(8);
        let (full, _full_inbox) = queue::bounded(0);
        let mut members = Members::default();
        members.insert(
            1,
            Member {
                queue,
                signal: Signal::new(None, 0),
            },
        );
        members.insert(
            2,
            Member {
                queue: full,
                signal: Signal::new(None, 0),
            },
        );
        hand_out(&mut members, &delivery, &metrics);
        assert!(matches!(members, Members::One(1, _)));
    }
}
