//! The `--api-token` check of the internal gRPC APIs (Publish, Presence).

use prometheus_client::metrics::counter::Counter;
use tonic::{Request, Status};

/// Checks `authorization: Bearer <token>` on every call when a token is set.
#[derive(Clone)]
pub struct ApiToken {
    expected: Option<Vec<u8>>,
    refused: Counter,
}

impl ApiToken {
    /// `refused` counts the calls turned away.
    pub fn new(expected: Option<String>, refused: Counter) -> Self {
        Self {
            expected: expected.map(String::into_bytes),
            refused,
        }
    }

    pub fn check<T>(&self, request: Request<T>) -> Result<Request<T>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match self.verdict(authorization) {
            Verdict::Allowed => Ok(request),
            Verdict::Wrong => Err(self.refuse("wrong API token")),
            Verdict::Missing => {
                Err(self.refuse("missing API token: send `authorization: Bearer <token>`"))
            }
        }
    }

    /// Judges an `authorization` header value (for APIs other than gRPC);
    /// a refusal is counted.
    pub fn verdict(&self, authorization: Option<&str>) -> Verdict {
        let Some(expected) = &self.expected else {
            return Verdict::Allowed;
        };
        let verdict = match authorization.and_then(|v| v.strip_prefix("Bearer ")) {
            Some(token) if constant_time_eq(token.as_bytes(), expected) => Verdict::Allowed,
            Some(_) => Verdict::Wrong,
            None => Verdict::Missing,
        };
        if verdict != Verdict::Allowed {
            self.refused.inc();
        }
        verdict
    }

    fn refuse(&self, message: &str) -> Status {
        Status::unauthenticated(message)
    }
}

/// What [`ApiToken::verdict`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Missing,
    Wrong,
}

/// Compares without an early exit, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(token: Option<&str>) -> Result<(), tonic::Code> {
        let check = ApiToken::new(Some("0123456789abcdef".into()), Counter::default());
        let mut request = Request::new(());
        if let Some(t) = token {
            request
                .metadata_mut()
                .insert("authorization", t.parse().unwrap());
        }
        check.check(request).map(|_| ()).map_err(|s| s.code())
    }

    #[test]
    fn only_the_exact_token_passes() {
        assert_eq!(call(Some("Bearer 0123456789abcdef")), Ok(()));
        assert_eq!(call(None), Err(tonic::Code::Unauthenticated));
        assert_eq!(
            call(Some("Bearer 0123456789abcdeF")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            call(Some("Bearer 0123456789abcde")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            call(Some("0123456789abcdef")),
            Err(tonic::Code::Unauthenticated)
        );
    }
}
