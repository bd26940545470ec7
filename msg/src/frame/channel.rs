//! Frames over a channel: [`FrameReader`] and [`FrameWriter`], which add waiting (the
//! channel's mode, spin policy and timeout), the notify protocol and peer liveness to the
//! ring-level protocol of [`super::core`].

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use vchan_ring::{Consumer, Producer};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::core::{
    Frame, LocateError, Located, Release, Staged, check_suitable, copy_frame, deliver_batch,
    fill_with_bytes, head_offset, locate, look_or_request, stage_frame, tail_offset,
    try_stage_bytes,
};
use super::error::{FrameError, Malformation};
use super::view::FrameBuf;
use super::wire::{is_reserved_tag, max_payload};
use crate::channel::{Endpoint, ReadHalf, ShutdownHandle, Vchan, WriteHalf};
use crate::config::Mode;
use crate::error::Error;

impl Vchan {
    /// Turns the channel into a frame reader and a frame writer (see [`crate::frame`]). Both
    /// ends must use frames from the start.
    pub fn into_frames(self) -> Result<(FrameReader, FrameWriter), FrameError> {
        let (r, w) = self.split();
        Ok((FrameReader::new(r)?, FrameWriter::new(w)?))
    }
}

/// Receives frames from a channel: borrowed in place ([`recv`](FrameReader::recv)), copied
/// into a type ([`recv_copy`](FrameReader::recv_copy)), or in batches with one publish
/// ([`recv_batch`](FrameReader::recv_batch)).
///
/// Waits as the channel half's [`Mode`], spin policy and timeout say; ends with an error when
/// the peer closes (after every frame it sent was received), dies, or is destroyed. A
/// malformed frame fails with [`FrameError::Malformed`] — then, and for every later call —
/// and shuts the channel down (its writer half fails with [`Error::Closed`]).
pub struct FrameReader {
    half: ReadHalf,
    fault: Option<(u32, Malformation)>,
    deferred: Option<FrameError>,
}

impl FrameReader {
    /// Reads frames from `half`, which must not have carried stream bytes before.
    pub fn new(mut half: ReadHalf) -> Result<FrameReader, FrameError> {
        let offset = head_offset(&mut half.rx).map_err(|e| half.ep.corrupt(e))?;
        check_suitable(half.rx.capacity(), offset)?;
        Ok(FrameReader {
            half,
            fault: None,
            deferred: None,
        })
    }

