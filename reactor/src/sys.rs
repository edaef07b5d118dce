//! The Linux system calls the reactor uses, in one place: epoll, eventfd, CPU
//! affinity, thread CPU clocks and the online-CPU list.
//!
//! Everything above this module speaks in reactor words (tokens, interests,
//! doorbells); nothing here knows about pollers or modes. rustix's types stay
//! in here too: a registration asks for a [`Watch`], a wait reports [`Ready`]s.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{EventfdFlags, epoll, eventfd};
use rustix::time::Timespec;

/// What a registration asks epoll to report (level-triggered). A peer's
/// close (`EPOLLRDHUP`), hang-ups and errors are reported whatever is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Watch {
    /// `EPOLLIN`.
    pub(crate) readable: bool,
    /// `EPOLLOUT`.
    pub(crate) writable: bool,
}

impl Watch {
    #[inline]
    fn flags(self) -> epoll::EventFlags {
        let mut f = epoll::EventFlags::RDHUP;
        if self.readable {
            f |= epoll::EventFlags::IN;
        }
        if self.writable {
            f |= epoll::EventFlags::OUT;
        }
        f
    }
}

/// One registration's readiness, as a wait reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ready {
    /// The token the fd was registered with.
    pub(crate) token: u64,
    /// `EPOLLIN`.
    pub(crate) readable: bool,
    /// `EPOLLOUT`.
    pub(crate) writable: bool,
    /// `EPOLLHUP` or `EPOLLRDHUP`.
    pub(crate) hangup: bool,
    /// `EPOLLERR`.
    pub(crate) error: bool,
}

/// Room for the reports of one wait; allocated once per reactor.
pub(crate) struct Events(Vec<epoll::Event>);

impl Events {
    /// Room for at most `n` reports per wait.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Events(Vec::with_capacity(n))
    }

    /// Takes the reports of the last wait, in order.
    #[inline]
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Ready> + '_ {
        self.0.drain(..).map(|ev| {
            let f = ev.flags;
            Ready {
                token: ev.data.u64(),
                readable: f.contains(epoll::EventFlags::IN),
                writable: f.contains(epoll::EventFlags::OUT),
                hangup: f.intersects(epoll::EventFlags::HUP | epoll::EventFlags::RDHUP),
                error: f.contains(epoll::EventFlags::ERR),
            }
        })
    }
}

