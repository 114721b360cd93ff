//! `Last-Event-ID` is client input: decoding must never panic, and
//! whatever decodes must re-encode to exactly the same id.
#![no_main]

use herald_domain::cursor::Cursor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(id) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cursor) = Cursor::decode(id) {
        assert_eq!(cursor.encode(), id);
    }
});
