//! Where the connection's reader hands each message, and each refusal:
//! the [`Deliver`] a user gives, by subscription id.

/// A subscription's id on its connection.
pub type Sid = u64;

/// Receives every message of every subscription, and every subscription
/// the server refused.
pub trait Deliver: Send + Sync + 'static {
    /// Called on the connection's task, in arrival order; must not block,
    /// await or panic (short locks are fine). A slow callback backs up the
    /// socket until the server drops the connection as a slow consumer,
    /// which counts as a loss. The message's subject and payload are slices
    /// of the connection's read buffer: copy what you keep for long
    /// (`Bytes::copy_from_slice`), or a small payload pins a 64 KiB block.
    fn deliver(&self, sid: Sid, message: &async_nats::Message, source: Source);

    /// The server refused subscription `sid` (a permissions violation, a
    /// subscription limit); it is dropped from the connection, so nothing
    /// will arrive for it. Called on the connection's task, like `deliver`.
    fn refused(&self, sid: Sid, refusal: &Refusal);
}

/// Which connection handed a message on. While the subscriptions move to
/// another server (its old one is in lame duck mode), two connections are
/// open for a moment and may both carry one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The only connection: each message comes once.
    Only,
    /// The connection the subscriptions moved to, while the one they left
    /// still drains: a message may come on both.
    Successor,
    /// The connection left, after the move: everything published from now
    /// on comes on the successor. A message here may have come there too,
    /// or (if it was published before the successor's interest reached
    /// its publisher's server) only here.
    Predecessor,
}

/// A subscription the server refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The subject, as subscribed.
    pub subject: String,
    pub reason: RefusalReason,
    /// The server's words.
    pub text: String,
}

/// Why the server refused a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The connection's user may not subscribe to the subject (its
    /// permissions, or a permissions change the server reloaded).
    Permissions,
    /// The connection or account holds as many subscriptions as the
    /// server allows (`max_subscriptions`, an account limit).
    MaxSubscriptions,
}

impl RefusalReason {
    /// A metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permissions => "permissions",
            Self::MaxSubscriptions => "max_subscriptions",
        }
    }
}
