//! A stream's bounded event queue that holds no memory while it is empty.
//!
//! Most streams are idle most of the time. tokio's `mpsc` allocates its
//! first block of 32 slots when the channel is made (~1.8 KiB for a
//! `Delivery` queue), whether or not anything is ever queued; here the
//! buffer is allocated by the first event queued and given back once a
//! burst has drained. One consumer (the stream), many producers (the
//! subject tasks of the subjects it follows).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

/// A drained buffer larger than this is freed rather than kept: the
/// memory of a burst comes back, while a stream that gets an event now
/// and then keeps its few slots instead of allocating for each.
const KEEP_SLOTS: usize = 8;

/// Why an item was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError {
    /// The queue holds its capacity: the consumer is too slow.
    Full,
    /// The consumer is gone.
    Closed,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Wakes the consumer, which registers before it looks at `state`:
    /// nothing queued in between is missed.
    ready: AtomicWaker,
}

struct State<T> {
    items: VecDeque<T>,
    capacity: usize,
    senders: usize,
    receiving: bool,
}

/// Queues items for the one [`Receiver`]; cheap to clone.
pub struct Sender<T>(Arc<Shared<T>>);

/// Takes items in the order they were queued.
pub struct Receiver<T>(Arc<Shared<T>>);

/// A queue of at most `capacity` items.
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            capacity,
            senders: 1,
            receiving: true,
        }),
        ready: AtomicWaker::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `item` without waiting.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError> {
        let mut state = self.0.state.lock().unwrap();
        if !state.receiving {
            return Err(TrySendError::Closed);
        }
        if state.items.len() >= state.capacity {
            return Err(TrySendError::Full);
        }
        state.items.push_back(item);
        drop(state);
        self.0.ready.wake();
        Ok(())
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queued = self.0.state.lock().unwrap().items.len();
        f.debug_struct("Sender").field("queued", &queued).finish()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.state.lock().unwrap().senders += 1;
        Self(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap();
        state.senders -= 1;
        if state.senders == 0 {
            drop(state);
            self.0.ready.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// The next item; `None` once every sender is gone and all is taken.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.ready.register(cx.waker());
        match self.take() {
            Ok(item) => Poll::Ready(Some(item)),
            Err(0) => Poll::Ready(None),
            Err(_) => Poll::Pending,
        }
    }

    /// [`Receiver::poll_recv`] as a future.
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next item if one is queued now.
    pub fn try_recv(&mut self) -> Option<T> {
        self.take().ok()
    }

    /// An item, or the number of senders left.
    fn take(&mut self) -> Result<T, usize> {
        let mut state = self.0.state.lock().unwrap();
        let item = state.items.pop_front();
        if state.items.is_empty() && state.items.capacity() > KEEP_SLOTS {
            state.items = VecDeque::new();
        }
        item.ok_or(state.senders)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap();
        state.receiving = false;
        // Queued items may hold memory shared with other streams' frames.
        state.items = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_idle_queue_holds_no_buffer_and_a_drained_burst_gives_it_back() {
        let (tx, mut rx) = bounded::<u64>(64);
        assert_eq!(rx.0.state.lock().unwrap().items.capacity(), 0);
        for i in 0..40 {
            tx.try_send(i).unwrap();
        }
        let taken: Vec<u64> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(taken, (0..40).collect::<Vec<_>>());
        assert_eq!(rx.0.state.lock().unwrap().items.capacity(), 0);
    }

    #[test]
    fn a_full_queue_refuses_and_a_gone_receiver_closes() {
        let (tx, rx) = bounded::<u8>(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(TrySendError::Full));
        drop(rx);
        assert_eq!(tx.try_send(4), Err(TrySendError::Closed));
    }

    #[tokio::test]
    async fn the_receiver_wakes_for_items_and_ends_after_the_last_sender() {
        let (tx, mut rx) = bounded::<u32>(8);
        let other = tx.clone();
        let waiting = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(item) = rx.recv().await {
                got.push(item);
            }
            got
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.try_send(1).unwrap();
        other.try_send(2).unwrap();
        drop(tx);
        tokio::time::sleep(Duration::from_millis(20)).await;
        other.try_send(3).unwrap();
        drop(other);
        let got = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(got.unwrap().unwrap(), [1, 2, 3]);
    }
}
