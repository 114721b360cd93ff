//! Any string a client sends as its token: verifying must never panic,
//! whatever its header, algorithm, base64 or JSON, and nothing unsigned or
//! signed with another key verifies.
#![no_main]

use herald_domain::auth::Authenticator;
use herald_domain::claims::Rules;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let rules = Rules {
        audience: Some("herald".into()),
        issuer: None,
        leeway: 30,
    };
    let auth = Authenticator::new(Some(b"fuzz-secret-0123456789-0123456789"), None, rules).unwrap();
    // The fuzzer cannot forge an HMAC: whatever it finds must be refused.
    assert!(auth.verify_at(token, 1_800_000_000).is_err());
});
