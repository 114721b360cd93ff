//! Where the connection's reader hands each message: the [`Deliver`]
//! a user gives, by subscription id.

/// A subscription's id on its connection.
pub type Sid = u64;

/// Receives every message of every subscription.
pub trait Deliver: Send + Sync + 'static {
    /// Called on the connection's task, in arrival order; must not block,
    /// await or panic (short locks are fine). A slow callback backs up the
    /// socket until the server drops the connection as a slow consumer,
    /// which counts as a loss. The message's subject and payload are slices
    /// of the connection's read buffer: copy what you keep for long
    /// (`Bytes::copy_from_slice`), or a small payload pins a 64 KiB block.
    fn deliver(&self, sid: Sid, message: &async_nats::Message);
}
