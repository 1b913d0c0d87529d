//! Microsecond timers for the data plane.
//!
//! tokio's timer wheel has a resolution of 1 ms: a message due at `t` is sent at the next
//! millisecond tick or later, which put 0.5 to 2 ms of the pacer's own lateness into every
//! response time (the broker's own part was 0.1 ms). Each data-plane thread therefore has
//! one [`Wheel`]: the deadlines of its tasks in a heap, and one `timerfd` (armed with an
//! absolute `CLOCK_REALTIME` deadline, the clock the schedules are written in) that tokio
//! watches like any socket. The thread sleeps in `epoll_wait` as before; the kernel's
//! high-resolution timer wakes it at the earliest deadline, with no timer slack.
//!
//! A wake-up arrives late by a machine's own, fairly steady amount (30-40 µs at the median
//! on the 2-core VM measured, where a wake-up leaves a halted virtual CPU). Each wheel
//! learns that amount as it goes (a running lower quartile of its wake-ups' lateness,
//! [`Lead`]) and arms its timer that much before the deadline; a task woken before its
//! deadline spins the rest (bounded by [`MAX_LEAD_NS`]). So a quarter of the wake-ups
//! land a little early and spin a few microseconds, the rest a few microseconds late,
//! and the median send lag is a few microseconds for about the CPU of a plain sleep.
//!
//! Why this and not the alternatives (measured on the 2-core machine, see
//! ARCHITECTURE.md): a `clock_nanosleep` per producer needs a thread per producer (fleets
//! have thousands); a `timerfd` per producer a file descriptor each; a busy-wait to every
//! deadline a core per thread. One `timerfd` per data-plane thread costs one descriptor
//! and three system calls per wake-up, and wakes within microseconds.
//!
//! Outside a data-plane thread (unit tests, tools), [`Deadline`] falls back to tokio's
//! timer.

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// A task whose deadline is at most this much beyond the wheel's learned lead spins for
/// it rather than sleeping: a wake-up costs more than that.
pub const SPIN_NS: i64 = 5_000;

/// The learned lead never exceeds this: a thread that is late for other reasons (busy
/// with other tasks, starved of CPU) must not make its tasks spin for long.
pub const MAX_LEAD_NS: i64 = 50_000;

/// The lead a wheel starts from, before it has measured a wake-up.
const INITIAL_LEAD_NS: i64 = 15_000;

/// How far a wake-up later than the lead moves it up, and one earlier moves it down: the
/// lead settles where a quarter of the wake-ups are earlier (they spin what is left) and
/// three quarters later (by a few microseconds: the lateness is narrowly spread).
const LEAD_UP_NS: i64 = 250;
const LEAD_DOWN_NS: i64 = 750;

/// A running lower quartile of how late this thread's timer wakes it (Frugal-1U
/// streaming quantile: a small step up when a wake-up was later than the estimate, three
/// times that down when earlier), so the timer is armed that much early. The quartile
/// rather than the median: a wake-up earlier than the lead spins, and the spin is CPU.
/// Pure, so its behaviour is tested without a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lead(i64);

impl Default for Lead {
    fn default() -> Self {
        Self(INITIAL_LEAD_NS)
    }
}

impl Lead {
    pub fn ns(self) -> i64 {
        self.0
    }

    /// Takes one wake-up that came `late_ns` after the time the timer was armed for.
    pub fn observe(&mut self, late_ns: i64) {
        self.0 = if late_ns > self.0 {
            self.0 + LEAD_UP_NS
        } else {
            self.0 - LEAD_DOWN_NS
        }
        .clamp(0, MAX_LEAD_NS);
    }

    /// How long before a deadline a task spins rather than sleeps.
    pub fn spin_window_ns(self) -> i64 {
        self.0 + SPIN_NS
    }
}

/// Nanoseconds since the Unix epoch (`CLOCK_REALTIME`, the clock of the schedules and of
/// the timer).
#[inline]
pub fn now_ns() -> i64 {
    super::clock::system_now_ns()
}

thread_local! {
    static WHEEL: RefCell<Option<Wheel>> = const { RefCell::new(None) };
}

/// Tells one thread's wheel from another's (a deadline registered with one is never
/// taken for a slot of another).
static NEXT_WHEEL: AtomicU32 = AtomicU32::new(1);

/// A timerfd shared by the wheel (which arms it) and the driver (which waits on it).
#[derive(Debug)]
struct Shared(Arc<TimerFd>);

