//! A model of Linux's gntalloc, gntdev and evtchn drivers for unit tests of the device code.
//!
//! It checks what the kernel checks (argument buffer sizes, indexes, counts, bound ports, the
//! rules of unmap notification), answers as the kernel answers (errnos included), records every
//! call in order, and can be told to fail the next call of a kind with a given errno. Mappings are
//! real anonymous memory, so the code under test can write its pages.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::mman::{MapFlags, ProtFlags};

use super::abi::*;
use super::driver::{Driver, Ioctl, Prot};
use super::{EVTCHN_DEVICE, GNTALLOC_DEVICE, GNTDEV_DEVICE};
use crate::types::PAGE_SIZE;

/// One recorded system call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    Open(PathBuf),
    Ioctl(&'static str),
    Mmap { offset: u64, len: usize, prot: Prot },
    Munmap { len: usize },
    Read,
    Write(Vec<u32>),
    Poll,
}

#[derive(Debug)]
pub(crate) struct Alloc {
    pub grefs: Vec<u32>,
    pub notify: Option<IoctlUnmapNotify>,
}

#[derive(Debug)]
pub(crate) struct Map {
    pub refs: Vec<IoctlGntdevGrantRef>,
    pub notify: Option<IoctlUnmapNotify>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub calls: Vec<Call>,
    /// Injected failures: the next call with this name fails with this errno.
    pub fail: Vec<(&'static str, i32)>,
    pub devices: BTreeMap<RawFd, PathBuf>,
    // gntalloc
    pub gntalloc_limit: usize,
    pub gntalloc_next_index: u64,
    pub next_gref: u32,
    pub allocs: BTreeMap<u64, Alloc>,
    pub alloc_args: Vec<IoctlGntallocAllocGref>,
    // gntdev
    /// What other domains granted us: (domid, ref) → writable.
    pub granted: BTreeMap<(u32, u32), bool>,
    pub gntdev_next_index: u64,
    pub maps: BTreeMap<u64, Map>,
    pub set_max_grants_errno: Option<i32>,
    /// mmap fails this many times with EAGAIN first (a paged-out grant).
    pub mmap_eagain: usize,
    // mappings handed out: address → length
    pub mappings: BTreeMap<usize, usize>,
    // evtchn
    pub next_port: u32,
    /// Ports other domains offered us: (domid, their port).
    pub offers: BTreeSet<(u32, u32)>,
    pub bound: BTreeMap<u32, u32>,
    pub masked: BTreeSet<u32>,
    pub pending: VecDeque<u32>,
    pub overflow: bool,
    pub notified: Vec<u32>,
}

impl Default for State {
    fn default() -> Self {
        State {
            calls: Vec::new(),
            fail: Vec::new(),
            devices: BTreeMap::new(),
            gntalloc_limit: 1024,
            gntalloc_next_index: 0,
            next_gref: 8,
            allocs: BTreeMap::new(),
            alloc_args: Vec::new(),
            granted: BTreeMap::new(),
            gntdev_next_index: 0,
            maps: BTreeMap::new(),
            set_max_grants_errno: Some(libc::ENOTTY),
            mmap_eagain: 0,
            mappings: BTreeMap::new(),
            next_port: 5,
            offers: BTreeSet::new(),
            bound: BTreeMap::new(),
            masked: BTreeSet::new(),
            pending: VecDeque::new(),
            overflow: false,
            notified: Vec::new(),
        }
    }
}

impl State {
    fn injected(&mut self, name: &'static str) -> io::Result<()> {
        if let Some(i) = self.fail.iter().position(|(n, _)| *n == name) {
            let (_, errno) = self.fail.remove(i);
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(())
    }

    /// Index of the allocation containing byte `offset` of the gntalloc file (find_grefs).
    fn alloc_containing(&self, offset: u64) -> Option<u64> {
        self.allocs
            .range(..=offset)
            .next_back()
            .filter(|(index, a)| offset < *index + (a.grefs.len() * PAGE_SIZE) as u64)
            .map(|(index, _)| *index)
    }

    fn map_containing(&self, offset: u64) -> Option<u64> {
        self.maps
            .range(..=offset)
            .next_back()
            .filter(|(index, m)| offset < *index + (m.refs.len() * PAGE_SIZE) as u64)
            .map(|(index, _)| *index)
    }

    fn check_notify(&self, arg: &IoctlUnmapNotify) -> io::Result<()> {
        if arg.action & !(UNMAP_NOTIFY_CLEAR_BYTE | UNMAP_NOTIFY_SEND_EVENT) != 0 {
            return Err(errno(libc::EINVAL));
        }
        // evtchn_get(): the port must be bound through the evtchn device.
        if arg.action & UNMAP_NOTIFY_SEND_EVENT != 0
            && !self.bound.contains_key(&arg.event_channel_port)
        {
            return Err(errno(libc::EINVAL));
        }
        Ok(())
    }
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// The fake kernel. Cloning shares the state.
#[derive(Clone, Debug, Default)]
pub(crate) struct FakeXen {
    state: Arc<Mutex<State>>,
}

impl FakeXen {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn driver(&self) -> Arc<dyn Driver> {
        Arc::new(self.clone())
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next call named `name` (an ioctl's C name, "open", "mmap", "read", "write") fails.
    pub(crate) fn fail_next(&self, name: &'static str, errno: i32) {
        self.state().fail.push((name, errno));
    }

    /// The calls so far, and forget them.
    pub(crate) fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.state().calls)
    }

    /// The remote end of `port` signals it: it becomes pending unless masked, and is then masked.
    pub(crate) fn fire(&self, port: u32) {
        let mut st = self.state();
        assert!(st.bound.contains_key(&port), "port {port} is not bound");
        if st.masked.insert(port) {
            st.pending.push_back(port);
        }
    }

    fn device(&self, fd: BorrowedFd<'_>) -> PathBuf {
        self.state()
            .devices
            .get(&fd.as_raw_fd())
            .cloned()
            .unwrap_or_default()
    }

    fn ioctl_locked(st: &mut State, call: Ioctl<'_>) -> io::Result<i32> {
        match call {
            Ioctl::GntallocAllocGref(arg) => {
                let h = *arg.header();
                let count = h.count as usize;
                // The kernel copies in sizeof(struct) and copies out `count` ids after it.
                if arg.byte_len() < size_of::<IoctlGntallocAllocGref>()
                    || arg.byte_len() < IoctlGntallocAllocGref::ELEMS_AT + 4 * count
                    || arg.count() < count
                {
                    return Err(errno(libc::EFAULT));
                }
                let in_use: usize = st.allocs.values().map(|a| a.grefs.len()).sum();
                if in_use + count > st.gntalloc_limit {
                    return Err(errno(libc::ENOSPC));
                }
                st.alloc_args.push(h);
                let index = st.gntalloc_next_index;
                st.gntalloc_next_index += (count * PAGE_SIZE) as u64;
                let grefs: Vec<u32> = (0..count as u32).map(|i| st.next_gref + i * 3).collect();
                st.next_gref += count as u32 * 3;
                arg.header_mut().index = index;
                arg.elems_mut()[..count].copy_from_slice(&grefs);
                st.allocs.insert(
                    index,
                    Alloc {
                        grefs,
                        notify: None,
                    },
                );
                Ok(0)
            }
            Ioctl::GntallocDeallocGref(arg) => match st.allocs.get(&arg.index) {
                Some(a) if a.grefs.len() == arg.count as usize => {
                    st.allocs.remove(&arg.index);
                    Ok(0)
                }
                _ => Err(errno(libc::EINVAL)),
            },
            Ioctl::GntallocSetUnmapNotify(arg) => {
                let page = arg.index & !(PAGE_SIZE as u64 - 1);
                let index = st
                    .alloc_containing(page)
                    .ok_or_else(|| errno(libc::ENOENT))?;
                st.check_notify(arg)?;
                if let Some(a) = st.allocs.get_mut(&index) {
                    a.notify = Some(*arg);
                }
                Ok(0)
            }
            Ioctl::GntdevMapGrantRef(arg) => {
                let count = arg.header().count as usize;
                if count == 0 {
                    return Err(errno(libc::EINVAL));
                }
                if arg.byte_len() < IoctlGntdevMapGrantRef::ELEMS_AT + 8 * count
                    || arg.count() < count
                {
                    return Err(errno(libc::EFAULT));
                }
                let index = st.gntdev_next_index;
                st.gntdev_next_index += (count * PAGE_SIZE) as u64;
                arg.header_mut().index = index;
                let refs = arg.elems()[..count].to_vec();
                st.maps.insert(index, Map { refs, notify: None });
                Ok(0)
            }
            Ioctl::GntdevUnmapGrantRef(arg) => match st.maps.get(&arg.index) {
                Some(m) if m.refs.len() == arg.count as usize => {
                    st.maps.remove(&arg.index);
                    Ok(0)
                }
                _ => Err(errno(libc::EINVAL)),
            },
            Ioctl::GntdevSetMaxGrants(_) => match st.set_max_grants_errno {
                Some(e) => Err(errno(e)),
                None => Ok(0),
            },
            Ioctl::GntdevSetUnmapNotify(arg) => {
                st.check_notify(arg)?;
                let index = st
                    .map_containing(arg.index)
                    .ok_or_else(|| errno(libc::ENOENT))?;
                if let Some(m) = st.maps.get_mut(&index) {
                    m.notify = Some(*arg);
                }
                Ok(0)
            }
            Ioctl::EvtchnBindUnboundPort(arg) => {
                let port = st.next_port;
                st.next_port += 1;
                st.bound.insert(port, arg.remote_domain);
                Ok(port as i32)
            }
            Ioctl::EvtchnBindInterdomain(arg) => {
                if !st.offers.remove(&(arg.remote_domain, arg.remote_port)) {
                    return Err(errno(libc::EINVAL));
                }
                let port = st.next_port;
                st.next_port += 1;
                st.bound.insert(port, arg.remote_domain);
                Ok(port as i32)
            }
            Ioctl::EvtchnUnbind(arg) => {
                if st.bound.remove(&arg.port).is_none() {
                    return Err(errno(libc::ENOTCONN));
                }
                st.masked.remove(&arg.port);
                st.pending.retain(|p| *p != arg.port);
                Ok(0)
            }
            Ioctl::EvtchnNotify(arg) => {
                if !st.bound.contains_key(&arg.port) {
                    return Err(errno(libc::ENOTCONN));
                }
                st.notified.push(arg.port);
                Ok(0)
            }
            Ioctl::EvtchnReset => {
                st.pending.clear();
                st.overflow = false;
                Ok(0)
            }
        }
    }
}

impl Driver for FakeXen {
    fn open(&self, path: &Path, _nonblocking: bool) -> io::Result<OwnedFd> {
        let mut st = self.state();
        st.calls.push(Call::Open(path.to_owned()));
        st.injected("open")?;
        if ![GNTALLOC_DEVICE, GNTDEV_DEVICE, EVTCHN_DEVICE]
            .iter()
            .any(|d| Path::new(d) == path)
        {
            return Err(errno(libc::ENOENT));
        }
        // Any real descriptor will do as the handle's fd.
        let fd: OwnedFd = std::fs::File::open("/dev/null")?.into();
        st.devices.insert(fd.as_raw_fd(), path.to_owned());
        Ok(fd)
    }

    fn ioctl(&self, _fd: BorrowedFd<'_>, call: Ioctl<'_>) -> io::Result<i32> {
        let mut st = self.state();
        let name = call.name();
        st.calls.push(Call::Ioctl(name));
        st.injected(name)?;
        Self::ioctl_locked(&mut st, call)
    }

    fn mmap_shared(
        &self,
        fd: BorrowedFd<'_>,
        len: NonZeroUsize,
        prot: Prot,
        offset: u64,
    ) -> io::Result<NonNull<u8>> {
        let device = self.device(fd);
        let mut st = self.state();
        st.calls.push(Call::Mmap {
            offset,
            len: len.get(),
            prot,
        });
        st.injected("mmap")?;
        let pages = len.get() / PAGE_SIZE;
        if device == Path::new(GNTALLOC_DEVICE) {
            // gntalloc_mmap: VM_SHARED, exactly an allocation's pages.
            match st.allocs.get(&offset) {
                Some(a) if a.grefs.len() == pages => {}
                _ => return Err(errno(libc::ENOENT)),
            }
        } else if device == Path::new(GNTDEV_DEVICE) {
            if st.mmap_eagain > 0 {
                st.mmap_eagain -= 1;
                return Err(errno(libc::EAGAIN));
            }
            let refs = match st.maps.get(&offset) {
                Some(m) if m.refs.len() == pages => m.refs.clone(),
                _ => return Err(errno(libc::EINVAL)),
            };
            // map_grant_pages(): every ref must be granted to us, writable if mapped writable.
            for r in refs {
                match st.granted.get(&(r.domid, r.r#ref)) {
                    Some(&writable) if writable || prot == Prot::Read => {}
                    _ => return Err(errno(libc::EINVAL)),
                }
            }
        } else {
            return Err(errno(libc::ENODEV));
        }
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address aliases nothing.
        let ptr = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }?;
        st.mappings.insert(ptr.as_ptr() as usize, len.get());
        Ok(ptr.cast())
    }

    unsafe fn munmap(&self, ptr: NonNull<u8>, len: usize) -> io::Result<()> {
        let mut st = self.state();
        st.calls.push(Call::Munmap { len });
        match st.mappings.remove(&(ptr.as_ptr() as usize)) {
            Some(l) if l == len => {}
            other => panic!("munmap of {ptr:?}+{len} does not match a mapping ({other:?})"),
        }
        // SAFETY: the caller guarantees the mapping is live and unused; it came from mmap above.
        unsafe { nix::sys::mman::munmap(ptr.cast(), len) }?;
        Ok(())
    }

    fn read(&self, _fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = self.state();
        st.calls.push(Call::Read);
        st.injected("read")?;
        if buf.len() < 4 {
            return Ok(0);
        }
        if st.overflow {
            return Err(errno(libc::EFBIG));
        }
        match st.pending.pop_front() {
            Some(p) => {
                buf[..4].copy_from_slice(&p.to_ne_bytes());
                Ok(4)
            }
            None => Err(errno(libc::EAGAIN)),
        }
    }

    fn write(&self, _fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
        let mut st = self.state();
        let ports: Vec<u32> = buf
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        st.calls.push(Call::Write(ports.clone()));
        st.injected("write")?;
        for p in ports {
            if p >= 4096 {
                return Err(errno(libc::EINVAL));
            }
            st.masked.remove(&p);
        }
        Ok(buf.len() & !3)
    }

    fn poll_readable(&self, _fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
        let mut st = self.state();
        st.calls.push(Call::Poll);
        let ready = !st.pending.is_empty() || st.overflow;
        if !ready && timeout.is_none() {
            // Nothing can fire while the test thread is blocked here.
            return Err(io::Error::other(
                "fake: poll without timeout would block forever",
            ));
        }
        Ok(ready)
    }
}
