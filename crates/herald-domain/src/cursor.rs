//! Event ids: cursors over the history a connection follows.
//!
//! A connection follows its user stream and topics, which live in history
//! shards. Its position is, per followed subject, the stream sequence of
//! the last event of that subject it was sent. (One position per shard
//! would be smaller, but the edge receives each subject on its own
//! subscription, so two subjects of one shard can arrive out of sequence
//! order; a per-shard high-water mark would then skip the slower one.)
//! A subject is named by [`key`], a 32-bit hash of its live subject. Two
//! subjects with one key would share an entry (and one would resume at the
//! other's position, losing events); 32 bits make such a pair easy to
//! construct on purpose, so a connection must not follow both: see
//! [`collision`].
//!
//! The id is `v1` bytes — version, entry count, then (key, sequence) pairs
//! in increasing key order, all as LEB128 varints — in unpadded URL-safe
//! base64. Decoding is strict: anything `encode` could not have produced is
//! refused, so a cursor has exactly one spelling.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Current cursor format.
const VERSION: u8 = 1;
/// Most subjects a cursor may name: a user and its topics, on each
/// region's origin subject in a supercluster (see `region`).
pub const MAX_ENTRIES: usize = 128;
/// Longest encoded cursor accepted, in characters.
/// (128 entries of the largest key and sequence encode to 2,564.)
pub const MAX_ENCODED_LEN: usize = 2600;

/// The cursor key of a live subject: FNV-1a, stable across processes.
pub fn key(live_subject: &str) -> u32 {
    live_subject.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Two of `subjects` that differ but share a key, if any. A connection
/// whose followed subjects collide is refused: their events would share a
/// cursor entry and a resume would silently skip some of them.
pub fn collision<'a>(subjects: impl IntoIterator<Item = &'a str>) -> Option<(&'a str, &'a str)> {
    let mut keyed: Vec<(u32, &str)> = subjects.into_iter().map(|s| (key(s), s)).collect();
    keyed.sort_unstable();
    keyed
        .windows(2)
        .find(|w| w[0].0 == w[1].0 && w[0].1 != w[1].1)
        .map(|w| (w[0].1, w[1].1))
}

/// Positions per followed subject: the last stream sequence delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Sorted by key, one entry per key.
    entries: Vec<(u32, u64)>,
}

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("event id is longer than {MAX_ENCODED_LEN} characters")]
    TooLong,
    #[error("event id is not URL-safe base64")]
    Encoding,
    #[error("event id has an unknown version")]
    Version,
    #[error("event id is truncated or malformed")]
    Malformed,
}

impl Cursor {
    /// The last sequence delivered for subject `key`, if any.
    pub fn get(&self, key: u32) -> Option<u64> {
        self.search(key).ok().map(|i| self.entries[i].1)
    }

    /// Records that `seq` was delivered for subject `key`.
    pub fn set(&mut self, key: u32, seq: u64) {
        match self.search(key) {
            Ok(i) => self.entries[i].1 = seq,
            Err(i) => self.entries.insert(i, (key, seq)),
        }
    }

