//! What the handle and the connection task share: the live subscriptions
//! (the one record each subscription costs), the changes not yet sent, and
//! counters.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::deliver::Sid;

#[derive(Default)]
pub(crate) struct Registry {
    state: Mutex<State>,
    next_sid: AtomicU64,
    pub counters: Counters,
}

#[derive(Default)]
struct State {
    /// Live sid → subject. The handle inserts and removes, so a message
    /// that arrives after `unsubscribe` returned finds no entry and is
    /// dropped; the task reads it to (re)send SUBs.
    subjects: HashMap<Sid, Box<str>>,
    /// Changes not yet written to the connection, by sid (so in the order
    /// subscriptions were made). A subscription made and dropped before
    /// its SUB went out costs nothing on the wire.
    pending: BTreeMap<Sid, Change>,
    /// Whether a connection takes changes. While none does, only
    /// `subjects` is kept: the next connection subscribes to all of them,
    /// and never had the ones dropped meanwhile. So what waits for a
    /// connection is bounded by the live subscriptions, however long the
    /// outage and however many come and go.
    linked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Subscribe,
    Unsubscribe,
}

/// Counters for metrics and tests.
#[derive(Default)]
pub(crate) struct Counters {
    pub connected: AtomicBool,
    pub connects: AtomicU64,
    pub pings: AtomicU64,
    pub delivered: AtomicU64,
    pub dropped: AtomicU64,
    pub oversized: AtomicU64,
    pub refused: AtomicU64,
    pub moves: AtomicU64,
}

impl Registry {
    pub(crate) fn new_sid(&self) -> Sid {
        self.next_sid.fetch_add(1, Relaxed) + 1
    }

    /// Adds a subscription; returns whether a SUB now waits to be written.
    pub(crate) fn insert(&self, sid: Sid, subject: &str) -> bool {
        let mut state = self.state.lock().unwrap();
        state.subjects.insert(sid, subject.into());
        if state.linked {
            state.pending.insert(sid, Change::Subscribe);
        }
        state.linked
    }

    /// Drops a subscription; returns whether an UNSUB now waits to be
    /// written (not if it was live nowhere, or its SUB never went out).
    pub(crate) fn remove(&self, sid: Sid) -> bool {
        let mut state = self.state.lock().unwrap();
        if state.subjects.remove(&sid).is_none() {
            return false;
        }
        let linked = state.linked;
        match state.pending.entry(sid) {
            Entry::Occupied(sub) => {
                sub.remove();
                false
            }
            Entry::Vacant(slot) if linked => {
                slot.insert(Change::Unsubscribe);
                true
            }
            Entry::Vacant(_) => false,
        }
    }

    /// Drops a subscription the server refused: its SUB went out, so no
    /// UNSUB is owed. Returns its subject if it was live.
    pub(crate) fn refuse(&self, sid: Sid) -> Option<Box<str>> {
        let mut state = self.state.lock().unwrap();
        state.pending.remove(&sid);
        state.subjects.remove(&sid)
    }

    pub(crate) fn is_live(&self, sid: Sid) -> bool {
        self.state.lock().unwrap().subjects.contains_key(&sid)
    }

    pub(crate) fn subject(&self, sid: Sid) -> Option<Box<str>> {
        self.state.lock().unwrap().subjects.get(&sid).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.state.lock().unwrap().subjects.len()
    }

    /// Takes the changes waiting: `write(sid, None)` for each UNSUB, then
    /// `write(sid, Some(subject))` for each SUB, oldest first (so that, at
    /// a subscription limit, room is made before it is taken).
    pub(crate) fn flush(&self, write: impl FnMut(Sid, Option<&str>)) {
        let mut state = self.state.lock().unwrap();
        let State {
            subjects, pending, ..
        } = &mut *state;
        drain(subjects, pending, write);
    }

    /// No connection takes changes (it was lost).
    pub(crate) fn unlink(&self) {
        let mut state = self.state.lock().unwrap();
        state.linked = false;
        state.pending.clear();
    }

