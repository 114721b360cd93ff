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
    /// Messages larger than the server's `max_payload` (headers and
    /// payload) are skipped and counted, and so are those larger than
    /// this, whatever the server allows: one message must not take the
    /// memory, or the connection, of every stream on the node.
    pub max_message: usize,
    /// A server announcing lame duck mode is left within this time,
    /// somewhere at random, so that its clients do not all move at once.
    /// Keep it under the server's `lame_duck_grace_period` (10 s by
    /// default), after which it starts closing connections.
    pub lame_duck_spread: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_message: 8 << 20,
            lame_duck_spread: Duration::from_secs(5),
        }
    }
}
