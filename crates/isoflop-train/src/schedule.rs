//! The warmup-stable-decay (WSD) learning-rate schedule.

use isoflop_core::Recipe;

/// Warmup-stable-decay: linear warmup from 0 to the peak, a constant plateau, then a linear
/// decay to `min_lr_frac · peak` over the final steps.
///
/// Steps are counted as in the optimiser: the update taken at step index `s` (0-based) is
/// the `t = s + 1`-th, and uses
///
/// * warmup (`t ≤ W`): `peak · t / W`, reaching the peak on the `W`-th update;
/// * decay (`t > steps − D`): `peak − (peak − floor) · (t − (steps − D)) / D`, reaching the
///   floor on the last update;
/// * otherwise the peak.
///
/// `W = round(warmup_frac · steps)` and `D = round(decay_frac · steps)`. Where warmup and
/// decay overlap the smaller of the two applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Peak learning rate.
    pub peak: f64,
    /// Final learning rate at the end of the decay.
    pub floor: f64,
    /// Total optimiser steps.
    pub steps: u64,
    /// Warmup length `W` in steps.
    pub warmup: u64,
    /// Decay length `D` in steps.
    pub decay: u64,
}

impl Schedule {
    /// The schedule of a recipe.
    pub fn from_recipe(r: &Recipe) -> Self {
        let len = |frac: f64| ((frac.clamp(0.0, 1.0) * r.steps as f64).round() as u64).min(r.steps);
        Self { peak: r.lr, floor: r.lr * r.min_lr_frac, steps: r.steps, warmup: len(r.warmup_frac), decay: len(r.decay_frac) }
    }

    /// Learning rate of the update taken at step index `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        let t = step.saturating_add(1).min(self.steps.max(1));
        let mut lr = self.peak;
        if self.warmup > 0 && t <= self.warmup {
            lr = lr.min(self.peak * t as f64 / self.warmup as f64);
        }
        let decay_start = self.steps - self.decay;
        if self.decay > 0 && t > decay_start {
            let frac = (t - decay_start) as f64 / self.decay as f64;
            lr = lr.min(self.peak - (self.peak - self.floor) * frac);
        }
        lr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(steps: u64, warmup_frac: f64, decay_frac: f64, min_lr_frac: f64) -> Schedule {
        let r = Recipe {
            batch: 1,
            steps,
            lr: 1.0,
            warmup_frac,
            decay_frac,
            min_lr_frac,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip: 0.0,
            cautious: false,
            wd_schedule: false,
            decay_embeddings: false,
            decay_norms: false,
        };
        Schedule::from_recipe(&r)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn warmup_stable_decay_edges() {
        let s = sched(100, 0.1, 0.2, 0.1);
        assert_eq!((s.warmup, s.decay), (10, 20));
        assert!(close(s.lr(0), 0.1)); // first update: 1/W of the peak
        assert!(close(s.lr(4), 0.5));
        assert!(close(s.lr(9), 1.0)); // W-th update reaches the peak
        assert!(close(s.lr(10), 1.0));
        assert!(close(s.lr(79), 1.0)); // last plateau update (t = 80 = steps - D)
        assert!(close(s.lr(80), 1.0 - 0.9 / 20.0)); // first decay update
        assert!(close(s.lr(89), 1.0 - 0.9 * 0.5));
        assert!(close(s.lr(99), 0.1)); // last update reaches the floor
        assert!(close(s.lr(1000), 0.1)); // past the end stays at the floor
        for st in 0..100 {
            assert!(s.lr(st) > 0.0 && s.lr(st) <= 1.0);
        }
    }

    #[test]
    fn no_warmup_no_decay_and_overlap() {
        let s = sched(50, 0.0, 0.0, 0.0);
        assert!((0..50).all(|t| close(s.lr(t), 1.0)));
        let s = sched(10, 0.0, 1.0, 0.0);
        assert!(close(s.lr(0), 0.9));
        assert!(close(s.lr(9), 0.0));
        // Warmup and decay over the whole run: a triangle, the smaller of the two.
        let s = sched(10, 1.0, 1.0, 0.0);
        assert!(close(s.lr(0), 0.1));
        assert!(close(s.lr(4), 0.5));
        assert!(close(s.lr(5), 0.4));
        assert!(close(s.lr(9), 0.0));
        let s = sched(1, 0.5, 0.5, 0.0);
        assert_eq!((s.warmup, s.decay), (1, 1));
        assert!(close(s.lr(0), 0.0));
        let s = sched(0, 0.1, 0.1, 0.0);
        assert!(s.lr(0).is_finite());
    }
}
