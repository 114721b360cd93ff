//! Connection limits: per node and per user. A [`Permit`] holds a slot and
//! gives it back when dropped, so no path can leak one.
//!
//! The same counts are this node's presence: every change is also kept in
//! a ledger that the presence reporter takes as numbered deltas, and a
//! snapshot is numbered under the same lock, so the two always agree.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    #[error("this edge holds its maximum of {0} connections; retry on another node")]
    NodeFull(usize),
    #[error("this user already holds the maximum of {0} connections on this edge; close one first")]
    UserLimit(usize),
}

/// Counts open connections, per node and per user.
#[derive(Debug)]
pub struct Admission {
    max_node: usize,
    max_user: usize,
    counts: Mutex<Counts>,
    /// Woken when the ledger has changes.
    changed: Notify,
}

#[derive(Debug, Default)]
struct Counts {
    node: usize,
    users: HashMap<String, usize>,
    /// Net changes per user since the last delta.
    ledger: HashMap<String, i64>,
    /// Number of the last delta taken.
    seq: u64,
}

/// Numbered net changes: `(user, change)`, none zero.
pub type Delta = (u64, Vec<(String, i64)>);

impl Counts {
    fn record(&mut self, user: &str, change: i64) {
        let net = self.ledger.entry(user.to_owned()).or_default();
        *net += change;
        if *net == 0 {
            self.ledger.remove(user);
        }
    }

    fn take_delta(&mut self) -> Option<Delta> {
        if self.ledger.is_empty() {
            return None;
        }
        self.seq += 1;
        Some((self.seq, self.ledger.drain().collect()))
    }
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    user: String,
}

impl Admission {
    pub fn new(max_node: usize, max_user: usize) -> Arc<Self> {
        Arc::new(Self {
            max_node,
            max_user,
            counts: Mutex::new(Counts::default()),
            changed: Notify::new(),
        })
    }

    /// Takes a slot for `user`, or says which limit is reached.
    pub fn admit(self: &Arc<Self>, user: &str) -> Result<Permit, AdmitError> {
        let mut counts = self.counts.lock().unwrap();
        if counts.node >= self.max_node {
            return Err(AdmitError::NodeFull(self.max_node));
        }
        let per_user = counts.users.get(user).copied().unwrap_or(0);
        if per_user >= self.max_user {
            return Err(AdmitError::UserLimit(self.max_user));
        }
        counts.node += 1;
        counts.users.insert(user.to_owned(), per_user + 1);
        counts.record(user, 1);
        self.changed.notify_one();
        Ok(Permit {
            admission: self.clone(),
            user: user.to_owned(),
        })
    }

    /// Open connections on this node.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap().node
    }

    /// Waits until connections opened or closed since the last delta.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The changes since the last delta, numbered; `None` if there are none.
    pub fn take_delta(&self) -> Option<Delta> {
        self.counts.lock().unwrap().take_delta()
    }

    /// Every user's connections, at the number of the last delta. Pending
    /// changes are taken as a delta first (returned, to be sent before the
    /// snapshot), so the snapshot includes exactly deltas up to its number.
    pub fn snapshot(&self) -> (Option<Delta>, u64, Vec<(String, u32)>) {
        let mut counts = self.counts.lock().unwrap();
        let delta = counts.take_delta();
        let users = counts
            .users
            .iter()
            .map(|(user, n)| (user.clone(), *n as u32))
            .collect();
        (delta, counts.seq, users)
    }

    /// Number of the last delta taken.
    pub fn seq(&self) -> u64 {
        self.counts.lock().unwrap().seq
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.admission.counts.lock().unwrap();
        counts.node -= 1;
        if let Some(n) = counts.users.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                counts.users.remove(&self.user);
            }
        }
        counts.record(&self.user, -1);
        self.admission.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_and_slots_come_back() {
        let admission = Admission::new(3, 2);
        let a1 = admission.admit("a").unwrap();
        let _a2 = admission.admit("a").unwrap();
        assert_eq!(admission.admit("a").unwrap_err(), AdmitError::UserLimit(2));
        let _b = admission.admit("b").unwrap();
        assert_eq!(admission.admit("c").unwrap_err(), AdmitError::NodeFull(3));
        drop(a1);
        assert_eq!(admission.open(), 2);
        let _a3 = admission.admit("a").unwrap();
        assert_eq!(admission.open(), 3);
    }

    #[test]
    fn deltas_are_numbered_net_changes_and_snapshots_agree() {
        let admission = Admission::new(10, 10);
        let a = admission.admit("a").unwrap();
        let b = admission.admit("b").unwrap();
        drop(b); // b's open and close cancel out
        let mut delta = admission.take_delta().unwrap();
        delta.1.sort();
        assert_eq!(delta, (1, vec![("a".to_owned(), 1)]));
        assert_eq!(admission.take_delta(), None);
        let _a2 = admission.admit("a").unwrap();
        drop(a);
        assert_eq!(
            admission.take_delta(),
            None,
            "a net zero change is no delta"
        );
        let _c = admission.admit("c").unwrap();
        let (pending, seq, mut users) = admission.snapshot();
        users.sort();
        assert_eq!(pending, Some((2, vec![("c".to_owned(), 1)])));
        assert_eq!(seq, 2);
        assert_eq!(users, [("a".to_owned(), 1), ("c".to_owned(), 1)]);
    }
}
