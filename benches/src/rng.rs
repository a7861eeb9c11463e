//! A small deterministic pseudo-random generator (xorshift64*) for synthetic workloads: the
//! same seed gives the same traffic on every run, with no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Log-uniform in [low, high).
    pub fn log_uniform(&mut self, low: u64, high: u64) -> u64 {
        let x = self.unit();
        ((low as f64).ln() + x * ((high as f64).ln() - (low as f64).ln())).exp() as u64
    }
}
