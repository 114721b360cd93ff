//! HS256 client tokens as the edge reads them, minted by `herald token`
//! and by `herald subscribe --jwt-secret` (afresh for each connection).

use herald_domain::claims::Claims;

/// `claims` signed with `secret`, the edge's `--jwt-secret`.
pub(crate) fn hs256(claims: &Claims, secret: &str) -> Result<String, jsonwebtoken::errors::Error> {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key)
}
