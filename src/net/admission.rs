//! Connection caps: a small budget for connections that have not authenticated yet, in
//! which the newest displaces the oldest, and a larger one for authenticated peers. Anyone
//! who can reach a port can hold sockets open; only peers that prove the token can hold
//! places that others need.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

struct Waiting {
    next_id: u64,
    /// Connections still authenticating, oldest first, each with the means to displace it.
    queue: VecDeque<(u64, oneshot::Sender<()>)>,
}

/// The two budgets of one server.
pub struct Admission {
    waiting: Mutex<Waiting>,
    max_waiting: usize,
    authenticated: Arc<Semaphore>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Admission {
    /// At most `max_waiting` connections authenticating and `max_authenticated` served.
    #[must_use]
    pub fn new(max_waiting: usize, max_authenticated: usize) -> Arc<Self> {
        Arc::new(Self {
            waiting: Mutex::new(Waiting {
                next_id: 0,
                queue: VecDeque::new(),
            }),
            max_waiting: max_waiting.max(1),
            authenticated: Arc::new(Semaphore::new(max_authenticated)),
        })
    }

    /// Admits a new connection to the authenticating budget; when it is full, the oldest
    /// connection still authenticating is displaced (its [`Ticket::displaced`] completes).
    #[must_use]
    pub fn admit(self: &Arc<Self>) -> Ticket {
        let (displace, displaced) = oneshot::channel();
        let mut waiting = lock(&self.waiting);
        while waiting.queue.len() >= self.max_waiting {
            if let Some((_, oldest)) = waiting.queue.pop_front() {
                let _ = oldest.send(());
            }
        }
        waiting.next_id += 1;
        let id = waiting.next_id;
        waiting.queue.push_back((id, displace));
        Ticket {
            admission: Arc::clone(self),
            id,
            displaced,
        }
    }

    /// Connections authenticating now.
    #[must_use]
    pub fn waiting(&self) -> usize {
        lock(&self.waiting).queue.len()
    }

    fn leave(&self, id: u64) {
        lock(&self.waiting)
            .queue
            .retain(|(waiting, _)| *waiting != id);
    }
}

/// A connection's place in the authenticating budget; dropping it gives the place back.
pub struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    displaced: oneshot::Receiver<()>,
}

impl Ticket {
    /// Completes once newer connections displaced this one: it should be refused.
    pub async fn displaced(&mut self) {
        // The sender is dropped unused only with this ticket's own entry, when it leaves.
        let _ = (&mut self.displaced).await;
    }

    /// The peer authenticated: it leaves the authenticating budget and takes a place in
    /// the authenticated one, if one is free (`None`: refuse it as busy).
    #[must_use]
    pub fn authenticated(self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.admission.authenticated)
            .try_acquire_owned()
            .ok()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.leave(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn is_displaced(ticket: &mut Ticket) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        pin!(ticket.displaced()).poll(&mut cx) == Poll::Ready(())
    }

    #[test]
    fn a_full_waiting_budget_displaces_its_oldest_and_authenticated_places_are_separate() {
        let admission = Admission::new(2, 1);
        let mut first = admission.admit();
        let mut second = admission.admit();
        assert!(!is_displaced(&mut first));
        let mut third = admission.admit();
        assert!(is_displaced(&mut first), "the oldest makes room");
        assert!(!is_displaced(&mut second) && !is_displaced(&mut third));
        assert_eq!(admission.waiting(), 2);
        let permit = third.authenticated().expect("a free authenticated place");
        assert_eq!(
            admission.waiting(),
            1,
            "authenticating frees the waiting place"
        );
        assert!(
            admission.admit().authenticated().is_none(),
            "the authenticated budget is full"
        );
        drop(permit);
        assert!(second.authenticated().is_some());
        drop(first);
        assert_eq!(admission.waiting(), 0);
    }
}