    /// Every (key, sequence) entry, in key order.
    pub fn entries(&self) -> &[(u32, u64)] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn search(&self, key: u32) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&key, |e| e.0)
    }

    /// The id, as sent in SSE `id:` lines.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(2 + self.entries.len() * 6);
        bytes.push(VERSION);
        put_varint(&mut bytes, self.entries.len() as u64);
        for &(key, seq) in &self.entries {
            put_varint(&mut bytes, u64::from(key));
            put_varint(&mut bytes, seq);
        }
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Parses an id from a client (`Last-Event-ID`); untrusted input.
    pub fn decode(id: &str) -> Result<Self, CursorError> {
        if id.len() > MAX_ENCODED_LEN {
            return Err(CursorError::TooLong);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(id)
            .map_err(|_| CursorError::Encoding)?;
        let (&version, mut rest) = bytes.split_first().ok_or(CursorError::Malformed)?;
        if version != VERSION {
            return Err(CursorError::Version);
        }
        let count = take_varint(&mut rest)?;
        if count > MAX_ENTRIES as u64 {
            return Err(CursorError::Malformed);
        }
        let mut entries: Vec<(u32, u64)> = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let key = u32::try_from(take_varint(&mut rest)?).map_err(|_| CursorError::Malformed)?;
            let seq = take_varint(&mut rest)?;
            if entries.last().is_some_and(|&(last, _)| last >= key) {
                return Err(CursorError::Malformed); // unsorted or repeated
            }
            entries.push((key, seq));
        }
        if !rest.is_empty() {
            return Err(CursorError::Malformed);
        }
        let cursor = Self { entries };
        // Refuse non-canonical spellings (e.g. trailing base64 bits).
        if cursor.encode() != id {
            return Err(CursorError::Encoding);
        }
        Ok(cursor)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads one minimal LEB128 varint of at most 64 bits.
fn take_varint(input: &mut &[u8]) -> Result<u64, CursorError> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = input.split_first().ok_or(CursorError::Malformed)?;
        *input = rest;
        let bits = u64::from(byte & 0x7f);
        if i == 9 && bits > 1 {
            return Err(CursorError::Malformed); // beyond 64 bits
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(CursorError::Malformed); // not minimal
            }
            return Ok(value);
        }
    }
    Err(CursorError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_and_stays_compact() {
        let mut cursor = Cursor::default();
        cursor.set(3, 1_000_000);
        cursor.set(0, 42);
        cursor.set(3, 1_000_001);
        assert_eq!(cursor.entries(), &[(0, 42), (3, 1_000_001)]);
        let id = cursor.encode();
        assert!(id.len() <= 16, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(Cursor::decode(&id), Ok(cursor));
        assert_eq!(
            Cursor::decode(&Cursor::default().encode()),
            Ok(Cursor::default())
        );
    }

    #[test]
    fn hostile_ids_are_refused() {
        let valid = {
            let mut c = Cursor::default();
            c.set(1, 300);
            c.encode()
        };
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let cases = [
            ("".to_owned(), CursorError::Malformed),
            ("!!!!".to_owned(), CursorError::Encoding),
            ("a b".to_owned(), CursorError::Encoding),
            ("x".repeat(MAX_ENCODED_LEN + 1), CursorError::TooLong),
            (b64(&[2, 0]), CursorError::Version),
            (b64(&[1]), CursorError::Malformed),
            (b64(&[1, 1, 1]), CursorError::Malformed),
            (b64(&[1, 2, 1, 5, 1, 6]), CursorError::Malformed), // repeated key
            (b64(&[1, 2, 2, 5, 1, 6]), CursorError::Malformed), // unsorted
            (b64(&[1, 1, 0, 5, 9]), CursorError::Malformed),    // trailing byte
            (b64(&[1, 1, 0, 0x85, 0x00]), CursorError::Malformed), // non-minimal varint
            (
                b64(&[
                    1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
                ]),
                CursorError::Malformed,
            ),
            (
                b64(&[1, 1, 0x80, 0x80, 0x80, 0x80, 0x10, 1]),
                CursorError::Malformed,
            ), // key > u32
            (b64(&[1, 65]), CursorError::Malformed),
            (format!("{valid}="), CursorError::Encoding),
            (valid[..valid.len() - 1].to_owned(), CursorError::Malformed),
        ];
        for (id, want) in cases {
            assert_eq!(Cursor::decode(&id), Err(want), "{id:?}");
        }
    }

    #[test]
    fn keys_follow_fnv1a() {
        // Published FNV-1a test vectors: a change would orphan every id in use.
        assert_eq!(key(""), 0x811c_9dc5);
        assert_eq!(key("a"), 0xe40c_292c);
        assert_eq!(key("foobar"), 0xbf9c_f968);
    }

    /// Two distinct subjects with one key, found by a birthday search
    /// (about 2^16 random names would do; these sequential ones take ~530k).
    fn colliding_pair() -> (String, String) {
        let mut seen = std::collections::HashMap::new();
        (0u32..)
            .map(|i| format!("herald.t.room-{i}"))
            .find_map(|s| seen.insert(key(&s), s.clone()).map(|other| (other, s)))
            .unwrap()
    }

    #[test]
    fn colliding_subjects_are_found() {
        let (a, b) = colliding_pair();
        assert_ne!(a, b);
        assert_eq!(key(&a), key(&b));
        let user = "herald.u.alice";
        let (x, y) = collision([user, a.as_str(), b.as_str()]).unwrap();
        assert!(
            (x, y) == (a.as_str(), b.as_str()) || (x, y) == (b.as_str(), a.as_str()),
            "{x} {y}"
        );
        assert_eq!(collision([user, a.as_str()]), None);
        assert_eq!(
            collision([a.as_str(), a.as_str()]),
            None,
            "the same subject twice is no collision"
        );
        assert_eq!(collision([]), None);
    }

    #[test]
    fn the_largest_sequence_survives() {
        let mut cursor = Cursor::default();
        cursor.set(u32::MAX, u64::MAX);
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
    }

    proptest! {
        #[test]
        fn any_cursor_round_trips(entries in proptest::collection::btree_map(any::<u32>(), any::<u64>(), 0..MAX_ENTRIES)) {
            let mut cursor = Cursor::default();
            for (key, seq) in entries {
                cursor.set(key, seq);
            }
            prop_assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let id = URL_SAFE_NO_PAD.encode(&bytes);
            if let Ok(cursor) = Cursor::decode(&id) {
                prop_assert_eq!(cursor.encode(), id);
            }
        }

        #[test]
        fn random_text_never_panics(id in "\\PC{0,80}") {
            let _ = Cursor::decode(&id);
        }
    }
}
