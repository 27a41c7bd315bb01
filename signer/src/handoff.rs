//! The two hand-offs between a caller and a signer thread: the member's bounded request
//! queue ([`bounded`]) and the one-shot answer ([`oneshot`]). A mutex and a condition
//! variable each: a waiting thread sleeps in the kernel at once and is woken by one
//! futex call when there is something for it.
//!
//! Why not crossbeam-channel here: its blocking receive first spins and then calls
//! `sched_yield` several times before it sleeps. With one signature in flight the
//! caller waits a whole C_Sign (60 µs for P-256 to milliseconds), so the spinning never
//! pays, and on a busy machine each yield can hand the CPU to another process for a
//! time slice. The errors are crossbeam's types, so callers match them as before.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crossbeam_channel::{RecvError, RecvTimeoutError, SendError, TryRecvError, TrySendError};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The critical sections below do not panic; a poisoned lock still holds valid state.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A bounded multi-producer, multi-consumer queue of `capacity` items.
pub(crate) fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let queue = Arc::new(Queue {
        state: Mutex::new(QueueState {
            items: VecDeque::with_capacity(capacity.min(1024)),
            senders: 1,
            sleeping: 0,
        }),
        ready: Condvar::new(),
        capacity: capacity.max(1),
    });
    (
        Sender {
            queue: Arc::clone(&queue),
        },
        Receiver { queue },
    )
}

struct Queue<T> {
    state: Mutex<QueueState<T>>,
    /// Signalled when an item is added or the last sender goes.
    ready: Condvar,
    capacity: usize,
}

struct QueueState<T> {
    items: VecDeque<T>,
    /// Live senders; at zero the queue is closed once it is empty.
    senders: usize,
    /// Receivers asleep in [`Receiver::recv`].
    sleeping: usize,
}

/// The sending side of [`bounded`]; the queue closes when the last one is dropped.
pub(crate) struct Sender<T> {
    queue: Arc<Queue<T>>,
}

impl<T> Sender<T> {
    /// Queue `item` unless the queue is full (never blocks).
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = lock(&self.queue.state);
        if state.items.len() >= self.queue.capacity {
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        let wake = state.sleeping > 0;
        drop(state);
        // Woken after the unlock, so the receiver does not wake into a held lock.
        if wake {
            self.queue.ready.notify_one();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        lock(&self.queue.state).senders += 1;
        Sender {
            queue: Arc::clone(&self.queue),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = lock(&self.queue.state);
        state.senders -= 1;
        if state.senders == 0 {
            drop(state);
            self.queue.ready.notify_all();
        }
    }
}

/// The receiving side of [`bounded`]; cloned, one per signer thread.
pub(crate) struct Receiver<T> {
    queue: Arc<Queue<T>>,
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Receiver {
            queue: Arc::clone(&self.queue),
        }
    }
}

impl<T> Receiver<T> {
    /// The next item, sleeping until there is one; an error once the queue is closed
    /// and empty.
    pub(crate) fn recv(&self) -> Result<T, RecvError> {
        let mut state = lock(&self.queue.state);
        loop {
            if let Some(item) = state.items.pop_front() {
                return Ok(item);
            }
            if state.senders == 0 {
                return Err(RecvError);
            }
            state.sleeping += 1;
            state = self
                .queue
                .ready
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
            state.sleeping -= 1;
        }
    }

    /// The next item if there is one now.
    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut state = lock(&self.queue.state);
        match state.items.pop_front() {
            Some(item) => Ok(item),
            None if state.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }
}

/// A channel for one value: a request's answer.
pub(crate) fn oneshot<T>() -> (Reply<T>, Answer<T>) {
    let slot = Arc::new(Slot {
        value: Mutex::new(Value::Empty),
        ready: Condvar::new(),
    });
    (
        Reply {
            slot: Some(Arc::clone(&slot)),
        },
        Answer { slot },
    )
}

struct Slot<T> {
    value: Mutex<Value<T>>,
    ready: Condvar,
}

enum Value<T> {
    Empty,
    Sent(T),
    /// The [`Reply`] was dropped without sending.
    Dropped,
    /// The value was taken (or the [`Answer`] is gone).
    Taken,
}

/// The sending side of [`oneshot`]. Dropping it unsent wakes the waiter with
/// `Disconnected`.
pub(crate) struct Reply<T> {
    slot: Option<Arc<Slot<T>>>,
}

impl<T> Reply<T> {
    /// Hand over the answer; an error when the waiter has already given up.
    pub(crate) fn send(mut self, value: T) -> Result<(), SendError<T>> {
        let slot = self.slot.take().expect("a Reply sends at most once");
        let mut current = lock(&slot.value);
        if matches!(*current, Value::Taken) {
            return Err(SendError(value));
        }
        *current = Value::Sent(value);
        drop(current);
        slot.ready.notify_one();
        Ok(())
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut current = lock(&slot.value);
            if matches!(*current, Value::Empty) {
                *current = Value::Dropped;
            }
            drop(current);
            slot.ready.notify_one();
        }
    }
}

/// The receiving side of [`oneshot`].
pub(crate) struct Answer<T> {
    slot: Arc<Slot<T>>,
}

impl<T> Answer<T> {
    /// Wait for the answer until `deadline`.
    pub(crate) fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        let mut current = lock(&self.slot.value);
        loop {
            match std::mem::replace(&mut *current, Value::Taken) {
                Value::Sent(value) => return Ok(value),
                Value::Dropped | Value::Taken => return Err(RecvTimeoutError::Disconnected),
                Value::Empty => *current = Value::Empty,
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RecvTimeoutError::Timeout);
            }
            current = self
                .slot
                .ready
                .wait_timeout(current, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl<T> Drop for Answer<T> {
    fn drop(&mut self) {
        // A late answer is dropped by its sender instead of waiting here.
        *lock(&self.slot.value) = Value::Taken;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn queue_is_bounded_and_closes_with_its_last_sender() {
        let (tx, rx) = bounded(2);
        tx.try_send(1).expect("room");
        tx.try_send(2).expect("room");
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        let tx2 = tx.clone();
        drop(tx);
        assert_eq!(rx.recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(tx2);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(rx.recv(), Err(RecvError));
    }

    #[test]
    fn a_sleeping_receiver_is_woken_by_a_send_and_by_the_close() {
        let (tx, rx) = bounded::<u32>(4);
        let rx2 = rx.clone();
        let t = std::thread::spawn(move || (rx2.recv(), rx2.recv()));
        std::thread::sleep(Duration::from_millis(20));
        tx.try_send(7).expect("room");
        drop(tx);
        assert_eq!(t.join().expect("thread"), (Ok(7), Err(RecvError)));
        drop(rx);
    }

    #[test]
    fn answer_arrives_times_out_or_is_lost() {
        let (reply, answer) = oneshot();
        let t = std::thread::spawn(move || reply.send(5));
        let got = answer.recv_deadline(Instant::now() + Duration::from_secs(10));
        assert_eq!(got, Ok(5));
        assert!(t.join().expect("thread").is_ok());

        let (reply, answer) = oneshot::<u8>();
        let got = answer.recv_deadline(Instant::now() + Duration::from_millis(10));
        assert_eq!(got, Err(RecvTimeoutError::Timeout));
        drop(answer);
        assert!(reply.send(1).is_err(), "the waiter is gone");

        let (reply, answer) = oneshot::<u8>();
        drop(reply);
        let got = answer.recv_deadline(Instant::now() + Duration::from_secs(10));
        assert_eq!(got, Err(RecvTimeoutError::Disconnected));
    }
}
