//! The adaptive spin budget of one channel half ([`SpinPolicy::adaptive`]).
//!
//! A blocking call that finds the ring short first spins (re-checking the ring) for up to the
//! current *budget*, then sleeps on the event channel. After each such wait the half records
//! how long the wait took in all, from its start to the moment the ring was ready, spinning
//! and sleeping together, and adapts the budget between `max / 64` (the floor) and `max`:
//!
//! * **the wait ended within `max` of its start**: a spin of `max` would have avoided the
//!   sleep (or did), so spinning pays: the budget grows to twice the old budget or to twice
//!   the wait, whichever is more (at most `max`);
//! * **the wait took longer than `max`**: no permitted spin would have helped (the peer is
//!   idle): the budget halves (at least the floor);
//! * **probe**: while the budget is below `max`, every [`PROBE_EVERY`]-th wait spins the full
//!   `max` anyway, so that the budget also recovers when the wake-up itself is slower than
//!   `max` (a loaded machine: a wait that a spin would have ended in 5 µs can take 60 µs when
//!   it sleeps). A probe that succeeds is a wait that ended within `max`, and grows the budget
//!   as above.
//!
//! The first rule is what the earlier policy lacked: it grew the budget only after a spin
//! *succeeded*, so once a few long waits (an idle peer, the start of a transfer) had driven it
//! to the floor, waits of a few microseconds never succeeded within it, and it never grew back
//! (streams ran at half speed; issue 5). The probe bounds the cost of adapting: with a peer
//! idle for good, a half spins `max` once every [`PROBE_EVERY`] waits and the floor otherwise,
//! so on average at most `max / PROBE_EVERY + max / 64` per wait, each wait being longer than
//! `max` by definition.
//!
//! The state machine is separate from the clock ([`Spinner::budget`] before a wait,
//! [`Spinner::record`] after it), so that its unit tests feed it wait outcomes.

use std::time::Duration;

use crate::config::SpinPolicy;

/// Every this many waits, a half whose budget is below `max` spins the full `max` (a probe).
pub(crate) const PROBE_EVERY: u32 = 16;

/// Adaptive spinning state of one half.
#[derive(Debug)]
pub(crate) struct Spinner {
    policy: SpinPolicy,
    /// The budget of the next ordinary (non-probe) wait.
    current: Duration,
    /// Waits since the last probe (or since the budget was last at `max`).
    since_probe: u32,
}

impl Spinner {
    pub(crate) fn new(policy: SpinPolicy) -> Self {
        Spinner {
            policy,
            current: policy.max,
            since_probe: 0,
        }
    }

    fn floor(&self) -> Duration {
        self.policy.max / 64
    }

    /// The spin budget of the wait that starts now (zero: sleep at once).
    pub(crate) fn budget(&mut self) -> Duration {
        if !self.policy.adaptive || self.current >= self.policy.max {
            return self.policy.max;
        }
        self.since_probe += 1;
        if self.since_probe >= PROBE_EVERY {
            self.since_probe = 0;
            return self.policy.max;
        }
        self.current
    }

    /// Records a finished wait: `waited` from its start until the ring was ready (spinning
    /// and sleeping included). Waits that ended otherwise (a timeout, an error, the peer
    /// gone) are not recorded.
    pub(crate) fn record(&mut self, waited: Duration) {
        if !self.policy.adaptive {
            return;
        }
        let max = self.policy.max;
        self.current = if waited <= max {
            self.current
                .saturating_mul(2)
                .max(waited.saturating_mul(2))
                .clamp(self.floor(), max)
        } else {
            (self.current / 2).max(self.floor())
        };
        if self.current >= max {
            self.since_probe = 0;
        }
    }

