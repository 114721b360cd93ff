//! The plain HTTP/1.1 path: a `GET /v1/events` on a plain connection is
//! served without hyper, which would cost an idle stream its buffers and
//! dispatcher (see docs/plain-http1.md).
//!
//! - [`plain`]: such a connection and its stream, polled by hand; anything
//!   else goes to hyper with the bytes read so far.
//! - [`head`]: reads the request head; [`wire`] frames the response.
//! - [`line`](mod@line): a stream's socket and when it last took bytes.
//! - [`beats`]: one task for the node that writes every plain stream's
//!   heartbeats, keeps their write timeouts and ends them at their
//!   token's expiry.

pub(crate) mod beats;
pub(crate) mod head;
pub(crate) mod line;
pub(crate) mod plain;
pub(crate) mod wire;
