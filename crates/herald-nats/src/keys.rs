//! NATS keys read from files: a credentials file (user JWT and NKey
//! seed, as `nsc` writes it) or an NKey seed file. Read at every connect,
//! by every connection, so a rotated key (the file replaced, the server's
//! config reloaded) is picked up at the next reconnect with no restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nkeys::KeyPair;

/// A login by key, as the files named in `--nats-creds` or `--nats-nkey`
/// hold it now. No `Debug`: it holds secrets.
#[derive(Clone)]
pub enum KeyLogin {
    /// A user JWT and the key that signs for it.
    Jwt {
        jwt: String,
        key: Arc<KeyPair>,
    },
    Nkey(Arc<KeyPair>),
}

/// Why a key file gave no key. Never quotes the file: it holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(&'static str),
}

impl KeyLogin {
    /// Reads the credentials file `creds`, else the NKey seed file `nkey`,
    /// if either is given.
    pub fn read(creds: Option<&Path>, nkey: Option<&Path>) -> Result<Option<Self>, KeyError> {
        if let Some(path) = creds {
            let (jwt, key) = parse_creds(&read(path)?).map_err(KeyError::Invalid)?;
            return Ok(Some(Self::Jwt {
                jwt,
                key: Arc::new(key),
            }));
        }
        if let Some(path) = nkey {
            let key = KeyPair::from_seed(read(path)?.trim())
                .map_err(|_| KeyError::Invalid("--nats-nkey holds no NKey seed"))?;
            return Ok(Some(Self::Nkey(Arc::new(key))));
        }
        Ok(None)
    }

    /// What signs the server's nonce.
    pub fn key(&self) -> &KeyPair {
        match self {
            Self::Jwt { key, .. } | Self::Nkey(key) => key,
        }
    }
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Unreadable {
        path: path.to_owned(),
        source,
    })
}

/// The user JWT and NKey seed of a credentials file, as `nsc` writes it:
/// two blocks, each one line between `---…BEGIN…---` and `---…END…---`
/// lines, the JWT first. Errors never quote the file (it holds a secret).
pub fn parse_creds(text: &str) -> Result<(String, KeyPair), &'static str> {
    let mut blocks = blocks(text);
    let (Some(jwt), Some(seed)) = (blocks.next(), blocks.next()) else {
        return Err("the credentials file needs a user JWT block and an NKey seed block");
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    let base64url = |p: &&str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if parts.len() != 3 || !parts.iter().all(base64url) {
        return Err("the credentials file's first block is not a JWT");
    }
    let key = KeyPair::from_seed(seed)
        .map_err(|_| "the credentials file's second block is not an NKey seed")?;
    Ok((jwt.to_owned(), key))
}

/// The one-line contents of each `---BEGIN…---` / `---END…---` block.
fn blocks(text: &str) -> impl Iterator<Item = &str> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let fence = |line: &str, word: &str| {
        line.starts_with("---") && line.ends_with("---") && line.contains(word)
    };
    std::iter::from_fn(move || {
        loop {
            let line = lines.next()?;
            if !fence(line, "BEGIN") {
                continue;
            }
            let body = lines.next()?;
            if fence(body, "---") {
                continue;
            }
            if lines.next().is_some_and(|end| fence(end, "END")) {
                return Some(body);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(jwt: &str, seed: &str) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        )
    }

    #[test]
    fn a_credentials_file_gives_its_jwt_and_key() {
        let user = KeyPair::new_user();
        let seed = user.seed().unwrap();
        let (jwt, key) = parse_creds(&creds("aa.bb-_.cc", &seed)).unwrap();
        assert_eq!(jwt, "aa.bb-_.cc");
        assert_eq!(key.public_key(), user.public_key());
        // CRLF line ends and indentation, as editors leave them.
        let crlf = creds("  aa.bb.cc ", &seed).replace('\n', "\r\n");
        assert!(parse_creds(&crlf).is_ok());
    }

    #[test]
    fn hostile_credentials_files_are_refused_without_quoting_them() {
        let seed = KeyPair::new_user().seed().unwrap();
        let cases = [
            String::new(),
            "garbage".to_owned(),
            "-----BEGIN NATS USER JWT-----\n".to_owned(),
            creds("aa.bb.cc", "").replace("\n\n", "\n"),
            creds("not a jwt", &seed),
            creds("a..c", &seed),
            creds("aa.bb.cc", "SUAnotaseed"),
            creds(&seed, "aa.bb.cc"),
            "-----BEGIN X-----\n-----END X-----\n-----BEGIN Y-----\n".repeat(100),
            "\u{0}\u{ffff}---BEGIN---\n\u{1f600}\n---END---".to_owned(),
        ];
        for text in cases {
            let Err(error) = parse_creds(&text) else {
                panic!("accepted");
            };
            assert!(!error.contains(&seed[3..]), "{error}");
        }
    }
}