    /// A new connection takes every live subscription, `subscribe(sid,
    /// subject)`, and from now on the changes. Changes waiting for the old
    /// one first go to it, with `flush`, so both see every change: used
    /// when moving while the old one still serves.
    pub(crate) fn link(
        &self,
        mut flush: impl FnMut(Sid, Option<&str>),
        mut subscribe: impl FnMut(Sid, &str),
    ) {
        let mut state = self.state.lock().unwrap();
        let State {
            subjects,
            pending,
            linked,
        } = &mut *state;
        drain(subjects, pending, &mut flush);
        for (sid, subject) in subjects.iter() {
            subscribe(*sid, subject);
        }
        *linked = true;
    }

    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}

/// Empties `pending` into `write`: UNSUBs, then SUBs, each by sid.
fn drain(
    subjects: &HashMap<Sid, Box<str>>,
    pending: &mut BTreeMap<Sid, Change>,
    mut write: impl FnMut(Sid, Option<&str>),
) {
    for (sid, change) in pending.iter() {
        if *change == Change::Unsubscribe {
            write(*sid, None);
        }
    }
    for (sid, change) in std::mem::take(pending) {
        if change == Change::Subscribe
            && let Some(subject) = subjects.get(&sid)
        {
            write(sid, Some(subject));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flushed(registry: &Registry) -> Vec<(Sid, Option<String>)> {
        let mut out = Vec::new();
        registry.flush(|sid, subject| out.push((sid, subject.map(str::to_owned))));
        out.sort();
        out
    }

    fn linked(registry: &Registry) -> Vec<Sid> {
        let mut subscribed = Vec::new();
        registry.link(|_, _| {}, |sid, _| subscribed.push(sid));
        subscribed.sort();
        subscribed
    }

    #[test]
    fn a_subscription_dropped_before_its_sub_went_out_costs_nothing() {
        let registry = Registry::default();
        assert!(linked(&registry).is_empty());
        assert!(registry.insert(1, "a"));
        assert!(registry.insert(2, "b"));
        assert!(!registry.remove(1), "cancelled");
        assert_eq!(flushed(&registry), [(2, Some("b".into()))]);
        assert!(registry.remove(2), "its SUB went out: an UNSUB is owed");
        assert_eq!(flushed(&registry), [(2, None)]);
        assert!(flushed(&registry).is_empty());
    }

    #[test]
    fn while_unlinked_only_the_live_subscriptions_are_kept() {
        let registry = Registry::default();
        linked(&registry);
        registry.insert(1, "a");
        registry.unlink();
        for sid in 2..10_000 {
            registry.insert(sid, "churn");
            registry.remove(sid);
        }
        registry.insert(10_000, "z");
        assert!(!registry.remove(1));
        assert!(registry.state.lock().unwrap().pending.is_empty());
        assert_eq!(linked(&registry), [10_000]);
        assert!(flushed(&registry).is_empty(), "the new link took them");
    }

    #[test]
    fn a_move_sends_waiting_changes_to_the_old_link_and_everything_to_the_new() {
        let registry = Registry::default();
        linked(&registry);
        registry.insert(1, "a");
        registry.flush(|_, _| {});
        registry.insert(2, "b");
        registry.remove(1);
        let (mut old, mut new) = (Vec::new(), Vec::new());
        registry.link(
            |sid, s| old.push((sid, s.is_some())),
            |sid, _| new.push(sid),
        );
        old.sort();
        assert_eq!(old, [(1, false), (2, true)]);
        assert_eq!(new, [2]);
    }

    #[test]
    fn room_is_made_before_it_is_taken_and_subscriptions_go_out_in_order() {
        let registry = Registry::default();
        linked(&registry);
        registry.insert(1, "a");
        registry.flush(|_, _| {});
        for sid in [5, 3, 4] {
            registry.insert(sid, "b");
        }
        registry.remove(1);
        let mut order = Vec::new();
        registry.flush(|sid, subject| order.push((sid, subject.is_some())));
        assert_eq!(order, [(1, false), (3, true), (4, true), (5, true)]);
    }

    #[test]
    fn a_refused_subscription_owes_no_unsub() {
        let registry = Registry::default();
        linked(&registry);
        registry.insert(1, "a");
        registry.flush(|_, _| {});
        assert_eq!(registry.refuse(1).as_deref(), Some("a"));
        assert!(!registry.remove(1));
        assert!(flushed(&registry).is_empty());
    }
}
