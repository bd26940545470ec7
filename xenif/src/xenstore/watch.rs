//! Watches: events delivered as a blocking iterator and through a pollable file descriptor.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::client::Shared;
use super::error::{Error, Result};
use super::wire::{self, MsgType};

/// Events one watch may have queued before further ones are dropped (and reported as
/// [`Error::EventsLost`]).
pub const WATCH_QUEUE_LIMIT: usize = 65536;

/// One watch event: `path` changed (relative if the watch was registered with a relative
/// path). The first event of every watch fires at registration with the watched path itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The node that changed (or the special path, e.g. `@releaseDomain`).
    pub path: String,
    /// The token given when registering the watch.
    pub token: String,
}

struct QueueState {
    events: VecDeque<WatchEvent>,
    lost: u64,
    closed: Option<String>,
}

/// The receiving end of one registered watch, fed by the client's reader thread.
pub(crate) struct WatchQueue {
    pub(crate) path: String,
    /// The caller's token.
    pub(crate) token: String,
    /// The token registered with xenstored (unique per registration).
    pub(crate) wire_token: String,
    state: Mutex<QueueState>,
    cv: Condvar,
    ready: EventFd,
}

impl WatchQueue {
    pub(crate) fn new(path: &str, token: &str, wire_token: &str) -> std::io::Result<WatchQueue> {
        let ready =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                .map_err(std::io::Error::from)?;
        Ok(WatchQueue {
            path: path.to_owned(),
            token: token.to_owned(),
            wire_token: wire_token.to_owned(),
            state: Mutex::new(QueueState {
                events: VecDeque::new(),
                lost: 0,
                closed: None,
            }),
            cv: Condvar::new(),
            ready,
        })
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, ev: WatchEvent) {
        let mut g = self.lock();
        if g.events.len() >= WATCH_QUEUE_LIMIT {
            g.lost += 1;
        } else {
            g.events.push_back(ev);
        }
        let _ = self.ready.write(1);
        self.cv.notify_all();
    }

    pub(crate) fn close(&self, reason: &str) {
        let mut g = self.lock();
        if g.closed.is_none() {
            g.closed = Some(reason.to_owned());
        }
        let _ = self.ready.write(1);
        self.cv.notify_all();
    }

    fn take(&self, g: &mut QueueState) -> Option<Result<WatchEvent>> {
        if g.lost > 0 {
            let lost = std::mem::take(&mut g.lost);
            return Some(Err(Error::EventsLost {
                path: self.path.clone(),
                token: self.token.clone(),
                lost,
            }));
        }
        if let Some(ev) = g.events.pop_front() {
            if g.events.is_empty() && g.closed.is_none() {
                // Nothing left: reset the descriptor's readiness (a counter read zeroes it).
                let _ = self.ready.read();
            }
            return Some(Ok(ev));
        }
        g.closed.as_ref().map(|reason| {
            Err(Error::Closed {
                op: MsgType::WatchEvent,
                path: self.path.clone(),
                reason: reason.clone(),
            })
        })
    }

    fn wait(&self, deadline: Option<Instant>) -> Result<Option<WatchEvent>> {
        let mut g = self.lock();
        loop {
            if let Some(r) = self.take(&mut g) {
                return r.map(Some);
            }
            match deadline {
                None => g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(None);
                    }
                    g = self
                        .cv
                        .wait_timeout(g, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
}

/// A registered watch. Created by [`Client::watch`](super::Client::watch); dropping it
/// unregisters it (`UNWATCH`).
///
/// Events arrive in order. Consume them with the blocking iterator, with
/// [`Watch::next_timeout`], or non-blockingly with [`Watch::try_next`] after the descriptor
/// ([`AsFd`]) polls readable — it is readable exactly while events (or the end of the
/// connection) are pending, so it fits an event loop. Events queue in the client while they
/// are not consumed, up to [`WATCH_QUEUE_LIMIT`]; beyond that they are dropped and the next
/// call reports [`Error::EventsLost`].
///
/// ```no_run
/// # fn main() -> vchan_xenif::xenstore::Result<()> {
/// let client = vchan_xenif::xenstore::Client::connect()?;
/// let watch = client.watch("@releaseDomain", "peer-death")?;
/// for event in watch {
///     let event = event?;
///     println!("{} fired ({})", event.path, event.token);
/// #   break;
/// }
/// # Ok(()) }
/// ```
pub struct Watch {
    pub(crate) shared: Arc<Shared>,
    pub(crate) queue: Arc<WatchQueue>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("path", &self.queue.path)
            .field("token", &self.queue.token)
            .finish()
    }
}

impl Watch {
    /// The watched path, as registered.
    pub fn path(&self) -> &str {
        &self.queue.path
    }

    /// The watch's token.
    pub fn token(&self) -> &str {
        &self.queue.token
    }

    /// Waits for the next event. Fails with [`Error::Closed`] once the connection is gone
    /// and every queued event was taken.
    pub fn next_event(&self) -> Result<WatchEvent> {
        match self.queue.wait(None)? {
            Some(ev) => Ok(ev),
            None => unreachable_closed(self),
        }
    }

    /// Waits at most `timeout` for the next event; `Ok(None)` if none came.
    pub fn next_timeout(&self, timeout: Duration) -> Result<Option<WatchEvent>> {
        self.queue.wait(Some(Instant::now() + timeout))
    }

    /// Takes the next event if one is queued.
    pub fn try_next(&self) -> Result<Option<WatchEvent>> {
        let mut g = self.queue.lock();
        self.queue.take(&mut g).transpose()
    }
}

fn unreachable_closed(w: &Watch) -> Result<WatchEvent> {
    // `wait(None)` only returns `Ok(None)` on a deadline, and there is none.
    Err(Error::Closed {
        op: MsgType::WatchEvent,
        path: w.queue.path.clone(),
        reason: "no event".into(),
    })
}

impl Iterator for Watch {
    type Item = Result<WatchEvent>;

    /// Blocks for the next event; ends when the connection to xenstored closes.
    fn next(&mut self) -> Option<Result<WatchEvent>> {
        match self.next_event() {
            Err(Error::Closed { .. }) => None,
            other => Some(other),
        }
    }
}

impl AsFd for Watch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.queue.ready.as_fd()
    }
}

impl AsRawFd for Watch {
    fn as_raw_fd(&self) -> RawFd {
        self.queue.ready.as_fd().as_raw_fd()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.shared.unregister_watch(&self.queue);
        let closed = self.queue.lock().closed.is_some();
        if !closed {
            let payload = wire::join_strings(&[&self.queue.path, &self.queue.wire_token]);
            let _ = self
                .shared
                .request(MsgType::Unwatch, 0, payload, &self.queue.path);
        }
    }
}
