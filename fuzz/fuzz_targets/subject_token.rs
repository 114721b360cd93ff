//! User ids and topics come from tokens and publishers: encoding must give
//! one safe NATS token that decodes back to the same id.
#![no_main]

use herald_domain::subject::{decode_token, encode_token};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(id) = std::str::from_utf8(data) else {
        return;
    };
    let token = encode_token(id);
    assert!(!token.contains(['.', '*', '>', ' ', '\t', '\r', '\n']));
    assert_eq!(decode_token(&token).as_deref(), Some(id));
    if let Some(back) = decode_token(id) {
        assert_eq!(encode_token(&back), id);
    }
});
