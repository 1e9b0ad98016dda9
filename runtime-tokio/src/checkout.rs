//! The checkout future and the guard it yields.

use std::future::Future;
use std::io;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use moor_core::pool::{CheckoutError, FromCache};
use moor_core::{CheckoutId, ConnId, UsageError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::answer;
use crate::error::Error;
use crate::pool::{Answer, Inner, Watch};
use crate::stream::Stream;
use crate::target::Target;

/// A connection handed to a checkout (inside the driver, before it becomes a guard).
pub(crate) struct Lease {
    pub(crate) conn: ConnId,
    pub(crate) stream: Stream,
    pub(crate) watch: Watch,
    pub(crate) from_cache: FromCache,
}

/// The future returned by [`Pool::get`](crate::Pool::get). Dropping it cancels the checkout
/// wherever it is (queued, resolving, connecting); a connection that was already handed to it
/// goes back to the pool.
///
/// It borrows the pool and the target (as `Semaphore::acquire` does), so a checkout costs no
/// reference-count traffic; the [`Pooled`] guard it yields owns a handle and is `'static`.
///
/// # Panics
/// If polled again after it completed (as most futures do; `.await` never does that).
#[must_use = "a checkout does nothing unless awaited"]
pub struct Checkout<'a> {
    inner: &'a Arc<Inner>,
    step: Step<'a>,
}

enum Step<'a> {
    Start {
        target: &'a Target,
        timeout: Option<Duration>,
    },
    /// Queued in the core; the answer arrives in `answer` without the pool's lock.
    Waiting {
        checkout: CheckoutId,
        answer: answer::Receiver,
    },
    Done,
}

impl<'a> Checkout<'a> {
    pub(crate) fn new(
        inner: &'a Arc<Inner>,
        target: &'a Target,
        timeout: Option<Duration>,
    ) -> Checkout<'a> {
        Checkout {
            inner,
            step: Step::Start { target, timeout },
        }
    }
}

/// Turns an answer into the guard, which holds its own handle on the pool.
fn guard(inner: &Arc<Inner>, answer: Answer) -> Result<Pooled, Error> {
    answer.map(|lease| Pooled {
        inner: inner.clone(),
        lease: Some(lease),
        discard: false,
    })
}

impl Future for Checkout<'_> {
    type Output = Result<Pooled, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let inner = this.inner;
        match std::mem::replace(&mut this.step, Step::Done) {
            Step::Start { target, timeout } => {
                // Under contention the checkout will probably wait: allocate its slot and read
                // the clock (for its deadline) outside the lock.
                let likely_wait = inner.queue_hint.load(Ordering::Relaxed);
                let mut slot = likely_wait.then(|| answer::channel(cx.waker()));
                let (mut st, now) = if likely_wait {
                    inner.lock()
                } else {
                    inner.lock_for_hit(target)
                };
                // Report idle sockets that woke since the driver last ran, so a checkout does
                // not get one the reactor already knows is dead.
                inner.check_woken(&mut st);
                // Later if a woken socket made the pool read the clock.
                let now = now.max(st.last_now);
                let deadline = timeout.map(|d| now + d);
                let checkout = match st.core.handle_checkout(now, target, deadline) {
                    Ok(checkout) => checkout,
                    Err(UsageError::ShutDown) => {
                        drop(st);
                        let cause = inner.shutdown_cause();
                        return Poll::Ready(Err(Error::new(CheckoutError::Shutdown, cause)));
                    }
                    Err(e) => unreachable!("the clock is monotonic under the lock: {e}"),
                };
                // The cache-hit path: the answer is already in the core's queue.
                match inner.pump(&mut st, Some(checkout), None) {
                    Some(answer) => {
                        drop(st);
                        if slot.is_some() {
                            inner.queue_hint.store(false, Ordering::Relaxed);
                        }
                        Poll::Ready(guard(inner, answer))
                    }
                    None => {
                        // The slot holds this task's waker from the start: an answer that
                        // comes before this poll returns wakes it, and the next poll finds it.
                        let (tx, rx) = slot.take().unwrap_or_else(|| answer::channel(cx.waker()));
                        st.waiters.insert(checkout, tx);
                        drop(st);
                        if !inner.queue_hint.load(Ordering::Relaxed) {
                            inner.queue_hint.store(true, Ordering::Relaxed);
                        }
                        this.step = Step::Waiting {
                            checkout,
                            answer: rx,
                        };
                        Poll::Pending
                    }
                }
            }
            Step::Waiting {
                checkout,
                mut answer,
            } => match answer.poll(cx) {
                // The pool keeps every waiter's slot until it answers it.
                Poll::Ready(a) => Poll::Ready(guard(inner, a.expect("the pool answers"))),
                Poll::Pending => {
                    this.step = Step::Waiting { checkout, answer };
                    Poll::Pending
                }
            },
            Step::Done => panic!("a moor-tokio Checkout was polled after it completed"),
        }
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        let inner = self.inner;
        let Step::Waiting { checkout, answer } = &mut self.step else {
            return;
        };
        let (mut st, now) = inner.lock();
        // Still has its slot: not answered yet, so withdraw it.
        if st.waiters.remove(checkout).is_some() {
            st.core
                .handle_cancel(now, *checkout)
                .expect("an unanswered checkout is pending in the core");
            inner.pump(&mut st, None, None);
            return;
        }
        drop(st);
        // Answered: the answer is in the slot, or on its way (then the sender finds the slot
        // closed and checks the connection back in itself).
        if let Some(Ok(lease)) = answer.close() {
            // Answered but never delivered: the connection goes back, unused.
            inner.checkin(lease, false);
        }
    }
}