    /// The budget of the next ordinary wait (for tests and debugging).
    #[cfg(test)]
    pub(crate) fn current(&self) -> Duration {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(50);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// One wait of a peer that becomes ready `ready` after the wait starts, on a machine
    /// whose wake-up from a sleep takes `wake`: the spin succeeds if the budget reaches
    /// `ready`, else the wait ends when the sleeper is woken. Returns whether it spun
    /// successfully.
    fn wait(s: &mut Spinner, ready: Duration, wake: Duration) -> bool {
        let budget = s.budget();
        if ready <= budget {
            s.record(ready);
            true
        } else {
            s.record(ready.max(budget) + wake);
            false
        }
    }

    /// Issue 5: long waits drive the budget to the floor; then waits of a few microseconds
    /// must bring it back. The old policy (grow only after a successful spin) stayed at the
    /// floor forever here: every later spin of 0.78 µs failed against 5 µs waits.
    #[test]
    fn recovers_from_the_floor_when_waits_get_short_again() {
        let mut s = Spinner::new(SpinPolicy::adaptive(MAX));
        assert_eq!(s.budget(), MAX);
        for _ in 0..10 {
            wait(&mut s, Duration::from_millis(5), us(15));
        }
        assert_eq!(
            s.current(),
            MAX / 64,
            "an idle peer drives the budget to the floor"
        );
        // The peer is busy again: ready after 5 µs; a sleep costs 15 µs more.
        let mut spun = Vec::new();
        for _ in 0..8 {
            spun.push(wait(&mut s, us(5), us(15)));
        }
        assert_eq!(s.current(), MAX, "back at max: {spun:?}");
        assert!(
            spun.iter().skip(1).all(|&ok| ok),
            "after one sleep every wait is a successful spin: {spun:?}"
        );
    }

    /// When waking up from a sleep takes longer than `max` itself (a loaded machine), a
    /// wait ended by a sleep never looks short; the periodic full spin finds out that
    /// spinning would pay, and the budget recovers.
    #[test]
    fn probes_recover_when_wake_ups_are_slower_than_max() {
        let mut s = Spinner::new(SpinPolicy::adaptive(MAX));
        for _ in 0..10 {
            wait(&mut s, Duration::from_millis(5), us(15));
        }
        assert_eq!(s.current(), MAX / 64);
        let mut waits = 0;
        while s.current() < MAX {
            wait(&mut s, us(20), us(200));
            waits += 1;
            assert!(
                waits <= PROBE_EVERY as usize + 2,
                "no recovery after {waits} waits"
            );
        }
        // And it stays there while the peer keeps being ready within the spin.
        for _ in 0..100 {
            assert!(wait(&mut s, us(20), us(200)));
        }
        assert_eq!(s.current(), MAX);
    }

    /// An idle peer: the budget sits at the floor, with one full probe every PROBE_EVERY
    /// waits and no more (bounded CPU cost).
    #[test]
    fn an_idle_peer_costs_the_floor_and_a_probe_now_and_then() {
        let mut s = Spinner::new(SpinPolicy::adaptive(MAX));
        let mut budgets = Vec::new();
        for _ in 0..200 {
            budgets.push(s.budget());
            s.record(Duration::from_millis(3));
        }
        let probes = budgets.iter().filter(|&&b| b == MAX).count();
        // The first wait starts at max, the budget halves over six waits, then probes.
        assert!(budgets[7..].iter().all(|&b| b == MAX / 64 || b == MAX));
        assert!(
            probes <= 1 + 6 + 200 / PROBE_EVERY as usize,
            "{probes} full spins"
        );
        assert!(
            probes >= 200 / PROBE_EVERY as usize - 1,
            "{probes} full spins"
        );
        assert_eq!(s.current(), MAX / 64);
    }

    /// Waits a little longer than max halve the budget; waits within max never shrink it.
    #[test]
    fn grows_and_shrinks_within_bounds() {
        let mut s = Spinner::new(SpinPolicy::adaptive(MAX));
        s.record(MAX + us(1));
        assert_eq!(s.current(), MAX / 2);
        s.record(MAX);
        assert_eq!(
            s.current(),
            MAX,
            "a wait of exactly max would have been a spin"
        );
        for _ in 0..20 {
            s.record(Duration::from_secs(1));
        }
        assert_eq!(s.current(), MAX / 64);
        s.record(Duration::ZERO);
        assert_eq!(s.current(), MAX / 32, "a quick wait doubles the budget");
        s.record(us(10));
        assert_eq!(s.current(), us(20), "twice the wait when that is more");
    }

    /// Fixed and disabled policies never change.
    #[test]
    fn fixed_and_off_policies_do_not_adapt() {
        for policy in [SpinPolicy::fixed(MAX), SpinPolicy::OFF] {
            let mut s = Spinner::new(policy);
            for i in 0..100 {
                assert_eq!(s.budget(), policy.max);
                s.record(if i % 2 == 0 {
                    Duration::from_secs(1)
                } else {
                    us(1)
                });
            }
        }
    }
}