    fn check(&mut self) -> Result<(), FrameError> {
        if let Some((offset, problem)) = self.fault {
            return Err(FrameError::Malformed { offset, problem });
        }
        match self.deferred.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Maps a failed look: a malformed frame is noted in `fault` (and reported as the
    /// placeholder [`Error::Closed`], which the caller replaces).
    fn look_error(ep: &Endpoint, fault: &mut Option<(u32, Malformation)>, e: LocateError) -> Error {
        match e {
            LocateError::Ring(e) => ep.corrupt(e),
            LocateError::Malformed { offset, problem } => {
                *fault = Some((offset, problem));
                Error::Closed
            }
        }
    }

    /// One look for a frame, without giving anything back.
    fn locate(
        ep: &Endpoint,
        rx: &mut Consumer,
        fault: &mut Option<(u32, Malformation)>,
    ) -> crate::Result<Option<Located>> {
        locate(rx).map_err(|e| Self::look_error(ep, fault, e))
    }

    fn attempt(
        ep: &Endpoint,
        rx: &mut Consumer,
        request: bool,
        fault: &mut Option<(u32, Malformation)>,
    ) -> crate::Result<Option<Located>> {
        if ep.is_shut_down() {
            return Err(ep.stopped());
        }
        // The look, the publish of a skip marker stepped over, and the request for a signal
        // are one protocol, shared with the ring-level reader and tested there against a
        // writer acting at every step (see `look_or_request` for the lost wake-up it avoids).
        let look = look_or_request(rx, &ep.own_flag(), &ep.peer_flag(), request)
            .map_err(|e| Self::look_error(ep, fault, e))?;
        if look.signal {
            ep.waiter.notify_peer()?;
        }
        if let Some(found) = look.found {
            return Ok(Some(found));
        }
        match ep.peer_failure() {
            None => Ok(None),
            // The peer publishes before it leaves: look once more, so that no frame it sent
            // is lost.
            Some(failure) => match Self::locate(ep, rx, fault)? {
                Some(found) => Ok(Some(found)),
                None => Err(failure),
            },
        }
    }

    /// Waits (as `mode` says) for the next frame.
    fn wait_frame(&mut self, mode: Mode) -> Result<Located, FrameError> {
        self.check()?;
        // The fast path: a frame is there (no waiting machinery). Finding none, it may have
        // stepped over a skip marker without giving its space back: the attempt below does
        // (`look_or_request`), before any sleep.
        if !self.half.ep.is_shut_down() {
            let mut fault = None;
            match Self::locate(&self.half.ep, &mut self.half.rx, &mut fault) {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => {}
                Err(e) => {
                    if let Some((offset, problem)) = fault {
                        self.fault = Some((offset, problem));
                        self.half.ep.shutdown();
                        return Err(FrameError::Malformed { offset, problem });
                    }
                    return Err(e.into());
                }
            }
        }
        let saved = self.half.mode();
        self.half.set_mode(mode);
        let mut fault = None;
        let result = {
            let (waiting, rx) = self.half.waiting();
            let ep = waiting.ep;
            waiting.run(|request| Self::attempt(ep, rx, request, &mut fault))
        };
        self.half.set_mode(saved);
        if let Some((offset, problem)) = fault {
            self.fault = Some((offset, problem));
            self.half.ep.shutdown();
            return Err(FrameError::Malformed { offset, problem });
        }
        Ok(result?)
    }

    /// The next frame, borrowed in place (waiting for it as the mode says: in non-blocking
    /// mode, [`Error::WouldBlock`] when none is ready). Dropping it gives its space back to
    /// the writer (and signals the writer if it waits for space).
    pub fn recv(&mut self) -> Result<Frame<'_>, FrameError> {
        let mode = self.half.mode();
        let loc = self.wait_frame(mode)?;
        Ok(Frame::new(loc, self, true))
    }

    /// The next frame if one is ready, without waiting in any mode (asks the writer to
    /// signal the channel's fd otherwise, for callers that poll it).
    pub fn try_recv(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        match self.wait_frame(Mode::NonBlocking) {
            Ok(loc) => Ok(Some(Frame::new(loc, self, true))),
            Err(FrameError::Channel(Error::WouldBlock)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The next frame copied into a `T` (one fetch of the shared bytes), with its tag. A
    /// frame whose length differs from `size_of::<T>()` fails with
    /// [`FrameError::LengthMismatch`] and stays in the ring (receive it with
    /// [`recv`](FrameReader::recv) to see what it is).
    pub fn recv_copy<T: FromBytes>(&mut self) -> Result<(u32, T), FrameError> {
        let frame = self.recv()?;
        copy_frame(frame)
    }

    /// Receives a batch: waits (as the mode says) for one frame, then hands it and every
    /// other frame already published, up to `max`, to `each`, and gives their space back with
    /// one publish (and at most one signal) at the end. Returns how many frames `each` got.
    ///
    /// After the wait, the writer's index is loaded once for the batch and the frames are
    /// walked with a private cursor (each header fetched once and validated as for
    /// [`recv`](FrameReader::recv)). A frame `each` keeps from being dropped
    /// (`mem::forget`) or [`unread`](Frame::unread)s ends the batch and stays in the ring.
    /// A malformed frame after some good ones ends the batch with its error (the good ones
    /// were delivered).
    pub fn recv_batch(
        &mut self,
        max: usize,
        mut each: impl FnMut(Frame<'_>),
    ) -> Result<usize, FrameError> {
        if max == 0 {
            return Ok(0);
        }
        let mode = self.half.mode();
        let first = self.wait_frame(mode)?;
        let ep = &*self.half.ep;
        let (count, outcome) = deliver_batch(&mut self.half.rx, first, max, &mut each);
        let outcome = match outcome {
            Ok(()) => Ok(()),
            Err(LocateError::Malformed { offset, problem }) => {
                self.fault = Some((offset, problem));
                ep.shutdown();
                Err(FrameError::Malformed { offset, problem })
            }
            Err(LocateError::Ring(e)) => Err(ep.corrupt(e).into()),
        };
        if self.half.rx.publish_and_check(&ep.own_flag()) {
            ep.waiter.notify_peer()?;
        }
        outcome?;
        self.check()?;
        Ok(count)
    }

    /// The ring size.
    pub fn capacity(&self) -> usize {
        self.half.capacity()
    }

    /// The largest payload one frame can carry.
    pub fn max_payload(&self) -> usize {
        max_payload(self.half.capacity())
    }

    /// Blocking or non-blocking receives.
    pub fn set_mode(&mut self, mode: Mode) {
        self.half.set_mode(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.half.mode()
    }

    /// Limits every blocking receive (`None`: no limit).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.half.set_timeout(timeout);
    }

    /// Whether the peer is still there.
    pub fn is_open(&self) -> bool {
        self.half.is_open()
    }

    /// See [`Vchan::shutdown_handle`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.half.shutdown_handle()
    }

    /// The channel half underneath.
    pub fn into_inner(self) -> ReadHalf {
        self.half
    }
}

impl Release for FrameReader {
    fn release(&mut self, footprint: u32, publish: bool) -> Result<(), FrameError> {
        let ep = &*self.half.ep;
        let rx = &mut self.half.rx;
        rx.consume(footprint as usize).map_err(|e| ep.corrupt(e))?;
        if publish && rx.publish_and_check(&ep.own_flag()) {
            ep.waiter.notify_peer()?;
        }
        Ok(())
    }

    fn defer(&mut self, error: FrameError) {
        self.deferred.get_or_insert(error);
    }
}

impl fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameReader")
            .field("half", &self.half)
            .field("fault", &self.fault)
            .finish_non_exhaustive()
    }
}

/// Sends frames on a channel: typed values copied straight into the ring
/// ([`send`](FrameWriter::send)), payloads written in place
/// ([`send_with`](FrameWriter::send_with), [`send_from_fd`](FrameWriter::send_from_fd)),
/// and batches published at once ([`batch`](FrameWriter::batch)).
///
/// Waits for space as the channel half's [`Mode`], spin policy and timeout say. A payload
/// larger than the ring can carry ([`max_payload`](FrameWriter::max_payload)) is refused with
/// [`FrameError::TooLarge`]: split it, use a larger ring, or send it as a byte stream.
pub struct FrameWriter {
    half: WriteHalf,
    deferred: Option<FrameError>,
}

impl FrameWriter {
    /// Writes frames to `half`, which must not have carried stream bytes before.
    pub fn new(mut half: WriteHalf) -> Result<FrameWriter, FrameError> {
        let offset = tail_offset(&mut half.tx).map_err(|e| half.ep.corrupt(e))?;
        check_suitable(half.tx.capacity(), offset)?;
        Ok(FrameWriter {
            half,
            deferred: None,
        })
    }

    fn check(&mut self, tag: u32, max_len: usize) -> Result<(), FrameError> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        if is_reserved_tag(tag) {
            return Err(FrameError::ReservedTag { tag });
        }
        let max = self.max_payload();
        if max_len > max {
            return Err(FrameError::TooLarge { len: max_len, max });
        }
        Ok(())
    }

    /// Publishes what is staged; signals the peer if it asked.
    fn publish(ep: &Endpoint, tx: &mut Producer) -> crate::Result<()> {
        if tx.publish_and_check(&ep.own_flag()) {
            ep.waiter.notify_peer()?;
        }
        Ok(())
    }

    /// Stages one frame, waiting for space as the mode says; publishes it if `publish`.
    fn put<F, E>(
        &mut self,
        tag: u32,
        max_len: usize,
        fill: F,
        publish: bool,
    ) -> Result<usize, FrameError>
    where
        F: FnOnce(&mut FrameBuf<'_>) -> Result<usize, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.check(tag, max_len)?;
        let mut fill = Some(fill);
        let mut failure: Option<FrameError> = None;
        let result = {
            let (waiting, tx) = self.half.waiting();
            let ep = waiting.ep;
            waiting.run(|request| {
                if ep.is_shut_down() {
                    return Err(ep.stopped());
                }
                // Three rounds at most: a skip marker, then the frame, each possibly after
                // space appeared.
                for _ in 0..3 {
                    let Some(f) = fill.take() else {
                        return Err(Error::Closed);
                    };
                    match stage_frame(tx, tag, max_len, f) {
                        Ok(Staged::Done(n)) => {
                            if publish {
                                Self::publish(ep, tx)?;
                            }
                            return Ok(Some(n));
                        }
                        Ok(Staged::NeedSpace(need, f)) => {
                            fill = Some(f);
                            // Make what is staged visible before waiting, or the reader
                            // could wait for it while we wait for space.
                            if tx.staged() > 0 {
                                Self::publish(ep, tx)?;
                            }
                            if let Some(gone) = ep.peer_failure() {
                                return Err(gone);
                            }
                            if !request {
                                return Ok(None);
                            }
                            let free = tx
                                .space_or_request(need, &ep.peer_flag())
                                .map_err(|e| ep.corrupt(e))?;
                            if free < need {
                                return Ok(None);
                            }
                        }
                        Err(FrameError::Ring(e)) => return Err(ep.corrupt(e)),
                        Err(e) => {
                            failure = Some(e);
                            return Err(Error::Closed);
                        }
                    }
                }
                Ok(None)
            })
        };
        match failure {
            Some(e) => Err(e),
            None => Ok(result?),
        }
    }

    /// Sends one frame holding `value`'s bytes, copied straight into the ring (no
    /// intermediate buffer), published and signalled at once.
    ///
    /// ```no_run
    /// # fn demo(mut w: vchan_msg::frame::FrameWriter) -> Result<(), vchan_msg::frame::FrameError> {
    /// use zerocopy::{Immutable, IntoBytes};
    /// #[derive(IntoBytes, Immutable)]
    /// #[repr(C)]
    /// struct Ping { seq: u64, sent_ns: u64 }
    /// w.send(1, &Ping { seq: 7, sent_ns: 0 })?;
    /// w.send(2, b"raw bytes work too")?;
    /// # Ok(()) }
    /// ```
    pub fn send<T: IntoBytes + Immutable + ?Sized>(
        &mut self,
        tag: u32,
        value: &T,
    ) -> Result<(), FrameError> {
        if let Some(gone) = self.half.ep.peer_failure() {
            return Err(gone.into());
        }
        let bytes = value.as_bytes();
        if self.stage_now(tag, bytes)? {
            return Ok(Self::publish(&self.half.ep, &mut self.half.tx)?);
        }
        self.put(tag, bytes.len(), fill_with_bytes(bytes), true)
            .map(|_| ())
    }

    /// The fast path of a typed send: stages a frame holding `bytes` if it fits now before
    /// the ring's end, without the waiting machinery. `Ok(false)`: take [`Self::put`] (it
    /// did not fit, or there is an error to report, which `put` does).
    #[inline]
    fn stage_now(&mut self, tag: u32, bytes: &[u8]) -> Result<bool, FrameError> {
        let ep = &*self.half.ep;
        if self.deferred.is_some()
            || is_reserved_tag(tag)
            || bytes.len() > max_payload(self.half.tx.capacity())
            || ep.is_shut_down()
        {
            return Ok(false);
        }
        try_stage_bytes(&mut self.half.tx, tag, bytes).map_err(|e| ep.corrupt(e).into())
    }

    /// Sends one frame whose payload `fill` writes in place: `max_len` bytes are reserved,
    /// `fill` writes and returns the actual length (at most `max_len`), and the frame is
    /// committed, published and signalled. `fill` runs once, only when the space is there;
    /// if it fails, nothing is sent. Returns the payload length.
    pub fn send_with<F, E>(
        &mut self,
        tag: u32,
        max_len: usize,
        fill: F,
    ) -> Result<usize, FrameError>
    where
        F: FnOnce(&mut FrameBuf<'_>) -> Result<usize, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let Some(gone) = self.half.ep.peer_failure() {
            return Err(gone.into());
        }
        self.put(tag, max_len, fill, true)
    }