/// A checked-out connection. Derefs to the [`Stream`] and is itself `AsyncRead + AsyncWrite`.
/// Dropping it checks the connection back in (closed instead if it has unread data, EOF or an
/// error); [`Pooled::discard`] closes it.
///
/// Shutting the write side down through the guard (`AsyncWriteExt::shutdown`) marks the
/// connection not reusable. The pool cannot see what happens around it, so call
/// [`Pooled::discard`] yourself when you leave the stream in a state the next user must not
/// inherit: an exchange abandoned half way (a timeout around a read or a write), or a shutdown
/// made on the [`Stream`] or its socket directly.
pub struct Pooled {
    inner: Arc<Inner>,
    /// The connection, its stream and idle watch (taken on drop).
    lease: Option<Lease>,
    discard: bool,
}

impl Pooled {
    /// Where the connection came from: idle at checkout (`Immediate`), released by another
    /// user while this checkout waited (`Deferred`), or opened for it (`Fresh`).
    pub fn from_cache(&self) -> FromCache {
        self.lease().from_cache
    }

    /// The pool's id of this connection (stable for its whole life, never reused).
    pub fn conn_id(&self) -> ConnId {
        self.lease().conn
    }

    /// Closes the connection instead of returning it to the pool.
    pub fn discard(mut self) {
        self.discard = true;
    }

    /// Takes the stream out of the pool for good, for a protocol upgrade or a hand-over to
    /// code that owns its connections. The pool forgets it at once (its place is free for the
    /// next checkout); closing it is now the caller's business.
    pub fn detach(mut self) -> Stream {
        let lease = self.lease.take().expect("present until drop");
        self.inner.forget(lease.conn);
        lease.stream
    }

    /// Marks the connection as not reusable; it is closed when the guard drops.
    pub fn mark_broken(&mut self) {
        self.discard = true;
    }

    fn lease(&self) -> &Lease {
        self.lease.as_ref().expect("present until drop")
    }

    fn stream_mut(&mut self) -> &mut Stream {
        &mut self.lease.as_mut().expect("present until drop").stream
    }
}

impl Deref for Pooled {
    type Target = Stream;
    fn deref(&self) -> &Stream {
        &self.lease().stream
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Stream {
        self.stream_mut()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.inner.checkin(lease, self.discard);
        }
    }
}

impl std::fmt::Debug for Pooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled")
            .field("conn", &self.conn_id())
            .field("from_cache", &self.from_cache())
            .finish()
    }
}

impl std::fmt::Debug for Checkout<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Checkout")
    }
}

impl AsyncRead for Pooled {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Pooled {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream_mut()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream_mut()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        (**self).is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A connection whose write side is shut cannot carry another request, and the peer
        // may not say so in time for the health check: it goes when the guard drops.
        this.discard = true;
        Pin::new(this.stream_mut()).poll_shutdown(cx)
    }
}
