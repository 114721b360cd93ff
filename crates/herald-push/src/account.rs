//! The Firebase service-account key file the worker signs in with: read
//! and checked at start, its private key never logged. A leaf module: the
//! flags read it, the FCM client signs with it.

use serde::Deserialize;

/// Why a service-account key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path} is not a service-account key: {error}")]
    NotAnAccount {
        path: String,
        error: serde_json::Error,
    },
    #[error("{path}: private_key is not an RSA key in PEM: {error}")]
    NotRsa {
        path: String,
        error: jsonwebtoken::errors::Error,
    },
}

/// The fields of a Google service-account key file the worker uses.
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".to_owned()
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("project_id", &self.project_id)
            .finish_non_exhaustive() // never the key
    }
}

impl ServiceAccount {
    /// Reads and checks a key file; the error says what is wrong with it.
    pub fn read(path: &str) -> Result<Self, AccountError> {
        let text = std::fs::read_to_string(path).map_err(|error| AccountError::Read {
            path: path.to_owned(),
            error,
        })?;
        let account: Self =
            serde_json::from_str(&text).map_err(|error| AccountError::NotAnAccount {
                path: path.to_owned(),
                error,
            })?;
        jsonwebtoken::EncodingKey::from_rsa_pem(account.private_key.as_bytes()).map_err(
            |error| AccountError::NotRsa {
                path: path.to_owned(),
                error,
            },
        )?;
        Ok(account)
    }
}
