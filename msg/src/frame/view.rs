//! Views of frame bytes in shared memory: [`SharedBytes`] (a received payload, read-only)
//! and [`FrameBuf`] (a reserved payload, write-only).
//!
//! Both are a pointer and a length into ring memory the peer domain can write at any time,
//! so neither ever hands safe code a `&[u8]`/`&T` into it: bytes leave through copies
//! (`copy_nonoverlapping` into private memory, volatile loads for single bytes), through
//! `write(2)`/`read(2)` (the kernel copies), or through the `unsafe` trusted-peer
//! methods. Every access is bounds-checked against the view's length, which the frame layer
//! fixed from its single, validated fetch of the header. This is the only module of the frame
//! layer that dereferences ring memory.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::{self, NonNull};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Ref};

use super::error::FrameError;

/// Stack buffer for copying shared bytes to an [`io::Write`] (which needs a `&[u8]`).
const BOUNCE: usize = 16 << 10;

fn out_of_bounds(offset: usize, size: usize, len: usize) -> FrameError {
    FrameError::OutOfBounds { offset, size, len }
}

/// `offset..offset + size` inside `0..len`?
#[inline]
fn check_range(offset: usize, size: usize, len: usize) -> Result<(), FrameError> {
    match offset.checked_add(size) {
        Some(end) if end <= len => Ok(()),
        _ => Err(out_of_bounds(offset, size, len)),
    }
}

/// Retries a system call interrupted by a signal.
fn retry_eintr(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let r = call();
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One `write(2)` of `len` bytes at `ptr` to `fd` (retried on `EINTR`).
///
/// # Safety
///
/// `ptr..ptr + len` is valid for reads for the duration of the call.
pub(crate) unsafe fn write_raw(
    fd: BorrowedFd<'_>,
    ptr: *const u8,
    len: usize,
) -> io::Result<usize> {
    retry_eintr(|| {
        // SAFETY: the caller guarantees the source range is readable; the kernel only reads
        // it. A concurrent change by the peer only changes which bytes are written.
        unsafe { libc::write(fd.as_raw_fd(), ptr.cast(), len) }
    })
}

/// One `read(2)` of up to `len` bytes from `fd` into `ptr` (retried on `EINTR`).
///
/// # Safety
///
/// `ptr..ptr + len` is valid for writes for the duration of the call and nothing in this
/// process reads or writes it concurrently.
pub(crate) unsafe fn read_raw(fd: BorrowedFd<'_>, ptr: *mut u8, len: usize) -> io::Result<usize> {
    retry_eintr(|| {
        // SAFETY: the caller guarantees the destination range is ours to write.
        unsafe { libc::read(fd.as_raw_fd(), ptr.cast(), len) }
    })
}

/// A received frame's payload: bytes in ring memory that the peer can write concurrently —
/// a volatile slice.
///
/// Read it by copying ([`copy_to`](SharedBytes::copy_to), [`read`](SharedBytes::read),
/// [`to_vec`](SharedBytes::to_vec)) and validate only the copy; or move it without looking
/// ([`write_to_fd`](SharedBytes::write_to_fd), [`write_to`](SharedBytes::write_to)). Each
/// call reads the shared bytes again, so two calls may see different bytes if the peer is
/// hostile: never check a value with one call and use it from another.
///
/// ```
/// # use vchan_msg::frame::{FrameConsumer, FrameProducer};
/// # use vchan_ring::LocalRing;
/// # let ring = LocalRing::<256>::new();
/// # let (tx, rx) = LocalRing::split(&ring).unwrap();
/// # let (mut tx, mut rx) = (FrameProducer::new(tx)?, FrameConsumer::new(rx)?);
/// tx.try_send(7, b"header:payload")?;
/// let frame = rx.try_recv()?.expect("a frame");
/// let bytes = frame.bytes();
/// let mut head = [0u8; 7];
/// bytes.read_into(0, &mut head)?;
/// assert_eq!(&head, b"header:");
/// assert_eq!(bytes.subslice(7, 7)?.to_vec(), b"payload");
/// assert_eq!(bytes.get(0), Some(b'h'));
/// assert!(bytes.read::<u64>(10).is_err()); // past the end
/// # Ok::<(), vchan_msg::frame::FrameError>(())
/// ```
#[derive(Clone, Copy)]
pub struct SharedBytes<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _life: PhantomData<&'a [u8]>,
}

