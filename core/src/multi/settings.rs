//! Per-connection settings changeable at run time: timeouts and codecs.

use alloc::boxed::Box;
use core::time::Duration;

use super::conn::{CODECS, Codecs, Nanos};
use super::{Multi, Phase};
use crate::codec::{Decoder, Encoder, Framing};
use crate::error::UsageError;
use crate::id::ConnId;
use crate::time::Instant;

impl<S> Multi<S> {
    /// Sets the timeout of the connection's current phase (the seed's `$_[CHEAP]->timeout`):
    /// the connect timeout while connecting, the input timeout after. The timer restarts from
    /// `now`; `None` or zero disables it.
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`]; [`UsageError::TimeWentBackwards`].
    pub fn set_timeout(
        &mut self,
        now: Instant,
        id: ConnId,
        timeout: Option<Duration>,
    ) -> Result<(), UsageError> {
        self.conn(now, id)?;
        self.commit(now);
        let c = self.conn_mut(id);
        c.since = now;
        let phase = c.phase;
        let cold = self.cold_mut(id);
        let nanos = Nanos::from_timeout(timeout);
        match phase {
            Phase::Connecting => cold.connect_timeout = nanos,
            Phase::Connected | Phase::Closing => cold.input_timeout = nanos,
        }
        self.rearm_id(id);
        Ok(())
    }

    /// Sets the input timeout whatever the phase: while connecting it applies once connected;
    /// after, it restarts from `now`. `None` or zero disables it.
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`]; [`UsageError::TimeWentBackwards`].
    pub fn set_input_timeout(
        &mut self,
        now: Instant,
        id: ConnId,
        timeout: Option<Duration>,
    ) -> Result<(), UsageError> {
        self.conn(now, id)?;
        self.commit(now);
        self.cold_mut(id).input_timeout = Nanos::from_timeout(timeout);
        let c = self.conn_mut(id);
        if c.phase != Phase::Connecting {
            c.since = now;
            self.rearm_id(id);
        }
        Ok(())
    }

    /// The timeout of the connection's current phase, `None` if disabled.
    #[must_use]
    pub fn timeout(&self, id: ConnId) -> Option<Duration> {
        let c = self.conns.get(id.to_raw())?;
        let cold = self.colds.get(id.to_raw())?;
        match c.phase {
            Phase::Connecting => cold.connect_timeout.to_timeout(),
            Phase::Connected | Phase::Closing => cold.input_timeout.to_timeout(),
        }
    }

    /// Switches both codecs of a connection to a built-in framing (the seed's `filter`). Bytes
    /// already received but not yet decoded are decoded with the new framing.
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`]; [`UsageError::TimeWentBackwards`].
    pub fn set_framing(
        &mut self,
        now: Instant,
        id: ConnId,
        framing: Framing,
    ) -> Result<(), UsageError> {
        self.conn(now, id)?;
        self.commit(now);
        self.cold_mut(id).codecs = Some(Box::new(Codecs {
            decoder: Box::new(framing),
            encoder: Box::new(framing),
        }));
        self.conn_mut(id).flags |= CODECS;
        self.decoder_changed(id);
        Ok(())
    }

    /// Switches a connection's input codec (the seed's `input_filter`). Bytes already received
    /// but not yet decoded are decoded with the new codec.
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`]; [`UsageError::TimeWentBackwards`].
    pub fn set_decoder(
        &mut self,
        now: Instant,
        id: ConnId,
        decoder: Box<dyn Decoder>,
    ) -> Result<(), UsageError> {
        self.conn(now, id)?;
        self.commit(now);
        self.codecs_mut(id).decoder = decoder;
        self.decoder_changed(id);
        Ok(())
    }

    /// Switches a connection's output codec (the seed's `output_filter`); frames already queued
    /// stay as they were encoded.
    ///
    /// # Errors
    /// [`UsageError::UnknownConn`]; [`UsageError::TimeWentBackwards`].
    pub fn set_encoder(
        &mut self,
        now: Instant,
        id: ConnId,
        encoder: Box<dyn Encoder>,
    ) -> Result<(), UsageError> {
        self.conn(now, id)?;
        self.commit(now);
        self.codecs_mut(id).encoder = encoder;
        Ok(())
    }

    /// The connection's own codecs, made from the engine's framing on first use; marks the
    /// connection so the hot path knows to look them up.
    fn codecs_mut(&mut self, id: ConnId) -> &mut Codecs {
        let framing = self.config.framing;
        self.conn_mut(id).flags |= CODECS;
        self.cold_mut(id).codecs.get_or_insert_with(|| {
            Box::new(Codecs {
                decoder: Box::new(framing),
                encoder: Box::new(framing),
            })
        })
    }
}
