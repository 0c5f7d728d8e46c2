//! Which simulated agents misbehave, and how: drawn from a seed, so a run is repeatable.

use std::time::Duration;

/// SplitMix64: tiny, fast and good enough to pick agents; the same seed gives the same stream
/// on every machine, which is all a repeatable run needs (no cryptographic use).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        // The top 53 bits: exactly representable, so the result is never 1.0.
        #[allow(clippy::cast_precision_loss)]
        let x = (self.next_u64() >> 11) as f64;
        x / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi]`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + (hi.saturating_sub(lo)).mul_f64(self.unit())
    }
}

/// The rates a fleet is drawn with, each the chance (0..=1) that an agent behaves so.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    /// Its health hook fails (for every revision after the first it applies).
    pub fail: f64,
    /// It drops its stream for a while, now and then, and comes back.
    pub offline: f64,
    /// Its hooks take longer.
    pub slow: f64,
    /// It reboots now and then: a new boot id, its agent restarted on the same files.
    pub reboot: f64,
}

/// How one agent behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Behaviour {
    /// Its health hook fails for every revision after the first it applies.
    pub fails: bool,
    /// It drops its stream now and then.
    pub offline: bool,
    /// Its hooks take longer.
    pub slow: bool,
    /// It reboots now and then.
    pub reboots: bool,
}

impl Behaviour {
    /// Agent `index`'s behaviour in a fleet drawn with `seed` and `rates`. Each agent draws
    /// from a stream of its own (the seed mixed with its index), so an agent's lot does not
    /// depend on the fleet's size: agent 7 of 200 fails iff agent 7 of 5,000 does.
    pub fn draw(seed: u64, index: usize, rates: &Rates) -> Self {
        let mut rng = agent_rng(seed, index);
        Self {
            fails: rng.unit() < rates.fail,
            offline: rng.unit() < rates.offline,
            slow: rng.unit() < rates.slow,
            reboots: rng.unit() < rates.reboot,
        }
    }
}

/// Agent `index`'s own stream under `seed` (its behaviour first, then its timings).
pub fn agent_rng(seed: u64, index: usize) -> SplitMix64 {
    let mut mix = SplitMix64::new(seed ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    SplitMix64::new(mix.next_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_agents_and_another_seed_others() {
        let rates = Rates {
            fail: 0.1,
            offline: 0.1,
            slow: 0.1,
            reboot: 0.1,
        };
        let draw = |seed| -> Vec<Behaviour> {
            (0..1000)
                .map(|i| Behaviour::draw(seed, i, &rates))
                .collect()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let failing = draw(7).iter().filter(|b| b.fails).count();
        assert!((60..=140).contains(&failing), "{failing} of 1000 at 10 %");
    }

    #[test]
    fn rates_of_zero_and_one_are_exact() {
        let all = Rates {
            fail: 1.0,
            offline: 0.0,
            slow: 1.0,
            reboot: 0.0,
        };
        for i in 0..500 {
            let b = Behaviour::draw(3, i, &all);
            assert!(b.fails && b.slow && !b.offline && !b.reboots, "{i}: {b:?}");
        }
    }
}
