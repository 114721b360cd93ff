//! Device tokens per user, in the JetStream key-value bucket
//! `herald_devices` (key: the user, value: JSON list of tokens, oldest
//! first). Every change is a compare-and-set on the entry's revision, so
//! two registrations racing for one user both land.

use async_nats::jetstream::{self, kv};
use herald_domain::subject::{UserId, encode_token};
use serde::{Deserialize, Serialize};

/// The bucket's name.
pub const BUCKET: &str = "herald_devices";
/// Longest device token accepted (FCM's are about 160 bytes).
pub const MAX_TOKEN_LEN: usize = 4096;
/// Compare-and-set tries before a change gives up under contention.
const CAS_ATTEMPTS: usize = 16;

/// Why the registry could not do something.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    #[error("device token must be 1-{MAX_TOKEN_LEN} printable ASCII characters without spaces")]
    BadToken,
    #[error("device registry unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Devices {
    tokens: Vec<String>,
}

/// The device registry.
#[derive(Clone)]
pub struct Registry {
    kv: kv::Store,
    max_devices: usize,
}

/// The bucket key of a user: its subject token, with `~` (not allowed in
/// keys) as `=` (never in a token), so the mapping stays injective.
fn key(user: &UserId) -> String {
    encode_token(user.as_str()).replace('~', "=")
}

/// Checks a device token before it is stored.
pub fn check_token(token: &str) -> Result<(), DevicesError> {
    let printable = token.bytes().all(|b| b.is_ascii_graphic());
    if token.is_empty() || token.len() > MAX_TOKEN_LEN || !printable {
        return Err(DevicesError::BadToken);
    }
    Ok(())
}

impl Registry {
    /// Opens the bucket, creating it with `replicas` copies if needed.
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
        max_devices: usize,
    ) -> Result<Self, DevicesError> {
        let kv = match js.get_key_value(BUCKET).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: BUCKET.to_owned(),
                    description: "Herald: device tokens per user, for mobile push".to_owned(),
                    history: 1,
                    num_replicas: replicas,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(unavailable)?,
        };
        Ok(Self { kv, max_devices })
    }

    /// The user's device tokens, oldest first.
    pub async fn list(&self, user: &UserId) -> Result<Vec<String>, DevicesError> {
        Ok(self.read(user).await?.0.tokens)
    }

    /// Adds a token (registering one twice is harmless); beyond the
    /// per-user limit the oldest goes.
    pub async fn add(&self, user: &UserId, token: &str) -> Result<(), DevicesError> {
        check_token(token)?;
        let max = self.max_devices;
        self.change(user, |devices| {
            devices.tokens.retain(|t| t != token);
            devices.tokens.push(token.to_owned());
            let excess = devices.tokens.len().saturating_sub(max);
            devices.tokens.drain(..excess);
        })
        .await
    }

    /// Removes a token; removing an unknown one is harmless.
    pub async fn remove(&self, user: &UserId, token: &str) -> Result<(), DevicesError> {
        self.change(user, |devices| devices.tokens.retain(|t| t != token))
            .await
    }

    async fn read(&self, user: &UserId) -> Result<(Devices, Option<u64>), DevicesError> {
        let entry = self.kv.entry(key(user)).await.map_err(unavailable)?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok((Devices::default(), None));
        };
        // A value we cannot read is replaced rather than blocking the user forever.
        let devices = serde_json::from_slice(&entry.value).unwrap_or_default();
        Ok((devices, Some(entry.revision)))
    }

    async fn change(&self, user: &UserId, edit: impl Fn(&mut Devices)) -> Result<(), DevicesError> {
        for _ in 0..CAS_ATTEMPTS {
            let (mut devices, revision) = self.read(user).await?;
            edit(&mut devices);
            let value = serde_json::to_vec(&devices).expect("serializable").into();
            let written = match revision {
                Some(revision) => self
                    .kv
                    .update(key(user), value, revision)
                    .await
                    .map(drop)
                    .map_err(|e| {
                        Write::failed(e.kind() == kv::UpdateErrorKind::WrongLastRevision, e)
                    }),
                None => self
                    .kv
                    .create(key(user), value)
                    .await
                    .map(drop)
                    .map_err(|e| Write::failed(e.kind() == kv::CreateErrorKind::AlreadyExists, e)),
            };
            match written {
                Ok(()) => return Ok(()),
                Err(Write::Raced) => continue, // someone else changed it first
                Err(Write::Failed(e)) => return Err(e),
            }
        }
        Err(DevicesError::Unavailable(
            "too much contention on one user".into(),
        ))
    }
}

/// Why a compare-and-set did not land.
enum Write {
    /// Someone else changed the entry first: read it again and retry.
    Raced,
    Failed(DevicesError),
}

impl Write {
    fn failed(raced: bool, e: impl std::fmt::Display) -> Self {
        if raced {
            Self::Raced
        } else {
            Self::Failed(unavailable(e))
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> DevicesError {
    DevicesError::Unavailable(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_and_distinct_for_hostile_ids() {
        let ids = ["alice", "a.>", "a~2E~3E", "*", "ü", "a=b"];
        let keys: std::collections::HashSet<_> = ids
            .iter()
            .map(|i| key(&UserId::parse(i).unwrap()))
            .collect();
        assert_eq!(keys.len(), ids.len());
        for k in &keys {
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)),
                "{k}"
            );
        }
    }

    #[test]
    fn device_tokens_are_checked() {
        assert!(check_token("fcm:APA91b-x_y").is_ok());
        for bad in ["", "a b", "tab\t", "é", &"t".repeat(MAX_TOKEN_LEN + 1)] {
            assert!(check_token(bad).is_err(), "{bad:?}");
        }
    }
}
