//! The body type of every edge response.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};

/// Response body type of every edge response.
pub type Body = BoxBody<Bytes, Infallible>;

/// A body of known bytes.
pub fn full(bytes: Bytes) -> Body {
    BodyExt::boxed(Full::new(bytes))
}