impl<'a> SharedBytes<'a> {
    /// # Safety
    ///
    /// `ptr..ptr + len` is valid for reads during `'a`, and nothing in this process writes
    /// it during `'a` (the peer domain may).
    #[inline]
    pub(crate) unsafe fn new(ptr: NonNull<u8>, len: usize) -> SharedBytes<'a> {
        SharedBytes {
            ptr,
            len,
            _life: PhantomData,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes `offset..offset + len` of this view.
    pub fn subslice(&self, offset: usize, len: usize) -> Result<SharedBytes<'a>, FrameError> {
        check_range(offset, len, self.len)?;
        // SAFETY: `offset <= self.len`, so the pointer stays inside (or one past) the view.
        let ptr = unsafe { self.ptr.add(offset) };
        // SAFETY: a sub-range of this view, valid under the same contract.
        Ok(unsafe { SharedBytes::new(ptr, len) })
    }

    /// Byte `i`, read once (a volatile load), or `None` past the end.
    pub fn get(&self, i: usize) -> Option<u8> {
        if i >= self.len {
            return None;
        }
        // SAFETY: `i < len`: inside the view, valid for reads; a volatile byte load cannot
        // be torn and the compiler cannot repeat it.
        Some(unsafe { self.ptr.as_ptr().wrapping_add(i).read_volatile() })
    }

