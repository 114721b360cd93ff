//! The event-id cursor codec: encoded once per delivered persisted event
//! (each stream's `id:` line), decoded once per resume.

use criterion::{Criterion, criterion_group, criterion_main};
use herald_domain::cursor::{Cursor, key};
use std::hint::black_box;

fn cursor(entries: u32) -> Cursor {
    let mut cursor = Cursor::default();
    for i in 0..entries {
        cursor.set(
            key(&format!("herald.t.topic-{i}")),
            1_000_000 + u64::from(i) * 7919,
        );
    }
    cursor
}

fn codec(c: &mut Criterion) {
    for entries in [1, 8, 32] {
        let cursor = cursor(entries);
        let id = cursor.encode();
        c.bench_function(&format!("cursor encode, {entries} subjects"), |b| {
            b.iter(|| black_box(&cursor).encode())
        });
        c.bench_function(&format!("cursor decode, {entries} subjects"), |b| {
            b.iter(|| Cursor::decode(black_box(&id)).unwrap())
        });
    }
    let mut cursor = cursor(8);
    let subject = key("herald.t.topic-3");
    c.bench_function("cursor advance + encode, 8 subjects", |b| {
        let mut seq = 2_000_000;
        b.iter(|| {
            seq += 1;
            cursor.set(subject, seq);
            black_box(cursor.encode())
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
