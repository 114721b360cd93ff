//! SSE framing: done once per event and shared by every recipient, so its
//! cost is per event, not per delivery.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herald_edge::sse;
use std::hint::black_box;

fn framing(c: &mut Criterion) {
    let small = b"{\"order\":42,\"status\":\"shipped\"}".to_vec();
    let large = vec![b'x'; 8 * 1024];
    let lines: Vec<u8> = (0..64)
        .flat_map(|i| format!("line {i}\r\n").into_bytes())
        .collect();
    let mut group = c.benchmark_group("sse event");
    for (name, data) in [
        ("32 B", &small),
        ("8 KiB", &large),
        ("64 lines, CRLF", &lines),
    ] {
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| sse::event(Some("order"), black_box(data)))
        });
    }
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