/// An epoll instance, level-triggered throughout.
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            fd: epoll::create(epoll::CreateFlags::CLOEXEC)?,
        })
    }

    pub(crate) fn add(&self, fd: BorrowedFd<'_>, token: u64, watch: Watch) -> io::Result<()> {
        Ok(epoll::add(
            &self.fd,
            fd,
            epoll::EventData::new_u64(token),
            watch.flags(),
        )?)
    }

    /// Registers `doorbell` for reading alone (an eventfd has no peer to hang up).
    pub(crate) fn add_doorbell(&self, doorbell: &Doorbell, token: u64) -> io::Result<()> {
        Ok(epoll::add(
            &self.fd,
            doorbell.as_fd(),
            epoll::EventData::new_u64(token),
            epoll::EventFlags::IN,
        )?)
    }

    pub(crate) fn modify(&self, fd: BorrowedFd<'_>, token: u64, watch: Watch) -> io::Result<()> {
        Ok(epoll::modify(
            &self.fd,
            fd,
            epoll::EventData::new_u64(token),
            watch.flags(),
        )?)
    }

    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        Ok(epoll::delete(&self.fd, fd)?)
    }

    /// Waits for events into `events` (cleared first). `None` waits forever;
    /// `Some(ZERO)` only checks. The timeout has nanosecond resolution because
    /// rustix is built for Linux 5.11 and uses `epoll_pwait2`.
    pub(crate) fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let events = &mut events.0;
        events.clear();
        if timeout == Some(Duration::ZERO) {
            return self.check(events);
        }
        let ts = timeout.map(|d| Timespec {
            tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        loop {
            match epoll::wait(&self.fd, rustix::buffer::spare_capacity(events), ts.as_ref()) {
                Ok(n) => return Ok(n),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

// `check` hands the kernel a Vec of rustix's events as an array of
// `struct epoll_event`: rustix defines its `Event` as the kernel's layout
// (size, alignment and field offsets checked here).
const _: () = assert!(std::mem::size_of::<epoll::Event>() == std::mem::size_of::<libc::epoll_event>());
const _: () = assert!(std::mem::align_of::<epoll::Event>() == std::mem::align_of::<libc::epoll_event>());
const _: () = assert!(std::mem::offset_of!(epoll::Event, flags) == std::mem::offset_of!(libc::epoll_event, events));
const _: () = assert!(std::mem::offset_of!(epoll::Event, data) == std::mem::offset_of!(libc::epoll_event, u64));

impl Epoll {
    /// A zero-timeout wait through `epoll_wait`, which takes its timeout as an
    /// integer: `epoll_pwait2` copies a `timespec` in from user space on every
    /// call, and a polling reactor makes this call on every loop iteration
    /// (the copy and its checks were a tenth of an idle polling loop's time).
    fn check(&self, events: &mut Vec<epoll::Event>) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let cap = i32::try_from(events.capacity()).unwrap_or(i32::MAX);
        loop {
            // SAFETY: `events` has room for `cap` entries (its capacity, with
            // length 0), each laid out as the kernel's `struct epoll_event` (the
            // assertions above); the kernel writes at most `cap` of them and
            // returns how many, and only those become the vector's length.
            let n = unsafe {
                libc::epoll_wait(
                    self.fd.as_raw_fd(),
                    events.as_mut_ptr().cast::<libc::epoll_event>(),
                    cap,
                    0,
                )
            };
            if n >= 0 {
                let n = n as usize;
                // SAFETY: the kernel initialised the first `n` entries (n <= cap).
                unsafe { events.set_len(n) };
                return Ok(n);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// The eventfd a sleeping reactor is woken by.
pub(crate) struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            fd: eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?,
        })
    }

    pub(crate) fn ring(&self) {
        // The only failure of a write of 1 to a non-blocking eventfd is EAGAIN
        // when the counter is at u64::MAX - 1: it is then readable already,
        // which is all a ring has to achieve.
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }

    /// Resets the counter so that level-triggered epoll stops reporting it.
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut buf);
    }
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Pins the calling thread to one CPU.
/// Asks for 1 ns timer slack on this thread, so sleeps end when asked
/// (the default slack is 50 us). Best effort: a kernel that refuses leaves
/// timers late, not wrong.
pub(crate) fn tight_timer_slack() {
    let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
}

pub(crate) fn pin_current_thread(core: usize) -> io::Result<()> {
    if core >= rustix::thread::CpuSet::MAX_CPU {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut set = rustix::thread::CpuSet::new();
    set.set(core);
    Ok(rustix::thread::sched_setaffinity(None, &set)?)
}

/// The CPUs this process may run on (its affinity mask).
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    let set = rustix::thread::sched_getaffinity(None)?;
    Ok((0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| set.is_set(c))
        .collect())
}

/// The calling thread's CPU-time clock id, readable from any thread of the
/// process while this thread lives.
pub(crate) fn current_thread_cpu_clock() -> Option<libc::clockid_t> {
    let mut id: libc::clockid_t = 0;
    // SAFETY: pthread_self() is always a valid handle for the calling thread, and
    // `id` is a valid out-pointer for the duration of the call.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
    (rc == 0).then_some(id)
}

/// Reads a CPU-time clock in nanoseconds; `None` once its thread has exited.
pub(crate) fn read_cpu_clock(id: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; an id of a thread that has exited makes
    // clock_gettime fail with EINVAL, it does not touch freed memory.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}
