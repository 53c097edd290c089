//! xorshift64*: a tiny deterministic generator for tests (no `rand`
//! dependency), shared by the tests that need reproducible input.

/// A seeded xorshift64* generator.
pub struct XorShift(u64);

#[allow(dead_code)] // Each test crate uses the part it needs.
impl XorShift {
    /// A generator for `seed`; any seed works.
    pub fn new(seed: u64) -> Self {
        // Never zero (xorshift's fixed point); spread small seeds apart.
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 pseudo-random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `(0, 1]`.
    pub fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}
