//! The one-shot that carries "your events are on disk" from the journal
//! thread back to the core that queued them.
//!
//! A std `Mutex` holds the result and the waiting task's `Waker`; the
//! journal thread completes it and wakes the task (monoio's `sync` feature
//! makes a waker usable from another thread). The core awaits the
//! [`AckWait`]; it never blocks. A sender dropped without completing (the
//! journal thread stopped) answers [`AckError::Closed`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Why events were not made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    /// The journal holds `JOURNAL_MAX_MB`.
    Full,
    /// An fsync of the journal failed.
    Failed,
    /// The journal thread stopped before committing.
    Closed,
}

#[derive(Debug, Default)]
struct Slot {
    result: Option<Result<(), AckError>>,
    waker: Option<Waker>,
}

/// The journal thread's end.
#[derive(Debug)]
pub struct AckSender(Option<Arc<Mutex<Slot>>>);

/// The core's end: a future of the outcome.
#[derive(Debug)]
pub struct AckWait(Arc<Mutex<Slot>>);

/// A connected pair.
pub fn pair() -> (AckSender, AckWait) {
    let slot = Arc::new(Mutex::new(Slot::default()));
    (AckSender(Some(Arc::clone(&slot))), AckWait(slot))
}

impl AckSender {
    /// Completes the wait and wakes the waiting task.
    pub fn complete(mut self, result: Result<(), AckError>) {
        self.finish(result);
    }

    fn finish(&mut self, result: Result<(), AckError>) {
        let Some(slot) = self.0.take() else { return };
        let waker = match slot.lock() {
            Ok(mut s) => {
                s.result = Some(result);
                s.waker.take()
            }
            Err(poisoned) => {
                let mut s = poisoned.into_inner();
                s.result = Some(result);
                s.waker.take()
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for AckSender {
    fn drop(&mut self) {
        self.finish(Err(AckError::Closed));
    }
}

impl Future for AckWait {
    type Output = Result<(), AckError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = match self.0.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(r) = s.result {
            return Poll::Ready(r);
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_monoio_task_is_woken_from_another_thread() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let (tx, wait) = pair();
            let t = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                tx.complete(Ok(()));
            });
            let r = wait.await;
            t.join().unwrap();
            r
        });
        assert_eq!(got, Ok(()));
    }

    #[test]
    fn a_dropped_sender_answers_closed() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let (tx, wait) = pair();
            std::thread::spawn(move || drop(tx)).join().unwrap();
            wait.await
        });
        assert_eq!(got, Err(AckError::Closed));
        let (tx, wait) = pair();
        tx.complete(Err(AckError::Full));
        assert_eq!(
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .build()
                .unwrap()
                .block_on(wait),
            Err(AckError::Full)
        );
    }
}
