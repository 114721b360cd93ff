//! What a subscription costs in heap, here and as an async-nats
//! `Subscriber` (the figure this crate exists to cut), counted by a global
//! allocator that tracks live bytes. Prints both; asserts only a loose
//! bound on ours.

#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use common::*;
use herald_testing::NatsServer;

/// Bytes allocated and not yet freed, process-wide.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is only arithmetic on the sizes it was asked for.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: same layout, passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        // SAFETY: as for `dealloc`; the caller upholds `new_size` rules.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const N: usize = 20_000;

#[tokio::test(flavor = "current_thread")]
async fn a_subscription_costs_a_map_entry_not_a_channel() {
    let server = NatsServer::start();
    let subjects: Vec<String> = (0..N).map(|i| format!("herald.u.user{i:06}")).collect();

    let c = connect(&server.client_url()).await;
    c.subs.round_trip().await.unwrap();
    let before = LIVE.load(Relaxed);
    for subject in &subjects {
        c.subs.subscribe(subject);
    }
    c.subs.round_trip().await.unwrap();
    let ours = (LIVE.load(Relaxed) - before) as f64 / N as f64;

    let client = publisher(&server.client_url()).await;
    client.flush().await.unwrap();
    let before = LIVE.load(Relaxed);
    let mut held = Vec::with_capacity(N);
    for subject in &subjects {
        held.push(client.subscribe(subject.clone()).await.unwrap());
    }
    client.flush().await.unwrap();
    let theirs = (LIVE.load(Relaxed) - before) as f64 / N as f64;

    println!(
        "heap per subscription ({N}, subjects of {} bytes): herald-subscriptions {ours:.0} B, \
         async-nats Subscriber {theirs:.0} B (its task-per-subject poller not included)",
        subjects[0].len()
    );
    assert!(ours < 200.0, "{ours:.0} bytes per subscription");
}
