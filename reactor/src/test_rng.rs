//! A reproducible stream of uniforms for the model's brute-force samplers
//! (tests only): splitmix64.

/// splitmix64, seeded.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// A value uniform in `0..1`, 53 bits.
    pub(crate) fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A value uniform in `lo..hi`.
    pub(crate) fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }

    /// The `(lo, hi)` of an entry `(weight, lo, hi)` drawn by weight.
    pub(crate) fn pick(&mut self, weights: &[(f64, f64, f64)]) -> (f64, f64) {
        let total: f64 = weights.iter().map(|w| w.0).sum();
        let mut u = self.next() * total;
        for &(w, lo, hi) in weights {
            if u < w {
                return (lo, hi);
            }
            u -= w;
        }
        let last = weights[weights.len() - 1];
        (last.1, last.2)
    }
}