    /// Sends one frame filled by one `read(2)` from `fd` straight into the ring (up to
    /// `max_len` bytes; no bounce buffer). Returns the payload length: 0 means end of file
    /// (an empty frame was sent). A non-blocking fd with no data fails with
    /// [`FrameError::Io`] of kind [`std::io::ErrorKind::WouldBlock`] and sends nothing.
    pub fn send_from_fd(
        &mut self,
        tag: u32,
        fd: BorrowedFd<'_>,
        max_len: usize,
    ) -> Result<usize, FrameError> {
        self.send_with(tag, max_len, |buf| {
            buf.read_from_fd(0, fd).map_err(|source| FrameError::Io {
                op: "read(2) into a frame",
                source,
            })
        })
    }

    /// Starts a batch: frames staged through it become visible together, with one publish
    /// and at most one signal, when it is [`finish`](Batch::finish)ed or dropped. (If the
    /// ring fills up mid-batch, what is staged is published before waiting for space.)
    ///
    /// ```no_run
    /// # fn demo(mut w: vchan_msg::frame::FrameWriter) -> Result<(), vchan_msg::frame::FrameError> {
    /// let mut batch = w.batch()?;
    /// for i in 0u64..100 {
    ///     batch.send(1, &i)?;
    /// }
    /// batch.finish()?;
    /// # Ok(()) }
    /// ```
    pub fn batch(&mut self) -> Result<Batch<'_>, FrameError> {
        if let Some(gone) = self.half.ep.peer_failure() {
            return Err(gone.into());
        }
        Ok(Batch {
            writer: self,
            frames: 0,
            done: false,
        })
    }

    /// Waits until the peer has received everything sent (see [`WriteHalf::drain`]).
    pub fn drain(&mut self, timeout: Option<Duration>) -> Result<(), FrameError> {
        Ok(self.half.drain(timeout)?)
    }

    /// The ring size.
    pub fn capacity(&self) -> usize {
        self.half.capacity()
    }

    /// The largest payload one frame can carry.
    pub fn max_payload(&self) -> usize {
        max_payload(self.half.capacity())
    }

    /// Blocking or non-blocking sends.
    pub fn set_mode(&mut self, mode: Mode) {
        self.half.set_mode(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.half.mode()
    }

    /// Limits every blocking send (`None`: no limit).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.half.set_timeout(timeout);
    }

    /// Whether the peer is still there.
    pub fn is_open(&self) -> bool {
        self.half.is_open()
    }

    /// See [`Vchan::shutdown_handle`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.half.shutdown_handle()
    }

    /// The channel half underneath.
    pub fn into_inner(self) -> WriteHalf {
        self.half
    }
}

