//! Connection limits: per node and per user. A [`Permit`] holds a slot and
//! gives it back when dropped, so no path can leak one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
}

#[derive(Debug, Default)]
struct Counts {
    node: usize,
    users: HashMap<String, usize>,
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
        Ok(Permit {
            admission: self.clone(),
            user: user.to_owned(),
        })
    }

    /// Open connections on this node.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap().node
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
}
