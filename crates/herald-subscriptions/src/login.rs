//! Who this client is to NATS: the CONNECT line, with user and password,
//! a token, an NKey signing the server's nonce, or a user JWT from a
//! credentials file with its NKey seed.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_core::nats::{ConnectError, Login, NatsSecurity, Password};
use nkeys::KeyPair;

/// How to log in; secrets never show in `Debug`.
#[derive(Clone)]
pub enum Identity {
    Anonymous,
    UserPassword(String, Password),
    Token(Password),
    Nkey(Arc<KeyPair>),
    Jwt { jwt: Password, key: Arc<KeyPair> },
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Identity::Anonymous => "Anonymous",
            Identity::UserPassword(..) => "UserPassword",
            Identity::Token(_) => "Token",
            Identity::Nkey(_) => "Nkey",
            Identity::Jwt { .. } => "Jwt",
        })
    }
}

impl Identity {
    /// Reads the NKey or credentials file named in `security`, if any;
    /// `login` is what [`herald_core::nats::servers`] found.
    pub fn load(security: &NatsSecurity, login: Option<Login>) -> Result<Self, ConnectError> {
        if let Some(path) = &security.nats_creds {
            let (jwt, key) = parse_creds(&read(path)?).map_err(ConnectError::Credentials)?;
            return Ok(Identity::Jwt {
                jwt: Password::new(jwt),
                key: Arc::new(key),
            });
        }
        if let Some(path) = &security.nats_nkey {
            let key = KeyPair::from_seed(read(path)?.trim())
                .map_err(|_| ConnectError::Credentials("--nats-nkey holds no NKey seed"))?;
            return Ok(Identity::Nkey(Arc::new(key)));
        }
        Ok(match login {
            Some(Login::UserPassword(user, password)) => Identity::UserPassword(user, password),
            Some(Login::Token(token)) => Identity::Token(token),
            None => Identity::Anonymous,
        })
    }

    /// The CONNECT operation (with its CRLF) answering a server whose INFO
    /// carried `nonce`.
    pub fn connect_line(
        &self,
        name: &str,
        tls: bool,
        nonce: Option<&str>,
    ) -> Result<String, &'static str> {
        let mut connect = serde_json::json!({
            // Every SUB answered in line: how a refused one is known.
            "verbose": true,
            "pedantic": false,
            "lang": "rust",
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": 1,
            "echo": true,
            "headers": true,
            "no_responders": true,
            "name": name,
            "tls_required": tls,
        });
        let sign = |key: &KeyPair| -> Result<String, &'static str> {
            let nonce = nonce.ok_or("the server sent no nonce to sign")?;
            let signature = key
                .sign(nonce.as_bytes())
                .map_err(|_| "cannot sign the nonce")?;
            Ok(URL_SAFE_NO_PAD.encode(signature))
        };
        let fields = match self {
            Identity::Anonymous => serde_json::json!({}),
            Identity::UserPassword(user, password) => {
                serde_json::json!({ "user": user, "pass": password.expose() })
            }
            Identity::Token(token) => serde_json::json!({ "auth_token": token.expose() }),
            Identity::Nkey(key) => {
                serde_json::json!({ "nkey": key.public_key(), "sig": sign(key)? })
            }
            Identity::Jwt { jwt, key } => {
                serde_json::json!({ "jwt": jwt.expose(), "sig": sign(key)? })
            }
        };
        if let (Some(connect), serde_json::Value::Object(fields)) =
            (connect.as_object_mut(), fields)
        {
            connect.extend(fields);
        }
        Ok(format!("CONNECT {connect}\r\n"))
    }
}

fn read(path: &Path) -> Result<String, ConnectError> {
    std::fs::read_to_string(path).map_err(|source| ConnectError::Unreadable {
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

    #[test]
    fn connect_carries_each_kind_of_login() {
        let json = |identity: &Identity| {
            let line = identity
                .connect_line("herald-edge e1", true, Some("n0nce"))
                .unwrap();
            let json = line
                .strip_prefix("CONNECT ")
                .unwrap()
                .strip_suffix("\r\n")
                .unwrap();
            serde_json::from_str::<serde_json::Value>(json).unwrap()
        };
        let anonymous = json(&Identity::Anonymous);
        assert_eq!(anonymous["name"], "herald-edge e1");
        assert_eq!(anonymous["headers"], true);
        assert_eq!(anonymous["tls_required"], true);
        assert!(anonymous.get("user").is_none());
        let user = json(&Identity::UserPassword("u".into(), Password::new("p\"w")));
        assert_eq!(
            (&user["user"], &user["pass"]),
            (&"u".into(), &"p\"w".into())
        );
        let token = json(&Identity::Token(Password::new("t")));
        assert_eq!(token["auth_token"], "t");

        let key = Arc::new(KeyPair::new_user());
        let nkey = json(&Identity::Nkey(key.clone()));
        assert_eq!(nkey["nkey"], key.public_key());
        let sig = URL_SAFE_NO_PAD
            .decode(nkey["sig"].as_str().unwrap())
            .unwrap();
        assert!(key.verify(b"n0nce", &sig).is_ok());
        let jwt = Identity::Jwt {
            jwt: Password::new("a.b.c"),
            key: key.clone(),
        };
        assert_eq!(json(&jwt)["jwt"], "a.b.c");
        assert!(Identity::Nkey(key).connect_line("x", false, None).is_err());
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let debug = format!(
            "{:?}",
            Identity::UserPassword("u".into(), Password::new("hunter2"))
        );
        assert!(!debug.contains("hunter2"));
    }
}