impl AsRawFd for Shared {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// One registration: the deadline it was queued with, and who to wake.
#[derive(Debug)]
struct Slot {
    /// Bumped whenever the slot is freed, so stale heap entries are recognised.
    generation: u32,
    at_ns: i64,
    /// An entry for `at_ns` is in the heap.
    queued: bool,
    waker: Option<Waker>,
}

/// The deadlines of one data-plane thread.
#[derive(Debug)]
struct Wheel {
    id: u32,
    fd: Arc<TimerFd>,
    /// (deadline, slot, generation), earliest first. Entries of freed or moved
    /// registrations stay until they come up, and are skipped then.
    heap: BinaryHeap<Reverse<(i64, u32, u32)>>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// The deadline the timerfd is armed for (`i64::MAX`: not armed).
    armed_ns: i64,
    /// When the timerfd expires (`armed_ns` less the lead), if that was still ahead when
    /// it was armed: a wake-up for it measures the lateness the lead learns from.
    expires_ns: Option<i64>,
    lead: Lead,
    /// Set when arming failed (it cannot, short of a kernel bug): the driver reports it.
    failed: Option<nix::Error>,
}

impl Wheel {
    fn arm(&mut self, at_ns: i64) {
        if at_ns == self.armed_ns {
            return;
        }
        // Woken the learned lead early: the task spins what is left. A deadline already
        // past arms for now, which expires at once. Not for a time long past (such as 1 ns
        // after the epoch): a clock shifted in user space (libfaketime) turns that into a
        // time before the epoch, which the kernel refuses.
        let now = now_ns();
        let expires = at_ns.saturating_sub(self.lead.ns()).max(now).max(1);
        match self.fd.set(
            Expiration::OneShot(TimeSpec::from(Duration::from_nanos(expires as u64))),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME,
        ) {
            Ok(()) => {
                self.armed_ns = at_ns;
                self.expires_ns = (expires > now).then_some(expires);
            }
            Err(e) => {
                // Nothing would wake the deadline's task: say so at once, and the driver
                // ends with the error when it next runs.
                tracing::error!(expires_ns = expires, error = %e, "arming the data-plane timer failed");
                self.failed = Some(e);
            }
        }
    }

    /// Drops stale entries from the top, and arms the timer for the earliest live one.
    fn arm_earliest(&mut self) {
        while let Some(&Reverse((at, slot, generation))) = self.heap.peek() {
            let s = &self.slots[slot as usize];
            if s.generation == generation && s.queued && s.at_ns == at {
                self.arm(at);
                return;
            }
            self.heap.pop();
        }
        self.armed_ns = i64::MAX;
    }

    /// Queues `d` for `d.at_ns`, to wake `waker`.
    fn register(&mut self, d: &mut Deadline, waker: &Waker) {
        let slot = match d.key {
            Some(k)
                if k.wheel == self.id && self.slots[k.slot as usize].generation == k.generation =>
            {
                k.slot
            }
            _ => {
                let slot = match self.free.pop() {
                    Some(s) => s,
                    None => {
                        self.slots.push(Slot {
                            generation: 0,
                            at_ns: i64::MAX,
                            queued: false,
                            waker: None,
                        });
                        (self.slots.len() - 1) as u32
                    }
                };
                d.key = Some(Key {
                    wheel: self.id,
                    slot,
                    generation: self.slots[slot as usize].generation,
                });
                slot
            }
        };
        let s = &mut self.slots[slot as usize];
        match &s.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => s.waker = Some(waker.clone()),
        }
        if !s.queued || s.at_ns != d.at_ns {
            s.at_ns = d.at_ns;
            s.queued = true;
            self.heap.push(Reverse((d.at_ns, slot, s.generation)));
            if d.at_ns < self.armed_ns {
                self.arm(d.at_ns);
            }
        }
    }

    fn release(&mut self, key: Key) {
        if key.wheel != self.id {
            return;
        }
        let Some(s) = self.slots.get_mut(key.slot as usize) else {
            return;
        };
        if s.generation != key.generation {
            return;
        }
        s.generation = s.generation.wrapping_add(1);
        s.queued = false;
        s.waker = None;
        self.free.push(key.slot);
    }

    /// Learns from this wake-up's lateness, takes the wakers of every deadline due by
    /// `now_ns` (plus the spin window: they spin the rest), and re-arms for the next.
    fn fire(&mut self, now_ns: i64, into: &mut Vec<Waker>) {
        if let Some(expires) = self.expires_ns.take() {
            self.lead.observe(now_ns - expires);
        }
        self.armed_ns = i64::MAX;
        let window = now_ns.saturating_add(self.lead.spin_window_ns());
        while let Some(&Reverse((at, slot, generation))) = self.heap.peek() {
            if at > window {
                break;
            }
            self.heap.pop();
            let s = &mut self.slots[slot as usize];
            if s.generation == generation && s.queued && s.at_ns == at {
                s.queued = false;
                if let Some(w) = s.waker.take() {
                    into.push(w);
                }
            }
        }
        self.arm_earliest();
    }
}

