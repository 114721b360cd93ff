//! Fan-out: one event framed once and handed to every local stream
//! following its subject, then taken off each stream's queue as the
//! stream's writer would. The cost that grows with the audience.

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use herald_edge::fanout::delivery::{ConnId, Delivery, Member, Members, hand_out};
use herald_edge::fanout::queue::{self, Receiver};
use herald_edge::fanout::signal::Signal;
use herald_edge::metrics::Metrics;
use herald_edge::sse;

/// An audience of `size` streams, each with its queue's receiving end.
fn audience(size: usize) -> (Members, Vec<Receiver<Delivery>>) {
    let mut members = Members::default();
    let mut queues = Vec::with_capacity(size);
    for id in 0..size as ConnId {
        let (queue, inbox) = queue::bounded(64);
        members.insert(
            id,
            Member {
                queue,
                signal: Signal::new(None, 0),
            },
        );
        queues.push(inbox);
    }
    (members, queues)
}

fn fan_out(c: &mut Criterion) {
    let data = Bytes::from_static(br#"{"match":7,"score":"2-1","minute":78}"#);
    let metrics = Metrics::default();
    let mut group = c.benchmark_group("fan-out one event");
    for size in [1_000, 10_000] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(format!("{size} streams"), |b| {
            b.iter_batched_ref(
                || audience(size),
                |(members, queues)| {
                    let delivery = Delivery {
                        frame: sse::event(Some("score"), &data),
                        position: Some((7, 42)),
                    };
                    hand_out(members, &delivery, &metrics);
                    for queue in queues.iter_mut() {
                        let taken = queue.try_recv().expect("delivered");
                        std::hint::black_box(taken);
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
