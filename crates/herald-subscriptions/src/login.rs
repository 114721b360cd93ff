//! Who this client is to NATS: the CONNECT line, with user and password,
//! a token, an NKey signing the server's nonce, or a user JWT from a
//! credentials file with its NKey seed.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_nats::connection::{ConnectError, Login, NatsSecurity, Password};
use herald_nats::keys::KeyLogin;
use nkeys::KeyPair;

/// How to log in; secrets never show in `Debug`.
#[derive(Clone)]
pub(crate) enum Identity {
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
    /// `login` is what [`herald_nats::connection::servers`] found.
    pub(crate) fn load(
        security: &NatsSecurity,
        login: Option<Login>,
    ) -> Result<Self, ConnectError> {
        match security.key_login()? {
            Some(KeyLogin::Jwt { jwt, key }) => {
                let jwt = Password::new(jwt);
                return Ok(Identity::Jwt { jwt, key });
            }
            Some(KeyLogin::Nkey(key)) => return Ok(Identity::Nkey(key)),
            None => {}
        }
        Ok(match login {
            Some(Login::UserPassword(user, password)) => Identity::UserPassword(user, password),
            Some(Login::Token(token)) => Identity::Token(token),
            None => Identity::Anonymous,
        })
    }

    /// The CONNECT operation (with its CRLF) answering a server whose INFO
    /// carried `nonce`.
    pub(crate) fn connect_line(
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

#[cfg(test)]
mod tests {
    use super::*;

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
