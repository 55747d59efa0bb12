//! The training batch sampler: the batch of step `s` is a pure function of `(seed, s)`.
//!
//! Each step draws `B` window start positions uniformly from `0..=len − (T+1)` with a
//! [`SplitMix64`] generator seeded from `(seed, step)` alone, so a run resumed at step `k`
//! sees exactly the data an uninterrupted run would have seen, and no global RNG is touched.

use isoflop_data::Shard;
use std::path::PathBuf;
use tch::{Device, TchError, Tensor};

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny, fast, well-mixed 64-bit generator.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output function: a bijective 64-bit mixer.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SplitMix64 {
    /// A generator starting from `state`.
    pub fn new(state: u64) -> Self {
        Self { state }
    }

    /// The generator for one training step of one run.
    pub fn for_step(seed: u64, step: u64) -> Self {
        Self::new(mix64(seed) ^ mix64(step.wrapping_add(GOLDEN_GAMMA).wrapping_mul(0xD1B5_4A32_D192_ED03)))
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// A value in `0..n` (`n > 0`) by multiply-shift; its bias, at most `n / 2⁶⁴`, is
    /// negligible for any shard.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// The shard is too short to hold a single training window.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {tokens} tokens, a training window needs {needed}")]
pub struct ShardTooShort {
    /// The shard.
    pub path: PathBuf,
    /// Its token count.
    pub tokens: usize,
    /// Tokens one window needs (`seq_len + 1`).
    pub needed: usize,
}

/// One training batch on the device.
#[derive(Debug)]
pub struct Batch {
    /// `[B, T]` token ids (`i64`): `window[..T]`.
    pub inputs: Tensor,
    /// `[B, T]` next-token targets (`i64`): `window[1..]`.
    pub targets: Tensor,
}

/// Draws deterministic random windows of `seq_len + 1` tokens from a shard.
#[derive(Debug)]
pub struct BatchSampler<'a> {
    shard: &'a Shard,
    batch: usize,
    seq_len: usize,
    seed: u64,
}

impl<'a> BatchSampler<'a> {
    /// A sampler of `batch` sequences of `seq_len` tokens; the shard must hold at least
    /// `seq_len + 1` tokens.
    pub fn new(shard: &'a Shard, batch: usize, seq_len: usize, seed: u64) -> Result<Self, ShardTooShort> {
        if shard.len() < seq_len + 1 {
            return Err(ShardTooShort { path: shard.path().to_path_buf(), tokens: shard.len(), needed: seq_len + 1 });
        }
        Ok(Self { shard, batch, seq_len, seed })
    }

    /// Start positions of the windows of step `step`.
    pub fn positions(&self, step: u64) -> Vec<usize> {
        let mut rng = SplitMix64::for_step(self.seed, step);
        let choices = (self.shard.len() - self.seq_len) as u64;
        (0..self.batch).map(|_| rng.below(choices) as usize).collect()
    }

    /// Token windows of step `step`, `[B, T+1]`, row-major.
    pub fn windows(&self, step: u64) -> Vec<i64> {
        let w = self.seq_len + 1;
        let mut buf = vec![0i64; self.batch * w];
        for (row, start) in buf.chunks_exact_mut(w).zip(self.positions(step)) {
            self.shard.read_into(start, row);
        }
        buf
    }

    /// The batch of step `step`, on `device`.
    pub fn batch(&self, step: u64, device: Device) -> Result<Batch, TchError> {
        let (b, t) = (self.batch as i64, self.seq_len as i64);
        let all = Tensor::f_from_slice(&self.windows(step))?.f_view([b, t + 1])?.f_to_device(device)?;
        Ok(Batch { inputs: all.f_narrow(1, 0, t)?, targets: all.f_narrow(1, 1, t)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isoflop_data::ShardWriter;

    pub(crate) fn counting_shard(dir: &std::path::Path, n: u32) -> Shard {
        let path = dir.join("count.bin");
        let mut w = ShardWriter::create(&path, 70_000).unwrap();
        w.push_document(&(0..n).collect::<Vec<_>>(), n as u64).unwrap();
        w.finish().unwrap();
        Shard::open(&path).unwrap()
    }

    #[test]
    fn batches_are_a_pure_function_of_seed_and_step() {
        let dir = tempfile::tempdir().unwrap();
        let shard = counting_shard(dir.path(), 10_000);
        let s = BatchSampler::new(&shard, 8, 32, 42).unwrap();
        let again = BatchSampler::new(&shard, 8, 32, 42).unwrap();
        // Any order of asking gives the same answer.
        let later = again.positions(7);
        assert_eq!(s.positions(7), later);
        assert_eq!(s.positions(3), again.positions(3));
        assert_ne!(s.positions(3), s.positions(4));
        assert_ne!(s.positions(3), BatchSampler::new(&shard, 8, 32, 43).unwrap().positions(3));
        for step in 0..50 {
            assert!(s.positions(step).iter().all(|&p| p + 33 <= 10_000));
        }
        // Windows are contiguous slices; targets are inputs shifted by one.
        let b = s.batch(5, Device::Cpu).unwrap();
        assert_eq!(b.inputs.size(), vec![8, 32]);
        let inputs: Vec<Vec<i64>> = (&b.inputs).try_into().unwrap();
        let targets: Vec<Vec<i64>> = (&b.targets).try_into().unwrap();
        for ((i, t), start) in inputs.iter().zip(&targets).zip(s.positions(5)) {
            assert_eq!(i[0], start as i64);
            assert!(i.windows(2).all(|w| w[1] == w[0] + 1));
            assert!(i[1..].iter().zip(t).all(|(a, b)| a == b));
            assert_eq!(t[31], i[31] + 1);
        }
    }

    #[test]
    fn positions_cover_the_shard_and_short_shards_fail() {
        let dir = tempfile::tempdir().unwrap();
        let shard = counting_shard(dir.path(), 40);
        let s = BatchSampler::new(&shard, 64, 32, 0).unwrap();
        let mut seen = [false; 8];
        for step in 0..20 {
            for p in s.positions(step) {
                seen[p] = true;
            }
        }
        assert!(seen.iter().all(|&x| x), "every start 0..=7 is drawn");
        assert!(BatchSampler::new(&shard, 1, 39, 0).is_ok());
        let err = BatchSampler::new(&shard, 1, 40, 0).unwrap_err().to_string();
        assert!(err.contains("count.bin"), "{err}");
    }

    #[test]
    fn splitmix_known_values() {
        // Reference outputs of SplitMix64 seeded with 0.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let mut r = SplitMix64::new(1);
        assert!((0..1000).all(|_| r.below(10) < 10));
    }
}