    /// Copies `min(dst.len(), self.len())` bytes from the start into `dst`; returns how many.
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.len);
        // SAFETY: `n <= len` bytes of the view are readable; `dst` is private memory of at
        // least `n` bytes, so the ranges cannot overlap.
        unsafe { ptr::copy_nonoverlapping(self.ptr.as_ptr(), dst.as_mut_ptr(), n) };
        n
    }

    /// Copies exactly `dst.len()` bytes starting at `offset` into `dst`.
    pub fn read_into(&self, offset: usize, dst: &mut [u8]) -> Result<(), FrameError> {
        self.subslice(offset, dst.len())?.copy_to(dst);
        Ok(())
    }

    /// A `T` copied out of the bytes at `offset` (any alignment): one fetch of the shared
    /// bytes into a private value, which is then safe to validate and use.
    #[inline]
    pub fn read<T: FromBytes>(&self, offset: usize) -> Result<T, FrameError> {
        let size = size_of::<T>();
        check_range(offset, size, self.len)?;
        let mut value = MaybeUninit::<T>::uninit();
        // SAFETY: `offset..offset + size` is inside the view (checked), valid for reads; the
        // destination is a private `MaybeUninit<T>` of exactly `size` bytes, so no overlap.
        unsafe {
            ptr::copy_nonoverlapping(
                self.ptr.as_ptr().wrapping_add(offset),
                value.as_mut_ptr().cast::<u8>(),
                size,
            );
        }
        // SAFETY: all `size_of::<T>()` bytes were just initialised, and `T: FromBytes`
        // accepts every byte pattern.
        Ok(unsafe { value.assume_init() })
    }

    /// A private copy of all the bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len];
        self.copy_to(&mut v);
        v
    }

    /// One `write(2)` of the bytes to `fd`, straight from ring memory (no bounce buffer):
    /// returns how many bytes the kernel took (possibly fewer; `EINTR` is retried, `EAGAIN`
    /// on a non-blocking fd is returned as [`io::ErrorKind::WouldBlock`]).
    pub fn write_to_fd(&self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        // SAFETY: the view is valid for reads of `len` bytes.
        unsafe { write_raw(fd, self.ptr.as_ptr(), self.len) }
    }

    /// Writes all the bytes to `fd`, straight from ring memory, looping over short writes
    /// (a non-blocking fd that fills up fails with [`io::ErrorKind::WouldBlock`] after a
    /// prefix was written; use [`write_to_fd`](SharedBytes::write_to_fd) to track progress).
    pub fn write_all_to_fd(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let mut at = 0;
        while at < self.len {
            // SAFETY: `at < len`: the rest of the view is valid for reads.
            let n = unsafe { write_raw(fd, self.ptr.as_ptr().wrapping_add(at), self.len - at) }?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "write(2) accepted no bytes",
                ));
            }
            at += n;
        }
        Ok(())
    }

    /// Writes all the bytes to `w`. An [`io::Write`] takes a `&[u8]`, which must not point
    /// into shared memory, so this copies through a 16 KiB stack buffer; for a file
    /// descriptor, [`write_all_to_fd`](SharedBytes::write_all_to_fd) avoids that copy.
    pub fn write_to<W: io::Write + ?Sized>(&self, w: &mut W) -> io::Result<()> {
        let mut buf = [0u8; BOUNCE];
        let mut at = 0;
        while at < self.len {
            let n = (self.len - at).min(BOUNCE);
            let chunk = &mut buf[..n];
            // The range is in bounds by construction.
            self.read_into(at, chunk).map_err(io::Error::from)?;
            w.write_all(chunk)?;
            at += n;
        }
        Ok(())
    }

    /// The first byte, for system calls that take a pointer (`writev(2)`, `send(2)`, …). The
    /// peer may change the bytes at any time.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The bytes as a plain slice: the **trusted-peer opt-in** to true zero-copy reads.
    ///
    /// # Safety
    ///
    /// The caller asserts that nothing writes these bytes while the slice lives: the peer is
    /// trusted not to touch a frame it has published (an honest vchan peer never does), or
    /// the memory is not shared at all. If a hostile peer writes them concurrently, this is
    /// a data race (undefined behaviour), and any check made on the slice can be undone
    /// before the value is used (a double fetch, XSA-155). With an untrusted peer, use the
    /// copying methods.
    pub unsafe fn as_slice_trusted(&self) -> &'a [u8] {
        // SAFETY: valid for reads of `len` bytes during `'a` (constructor contract); the
        // caller vouches that nobody writes them meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes as a zerocopy [`Ref`] to a `T`: the trusted-peer opt-in to typed zero-copy
    /// reads. Fails with [`FrameError::Cast`] if the length does not match `T` or the bytes
    /// are not aligned for it (frame payloads are 8-byte aligned).
    ///
    /// # Safety
    ///
    /// As for [`as_slice_trusted`](SharedBytes::as_slice_trusted).
    pub unsafe fn as_ref_trusted<T>(&self) -> Result<Ref<&'a [u8], T>, FrameError>
    where
        T: FromBytes + KnownLayout + Immutable,
    {
        // SAFETY: the caller's contract is the same as `as_slice_trusted`'s.
        let bytes = unsafe { self.as_slice_trusted() };
        Ref::from_bytes(bytes).map_err(|e| FrameError::Cast {
            len: self.len,
            type_name: std::any::type_name::<T>(),
            reason: match e {
                zerocopy::ConvertError::Alignment(_) => "the bytes are not aligned for it",
                zerocopy::ConvertError::Size(_) => "the length differs from its size",
                zerocopy::ConvertError::Validity(i) => match i {},
            },
        })
    }
}

impl fmt::Debug for SharedBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBytes")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

/// The payload space of a frame being written in place (see
/// [`FrameProducer::try_stage_with`](super::FrameProducer::try_stage_with) and
/// [`FrameWriter::send_with`](super::FrameWriter::send_with)): ring memory reserved for us,
/// write-only.
///
/// The peer cannot see these bytes before the frame is committed and published, but it can
/// write ring memory, so nothing here reads the space back.
///
/// ```
/// # use vchan_msg::frame::{FrameConsumer, FrameProducer};
/// # use vchan_ring::LocalRing;
/// # let ring = LocalRing::<256>::new();
/// # let (tx, rx) = LocalRing::split(&ring).unwrap();
/// # let (mut tx, mut rx) = (FrameProducer::new(tx)?, FrameConsumer::new(rx)?);
/// let sent = tx.try_stage_with(3, 64, |buf| {
///     buf.write_at(0, b"abc")?;
///     buf.write_obj(3, &0x0102u16)?;
///     Ok::<_, vchan_msg::frame::FrameError>(5) // the payload is 5 bytes long
/// })?;
/// assert_eq!(sent, Some(5));
/// tx.publish();
/// let frame = rx.try_recv()?.unwrap();
/// assert_eq!(frame.to_vec(), [b'a', b'b', b'c', 2, 1]);
/// # Ok::<(), vchan_msg::frame::FrameError>(())
/// ```
pub struct FrameBuf<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _life: PhantomData<&'a mut [u8]>,
}

