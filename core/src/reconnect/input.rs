//! The link's inputs as data, so a recorded `Vec<(Instant, Input<M>)>` replays a run exactly.

use super::{Cause, Reconnect};
use crate::error::UsageError;
use crate::id::{AttemptId, Token};
use crate::time::Instant;

/// One input to a [`Reconnect`] link: what each `handle_*` call takes, as a value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Input<M> {
    /// [`Reconnect::handle_start`].
    Start,
    /// [`Reconnect::handle_stop`].
    Stop,
    /// [`Reconnect::handle_connected`].
    Connected(AttemptId),
    /// [`Reconnect::handle_connect_failed`].
    ConnectFailed(AttemptId, Cause),
    /// [`Reconnect::handle_disconnected`].
    Disconnected(AttemptId, Cause),
    /// [`Reconnect::handle_subscribe`].
    Subscribe(Token),
    /// [`Reconnect::handle_unsubscribe`].
    Unsubscribe(Token),
    /// [`Reconnect::handle_send`].
    Send(M),
    /// [`Reconnect::handle_timeout`].
    Timeout,
}

impl<M> Reconnect<M> {
    /// Applies one recorded input (a replay helper; a refused send's message is dropped here,
    /// use [`Reconnect::handle_send`] to get it back).
    ///
    /// # Errors
    /// Whatever the matching `handle_*` call returns.
    pub fn handle(&mut self, now: Instant, input: Input<M>) -> Result<(), UsageError> {
        match input {
            Input::Start => self.handle_start(now),
            Input::Stop => self.handle_stop(now),
            Input::Connected(a) => self.handle_connected(now, a).map(drop),
            Input::ConnectFailed(a, c) => self.handle_connect_failed(now, a, c).map(drop),
            Input::Disconnected(a, c) => self.handle_disconnected(now, a, c).map(drop),
            Input::Subscribe(t) => self.handle_subscribe(now, t),
            Input::Unsubscribe(t) => self.handle_unsubscribe(now, t),
            Input::Send(m) => self.handle_send(now, m).map(drop).map_err(UsageError::from),
            Input::Timeout => {
                self.handle_timeout(now);
                Ok(())
            }
        }
    }
}
