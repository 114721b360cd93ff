//! What the handle and the connection task share: the live subscriptions
//! (the one record each subscription costs) and counters.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::deliver::Sid;

#[derive(Default)]
pub struct Registry {
    /// Live sid → subject. The handle inserts and removes, so a message
    /// that arrives after `unsubscribe` returned finds no entry and is
    /// dropped; the task reads it to (re)send SUBs.
    subjects: Mutex<HashMap<Sid, Box<str>>>,
    next_sid: AtomicU64,
    pub counters: Counters,
}

/// Counters for metrics and tests.
#[derive(Default)]
pub struct Counters {
    pub connected: AtomicBool,
    pub connects: AtomicU64,
    pub pings: AtomicU64,
    pub delivered: AtomicU64,
    pub dropped: AtomicU64,
}

impl Registry {
    pub fn new_sid(&self) -> Sid {
        self.next_sid.fetch_add(1, Relaxed) + 1
    }

    pub fn insert(&self, sid: Sid, subject: &str) {
        self.subjects.lock().unwrap().insert(sid, subject.into());
    }

    /// Whether `sid` was live.
    pub fn remove(&self, sid: Sid) -> bool {
        self.subjects.lock().unwrap().remove(&sid).is_some()
    }

    pub fn is_live(&self, sid: Sid) -> bool {
        self.subjects.lock().unwrap().contains_key(&sid)
    }

    pub fn len(&self) -> usize {
        self.subjects.lock().unwrap().len()
    }

    /// Calls `f` with the subject of `sid`, if live.
    pub fn with_subject(&self, sid: Sid, f: impl FnOnce(&str)) {
        if let Some(subject) = self.subjects.lock().unwrap().get(&sid) {
            f(subject);
        }
    }

    /// Calls `f` for every live subscription.
    pub fn for_each(&self, mut f: impl FnMut(Sid, &str)) {
        for (sid, subject) in self.subjects.lock().unwrap().iter() {
            f(*sid, subject);
        }
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}