/// Where a [`Deadline`] is registered.
#[derive(Debug, Clone, Copy)]
struct Key {
    wheel: u32,
    slot: u32,
    generation: u32,
}

/// Waits on this thread's timerfd and wakes the tasks whose deadlines came. One per
/// data-plane thread, for the thread's life.
#[derive(Debug)]
pub struct Driver {
    fd: AsyncFd<Shared>,
    ready: Vec<Waker>,
}

/// Gives this thread a wheel; run the returned driver on the thread's runtime (inside
/// it: the timerfd is registered with the runtime's reactor).
pub fn install() -> std::io::Result<Driver> {
    let fd = Arc::new(
        TimerFd::new(
            ClockId::CLOCK_REALTIME,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(std::io::Error::from)?,
    );
    // The thread's other sleeps (epoll timeouts) need no slack either.
    let _ = nix::sys::prctl::set_timerslack(1);
    // SAFETY: `Shared` holds the timerfd (an `Arc` of its owner) for as long as the
    // `AsyncFd` holds `Shared`, and always returns that same descriptor.
    #[allow(unsafe_code)]
    let registered = unsafe { AsyncFd::register(Shared(fd.clone())) };
    let driver = Driver {
        fd: registered.map_err(std::io::Error::from)?,
        ready: Vec::new(),
    };
    WHEEL.with_borrow_mut(|w| {
        *w = Some(Wheel {
            id: NEXT_WHEEL.fetch_add(1, Ordering::Relaxed),
            fd,
            heap: BinaryHeap::with_capacity(64),
            slots: Vec::new(),
            free: Vec::new(),
            armed_ns: i64::MAX,
            expires_ns: None,
            lead: Lead::default(),
            failed: None,
        })
    });
    Ok(driver)
}

impl Driver {
    /// Runs until the timerfd fails (never, short of a kernel bug: then the error).
    pub async fn run(mut self) -> std::io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.get_inner().0.wait() {
                // Consumed: no more expirations until it is armed again.
                Ok(()) => guard.clear_ready(),
                Err(nix::errno::Errno::EAGAIN) => {
                    guard.clear_ready();
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            let now = now_ns();
            let failed = WHEEL.with_borrow_mut(|w| {
                w.as_mut().and_then(|w| {
                    w.fire(now, &mut self.ready);
                    w.failed.take()
                })
            });
            for w in self.ready.drain(..) {
                w.wake();
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
    }
}

/// True on a thread with a wheel (a data-plane thread).
pub fn precise_here() -> bool {
    WHEEL.with_borrow(|w| w.is_some())
}

/// A deadline in wall-clock ns: a future that completes once it has come, woken within
/// microseconds on a data-plane thread. Unlike tokio's `Sleep` it can be moved, reset
/// and polled again at no cost; it takes no allocation on a data-plane thread.
#[derive(Debug)]
pub struct Deadline {
    at_ns: i64,
    key: Option<Key>,
    /// Off the data plane, or when asked for: tokio's timer, and the deadline it was set
    /// for.
    fallback: Option<(i64, Pin<Box<tokio::time::Sleep>>)>,
    coarse: bool,
}

impl Deadline {
    pub fn at(at_ns: i64) -> Self {
        Self {
            at_ns,
            key: None,
            fallback: None,
            coarse: false,
        }
    }

    /// A deadline on tokio's 1 ms timer even on a data-plane thread: for fleets, whose
    /// tens of thousands of clients would otherwise wake their thread once per message
    /// instead of once per millisecond.
    pub fn coarse(at_ns: i64) -> Self {
        let mut d = Self::at(at_ns);
        d.coarse = true;
        d
    }

    /// When it comes.
    pub fn deadline_ns(&self) -> i64 {
        self.at_ns
    }

    /// Moves it (no system call: the wheel is told on the next poll).
    pub fn reset(&mut self, at_ns: i64) {
        self.at_ns = at_ns;
    }

    pub fn is_elapsed(&self) -> bool {
        now_ns() >= self.at_ns
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let now = now_ns();
        let left = this.at_ns.saturating_sub(now);
        if left <= 0 {
            return Poll::Ready(());
        }
        if !this.coarse {
            // Spins when the deadline is closer than a wake-up would be late (on a data-plane
            // thread: its learned lead; bounded by `MAX_LEAD_NS`).
            let registered = WHEEL.with_borrow_mut(|w| match w.as_mut() {
                Some(w) if left <= w.lead.spin_window_ns() => Some(false),
                Some(w) => {
                    w.register(this, cx.waker());
                    Some(true)
                }
                None if left <= SPIN_NS => Some(false),
                None => None,
            });
            match registered {
                Some(true) => return Poll::Pending,
                Some(false) => {
                    while now_ns() < this.at_ns {
                        std::hint::spin_loop();
                    }
                    return Poll::Ready(());
                }
                None => {}
            }
        }
        // tokio's timer runs on its own clock: convert once per deadline, not per poll
        // (a reset per poll would move the timer entry at every wake-up of a fleet client).
        match &mut this.fallback {
            Some((for_ns, sleep)) if *for_ns == this.at_ns => sleep.as_mut().poll(cx),
            slot => {
                let at = tokio::time::Instant::now() + Duration::from_nanos(left as u64);
                let sleep = match slot.take() {
                    Some((_, mut sleep)) => {
                        sleep.as_mut().reset(at);
                        sleep
                    }
                    None => Box::pin(tokio::time::sleep_until(at)),
                };
                let (_, sleep) = slot.insert((this.at_ns, sleep));
                sleep.as_mut().poll(cx)
            }
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let _ = WHEEL.try_with(|w| {
                if let Ok(mut w) = w.try_borrow_mut()
                    && let Some(w) = w.as_mut()
                {
                    w.release(key);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A current-thread runtime with a wheel, as a data-plane thread has.
    fn on_wheel<F: Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async {
            let driver = install().unwrap_or_else(|e| panic!("{e}"));
            let driver = tokio::spawn(driver.run());
            let out = f.await;
            driver.abort();
            out
        })
    }

    #[test]
    fn deadlines_come_in_order_and_never_early() {
        let lags = on_wheel(async {
            assert!(precise_here());
            let start = now_ns() + 2_000_000;
            // Ten tasks, deadlines interleaved 300 µs apart, registered out of order.
            let mut tasks = Vec::new();
            for k in (0..10i64).rev() {
                tasks.push(tokio::spawn(async move {
                    let at = start + k * 300_000;
                    Deadline::at(at).await;
                    now_ns() - at
                }));
            }
            let mut lags = Vec::new();
            for t in tasks {
                lags.push(t.await.unwrap_or_else(|e| panic!("{e}")));
            }
            lags
        });
        for lag in &lags {
            assert!(*lag >= 0, "woken {lag} ns early");
            // Generous: this only checks it is not tokio's millisecond wheel on a quiet
            // machine; the pacing benchmark measures the precision.
            assert!(*lag < 50_000_000, "woken {lag} ns late");
        }
    }

    #[test]
    fn a_moved_or_dropped_deadline_does_not_wake_for_its_old_time() {
        on_wheel(async {
            let mut d = Deadline::at(now_ns() + 1_000_000);
            // Registered at +1 ms, then moved to +20 ms: it must not complete at +1 ms.
            assert!(futures_poll_once(&mut d).await.is_pending());
            let later = now_ns() + 20_000_000;
            d.reset(later);
            d.await;
            assert!(now_ns() >= later);
            // A dropped registration frees its slot for the next one.
            let mut gone = Deadline::at(now_ns() + 5_000_000);
            assert!(futures_poll_once(&mut gone).await.is_pending());
            drop(gone);
            let next = now_ns() + 2_000_000;
            Deadline::at(next).await;
            assert!(now_ns() >= next);
            WHEEL.with_borrow(|w| {
                let w = w.as_ref().unwrap_or_else(|| unreachable!());
                assert!(w.slots.len() <= 2, "{} slots", w.slots.len());
            });
        });
    }

    #[test]
    fn the_lead_learns_the_lower_quartile_of_the_lateness_and_stays_bounded() {
        let mut lead = Lead::default();
        // Wake-ups 30-40 µs late, evenly: the lead settles near their lower quartile,
        // 32.5 µs.
        for i in 0..4_000i64 {
            lead.observe(30_000 + (i * 7_919) % 10_001);
        }
        assert!(
            (lead.ns() - 32_500).abs() <= 2 * LEAD_DOWN_NS,
            "{}",
            lead.ns()
        );
        // A thread late by milliseconds (starved, busy) never makes its tasks spin longer
        // than the bound.
        for _ in 0..10_000 {
            lead.observe(5_000_000);
        }
        assert_eq!(lead.ns(), MAX_LEAD_NS);
        assert_eq!(lead.spin_window_ns(), MAX_LEAD_NS + SPIN_NS);
        // Prompt wake-ups bring it back down to nothing, never below.
        for _ in 0..10_000 {
            lead.observe(0);
        }
        assert_eq!(lead.ns(), 0);
    }

    #[tokio::test]
    async fn off_the_data_plane_it_falls_back_to_tokio() {
        assert!(!precise_here());
        let at = now_ns() + 3_000_000;
        Deadline::at(at).await;
        assert!(now_ns() >= at);
    }

    /// Polls once with a no-op waker.
    async fn futures_poll_once(d: &mut Deadline) -> Poll<()> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *d).poll(cx))).await
    }
}