impl<'a> FrameBuf<'a> {
    /// # Safety
    ///
    /// `ptr..ptr + len` is valid for writes during `'a`, and nothing else in this process
    /// accesses it during `'a` (reserved ring space).
    pub(crate) unsafe fn new(ptr: NonNull<u8>, len: usize) -> FrameBuf<'a> {
        FrameBuf {
            ptr,
            len,
            _life: PhantomData,
        }
    }

    /// Bytes reserved.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was reserved.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `src` to `offset`.
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> Result<(), FrameError> {
        check_range(offset, src.len(), self.len)?;
        // SAFETY: `offset..offset + src.len()` is inside the reservation (checked), which is
        // ours to write; `src` is a Rust slice and cannot overlap memory reserved for us.
        unsafe {
            ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.ptr.as_ptr().wrapping_add(offset),
                src.len(),
            );
        }
        Ok(())
    }

    /// Copies the bytes of `value` to `offset` (any alignment).
    pub fn write_obj<T: IntoBytes + Immutable + ?Sized>(
        &mut self,
        offset: usize,
        value: &T,
    ) -> Result<(), FrameError> {
        self.write_at(offset, value.as_bytes())
    }

    /// Sets `count` bytes from `offset` to `byte`.
    pub fn fill(&mut self, offset: usize, count: usize, byte: u8) -> Result<(), FrameError> {
        check_range(offset, count, self.len)?;
        // SAFETY: inside the reservation (checked), which is ours to write.
        unsafe { ptr::write_bytes(self.ptr.as_ptr().wrapping_add(offset), byte, count) };
        Ok(())
    }

    /// One `read(2)` from `fd` straight into the space from `offset` to the end (no bounce
    /// buffer); returns the bytes read (0 at end of file). `EINTR` is retried; `EAGAIN` on a
    /// non-blocking fd is [`io::ErrorKind::WouldBlock`].
    pub fn read_from_fd(&mut self, offset: usize, fd: BorrowedFd<'_>) -> io::Result<usize> {
        check_range(offset, 0, self.len).map_err(io::Error::from)?;
        // SAFETY: `offset..len` is inside the reservation, ours to write.
        unsafe {
            read_raw(
                fd,
                self.ptr.as_ptr().wrapping_add(offset),
                self.len - offset,
            )
        }
    }

    /// `read(2)` from `fd` straight into the space from `offset` until it is full or the fd
    /// reaches end of file; returns the bytes read. For files and blocking fds: one frame
    /// per full buffer.
    pub fn fill_from_fd(&mut self, offset: usize, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let mut at = offset;
        while at < self.len {
            match self.read_from_fd(at, fd)? {
                0 => break,
                n => at += n,
            }
        }
        Ok(at - offset)
    }

    /// The first byte, for system calls that fill memory (`recv(2)`, `preadv(2)`, …).
    /// Writing through it is the caller's `unsafe`, within `len()` bytes.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The space as a plain mutable slice (for APIs that fill a `&mut [u8]`, such as
    /// [`io::Read`]).
    ///
    /// # Safety
    ///
    /// A slice into shared memory: the caller asserts that the peer does not write these
    /// bytes while the slice lives (a trusted peer, or memory not shared at all). A hostile
    /// peer writing them is a data race. Only writing into the slice is meaningful: bytes
    /// read from it are whatever the ring held before.
    pub unsafe fn as_mut_slice_trusted(&mut self) -> &mut [u8] {
        // SAFETY: the reservation is valid for writes of `len` bytes and ours alone in this
        // process; the caller vouches for the peer.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl fmt::Debug for FrameBuf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameBuf")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}
