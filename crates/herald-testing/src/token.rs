//! Minting client tokens the way an application's auth service would: the
//! claims are herald-proto's [`Claims`] (build them with its methods), and
//! [`Sign`] signs them.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};

pub use herald_domain::claims::{Audience, Claims};

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signing claims into a token; panics on a bad key (a test's mistake).
pub trait Sign {
    /// Signs with an HS256 secret.
    fn hs256(&self, secret: &str) -> String;

    /// Signs with `alg` and a private key in PEM.
    fn sign_pem(&self, alg: Algorithm, pem: &[u8]) -> String;
}

impl Sign for Claims {
    fn hs256(&self, secret: &str) -> String {
        sign(
            self,
            Algorithm::HS256,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
    }

    fn sign_pem(&self, alg: Algorithm, pem: &[u8]) -> String {
        let key = match alg {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
                EncodingKey::from_rsa_pem(pem)
            }
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            other => panic!("no PEM signing for {other:?}"),
        }
        .expect("test key parses");
        sign(self, alg, &key)
    }
}

fn sign(claims: &Claims, alg: Algorithm, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("token encodes")
}
