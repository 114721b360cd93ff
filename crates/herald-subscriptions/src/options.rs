//! Tuning of the subscription connection.

use std::time::Duration;

/// Tuning; the defaults suit production.
#[derive(Debug, Clone)]
pub struct Options {
    /// A PING goes out this often; after two go unanswered the connection
    /// counts as dead (a half-open socket is found this way).
    pub ping_interval: Duration,
    /// Per attempt: TCP, TLS, CONNECT and the first PONG.
    pub connect_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}