impl fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameWriter")
            .field("half", &self.half)
            .finish_non_exhaustive()
    }
}

/// Frames staged together, published with one store and at most one signal (see
/// [`FrameWriter::batch`]).
pub struct Batch<'a> {
    writer: &'a mut FrameWriter,
    frames: usize,
    done: bool,
}

impl Batch<'_> {
    /// Stages a frame holding `value`'s bytes (waiting for space as the mode says).
    pub fn send<T: IntoBytes + Immutable + ?Sized>(
        &mut self,
        tag: u32,
        value: &T,
    ) -> Result<(), FrameError> {
        let bytes = value.as_bytes();
        if !self.writer.stage_now(tag, bytes)? {
            self.writer
                .put(tag, bytes.len(), fill_with_bytes(bytes), false)?;
        }
        self.frames += 1;
        Ok(())
    }

    /// Stages a frame written in place (see [`FrameWriter::send_with`]).
    pub fn send_with<F, E>(
        &mut self,
        tag: u32,
        max_len: usize,
        fill: F,
    ) -> Result<usize, FrameError>
    where
        F: FnOnce(&mut FrameBuf<'_>) -> Result<usize, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let n = self.writer.put(tag, max_len, fill, false)?;
        self.frames += 1;
        Ok(n)
    }

    /// Frames staged so far.
    pub fn len(&self) -> usize {
        self.frames
    }

    /// Whether nothing was staged.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Publishes the batch and signals the peer if it asked; returns the number of frames.
    pub fn finish(mut self) -> Result<usize, FrameError> {
        self.done = true;
        let w = &mut *self.writer;
        FrameWriter::publish(&w.half.ep, &mut w.half.tx)?;
        Ok(self.frames)
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if !self.done {
            let w = &mut *self.writer;
            if let Err(e) = FrameWriter::publish(&w.half.ep, &mut w.half.tx) {
                w.deferred.get_or_insert(e.into());
            }
        }
    }
}

impl fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

macro_rules! fd_impls {
    ($($t:ty),*) => {$(
        impl AsFd for $t {
            /// The channel's fd: readable when the peer has signalled (see [`Vchan`]'s).
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.half.as_fd()
            }
        }

        impl AsRawFd for $t {
            fn as_raw_fd(&self) -> RawFd {
                self.half.as_raw_fd()
            }
        }
    )*};
}

fd_impls!(FrameReader, FrameWriter);
