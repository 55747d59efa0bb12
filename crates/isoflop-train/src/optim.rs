//! AdamW written over the model's tensors, with state that can be checkpointed.
//!
//! One update, at step `t` (1-based) with learning rate `lr`, for every parameter `p` with
//! gradient `g`:
//!
//! 1. global clipping: when `grad_clip > 0`, every `g` is scaled by
//!    `min(1, grad_clip / (‖g‖₂ + 1e-6))`, the norm taken over all gradients together;
//! 2. `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`;
//! 3. decoupled weight decay, for decayed parameters only: `p ← p − lr·wd·p`;
//! 4. `p ← p − lr/(1−β₁ᵗ) · m / (√v / √(1−β₂ᵗ) + ε)`.
//!
//! Everything stays on the device: no value is read back to the host.

use crate::model::{Param, ParamKind};
use isoflop_core::Recipe;
use std::collections::HashMap;
use tch::{Device, Kind, TchError, Tensor};

/// Which parameter kinds receive weight decay besides matrices (which always do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecayScope {
    /// Decay the token embedding (default: no).
    pub embeddings: bool,
    /// Decay the 1-D RMSNorm weights (default: no).
    pub norms: bool,
}

impl DecayScope {
    /// Whether parameters of this kind are decayed.
    pub fn applies_to(&self, kind: ParamKind) -> bool {
        match kind {
            ParamKind::Matrix => true,
            ParamKind::Embedding => self.embeddings,
            ParamKind::Norm => self.norms,
        }
    }
}

/// AdamW hyper-parameters (the learning rate comes from the schedule at each step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// First-moment decay β₁.
    pub beta1: f64,
    /// Second-moment decay β₂.
    pub beta2: f64,
    /// Denominator ε.
    pub eps: f64,
    /// Decoupled weight decay coefficient.
    pub weight_decay: f64,
    /// Global gradient-norm clip; 0 (or less) disables clipping.
    pub grad_clip: f64,
    /// Which parameters are decayed.
    pub decay_scope: DecayScope,
}

impl AdamWConfig {
    /// The optimiser settings of a recipe, with the default [`DecayScope`].
    pub fn from_recipe(r: &Recipe) -> Self {
        Self {
            beta1: r.beta1,
            beta2: r.beta2,
            eps: r.eps,
            weight_decay: r.weight_decay,
            grad_clip: r.grad_clip,
            decay_scope: DecayScope::default(),
        }
    }
}

struct Slot {
    name: String,
    param: Tensor,
    decay: bool,
    m: Tensor,
    v: Tensor,
}

/// Hand-written AdamW over a fixed list of parameters.
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    step: u64,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW").field("cfg", &self.cfg).field("params", &self.slots.len()).field("step", &self.step).finish()
    }
}

impl AdamW {
    /// An optimiser at step 0 with zero moments for `params`.
    pub fn new(params: &[Param], cfg: AdamWConfig) -> Result<Self, TchError> {
        let slots = params
            .iter()
            .map(|p| {
                Ok(Slot {
                    name: p.name.clone(),
                    param: p.tensor.shallow_clone(),
                    decay: cfg.decay_scope.applies_to(p.kind),
                    m: p.tensor.f_zeros_like()?.f_detach()?,
                    v: p.tensor.f_zeros_like()?.f_detach()?,
                })
            })
            .collect::<Result<_, TchError>>()?;
        Ok(Self { cfg, slots, step: 0 })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    /// Number of updates taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Clears every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for s in &mut self.slots {
            s.param.zero_grad();
        }
    }

    /// Global L2 norm of all current gradients, as a 0-d `f32` tensor on the device.
    pub fn grad_norm(&self) -> Result<Tensor, TchError> {
        let norms = self
            .slots
            .iter()
            .map(|s| s.param.grad())
            .filter(|g| g.defined())
            .map(|g| g.f_norm())
            .collect::<Result<Vec<_>, _>>()?;
        if norms.is_empty() {
            let device = self.slots.first().map(|s| s.param.device()).unwrap_or(Device::Cpu);
            return Tensor::f_zeros([], (Kind::Float, device));
        }
        Tensor::f_stack(&norms, 0)?.f_norm()
    }

    /// Takes one AdamW update with learning rate `lr` using the parameters' current gradients
    /// and returns the gradient norm before clipping (on the device; reading it syncs).
    /// Parameters without a gradient are left untouched.
    pub fn step(&mut self, lr: f64) -> Result<Tensor, TchError> {
        tch::no_grad(|| self.step_inner(lr))
    }

    fn step_inner(&mut self, lr: f64) -> Result<Tensor, TchError> {
        let norm = self.grad_norm()?;
        let clip = if self.cfg.grad_clip > 0.0 {
            Some(norm.f_add_scalar(1e-6)?.f_reciprocal()?.f_mul_scalar(self.cfg.grad_clip)?.f_clamp_max(1.0)?)
        } else {
            None
        };
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let step_size = lr / bc1;
        let decay_mul = 1.0 - lr * self.cfg.weight_decay;
        for s in &mut self.slots {
            let mut g = s.param.grad();
            if !g.defined() {
                continue;
            }
            if let Some(c) = &clip {
                g = g.f_mul(c)?;
            }
            let _ = s.m.f_lerp_(&g, 1.0 - b1)?;
            let _ = s.v.f_lerp_(&g.f_square()?, 1.0 - b2)?;
            if s.decay && self.cfg.weight_decay != 0.0 {
                let _ = s.param.f_mul_scalar_(decay_mul)?;
            }
            let denom = s.v.f_sqrt()?.f_div_scalar_(bc2_sqrt)?.f_add_scalar_(self.cfg.eps)?;
            let update = s.m.f_div(&denom)?.f_mul_scalar_(step_size)?;
            let _ = s.param.f_sub_(&update)?;
        }
        Ok(norm)
    }

    /// The first and second moments by parameter name, in parameter order.
    pub fn moments(&self) -> impl Iterator<Item = (&str, &Tensor, &Tensor)> {
        self.slots.iter().map(|s| (s.name.as_str(), &s.m, &s.v))
    }

    /// Replaces the step count and every moment (for resuming from a checkpoint). `moments`
    /// must hold exactly one `(m, v)` pair, of the parameter's shape, per parameter name.
    pub fn restore(&mut self, step: u64, mut moments: HashMap<String, (Tensor, Tensor)>) -> Result<(), TchError> {
        for s in &self.slots {
            let Some((m, v)) = moments.get(&s.name) else {
                return Err(TchError::TensorNameNotFound(s.name.clone(), "optimizer state".into()));
            };
            for t in [m, v] {
                if t.size() != s.param.size() {
                    return Err(TchError::Shape(format!(
                        "moment of {} has shape {:?}, parameter {:?}",
                        s.name,
                        t.size(),
                        s.param.size()
                    )));
                }
            }
        }
        if moments.len() != self.slots.len() {
            let extra: Vec<_> = moments.keys().filter(|k| !self.slots.iter().any(|s| &s.name == *k)).collect();
            return Err(TchError::Shape(format!("optimizer state for unknown parameters {extra:?}")));
        }
        for s in &mut self.slots {
            let (m, v) = moments.remove(&s.name).expect("checked above");
            let device = s.param.device();
            s.m = m.f_to_kind(s.param.kind())?.f_to_device(device)?.f_detach()?;
            s.v = v.f_to_kind(s.param.kind())?.f_to_device(device)?.f_detach()?;
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &str, t: Tensor, kind: ParamKind) -> Param {
        Param { name: name.into(), tensor: t.set_requires_grad(true), kind }
    }

    fn cfg(wd: f64, clip: f64) -> AdamWConfig {
        AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: wd, grad_clip: clip, decay_scope: DecayScope::default() }
    }

    /// Scalar reference implementation of one parameter's trajectory.
    fn reference(p0: f64, grads: &[f64], lr: f64, c: &AdamWConfig, decay: bool) -> f64 {
        let (mut p, mut m, mut v) = (p0, 0.0, 0.0);
        for (i, g) in grads.iter().enumerate() {
            let t = (i + 1) as i32;
            m = c.beta1 * m + (1.0 - c.beta1) * g;
            v = c.beta2 * v + (1.0 - c.beta2) * g * g;
            if decay {
                p -= lr * c.weight_decay * p;
            }
            let mh = m / (1.0 - c.beta1.powi(t));
            let vh = v / (1.0 - c.beta2.powi(t));
            p -= lr * mh / (vh.sqrt() + c.eps);
        }
        p
    }

    #[test]
    fn matches_scalar_reference_and_decay_scope() {
        let c = cfg(0.1, 0.0);
        let w = param("w", Tensor::from_slice(&[0.5f64, -1.5]).view([1, 2]), ParamKind::Matrix);
        let n = param("n", Tensor::from_slice(&[1.0f64]), ParamKind::Norm);
        let e = param("e", Tensor::from_slice(&[2.0f64]).view([1, 1]), ParamKind::Embedding);
        let mut opt = AdamW::new(&[w, n, e], c).unwrap();
        let params: Vec<Tensor> = opt.slots.iter().map(|s| s.param.shallow_clone()).collect();
        // Loss = sum(k * p²) with fixed k gives gradient 2kp: replay it in the reference.
        let mut traj: Vec<Vec<f64>> = vec![vec![]; 4];
        let ks = [0.3, 1.0, 0.7, 0.2];
        for _ in 0..5 {
            opt.zero_grad();
            let flat: Vec<f64> = params.iter().flat_map(|p| Vec::<f64>::try_from(p.flatten(0, -1)).unwrap()).collect();
            let loss = (params[0].square() * Tensor::from_slice(&ks[..2]).view([1, 2])).sum(Kind::Double)
                + params[1].square().sum(Kind::Double) * ks[2]
                + params[2].square().sum(Kind::Double) * ks[3];
            loss.backward();
            for (i, x) in flat.iter().enumerate() {
                traj[i].push(2.0 * ks[i] * x);
            }
            let _ = opt.step(1e-2).unwrap();
        }
        let got: Vec<f64> = params.iter().flat_map(|p| Vec::<f64>::try_from(p.flatten(0, -1)).unwrap()).collect();
        let p0 = [0.5, -1.5, 1.0, 2.0];
        let decays = [true, true, false, false];
        for i in 0..4 {
            let want = reference(p0[i], &traj[i], 1e-2, &c, decays[i]);
            assert!((got[i] - want).abs() < 1e-12, "param {i}: {} vs {want}", got[i]);
        }
        assert_eq!(opt.step_count(), 5);
    }

    #[test]
    fn global_clipping_scales_all_grads() {
        let a = param("a", Tensor::from_slice(&[0.0f64]), ParamKind::Norm);
        let b = param("b", Tensor::from_slice(&[0.0f64]), ParamKind::Norm);
        let mut opt = AdamW::new(&[a, b], cfg(0.0, 1.0)).unwrap();
        let (pa, pb) = (opt.slots[0].param.shallow_clone(), opt.slots[1].param.shallow_clone());
        let loss = (&pa * 3.0 + &pb * 4.0).sum(Kind::Double);
        loss.backward();
        let norm = opt.step(1.0).unwrap().double_value(&[]);
        assert!((norm - 5.0).abs() < 1e-12);
        // First moment after one step is (1-β1)·clipped g = 0.1·(0.6, 0.8).
        let ms: Vec<f64> = opt.moments().map(|(_, m, _)| m.double_value(&[0])).collect();
        assert!((ms[0] - 0.06).abs() < 1e-7 && (ms[1] - 0.08).abs() < 1e-7, "{ms:?}");
    }

    #[test]
    fn restore_checks_names_and_shapes() {
        let a = param("a", Tensor::zeros([2], (Kind::Float, Device::Cpu)), ParamKind::Norm);
        let mut opt = AdamW::new(&[a], cfg(0.0, 0.0)).unwrap();
        let ok = || Tensor::ones([2], (Kind::Float, Device::Cpu));
        assert!(opt.restore(3, HashMap::new()).is_err());
        let bad = HashMap::from([("a".to_string(), (ok(), Tensor::ones([3], (Kind::Float, Device::Cpu))))]);
        assert!(opt.restore(3, bad).is_err());
        let extra = HashMap::from([("a".to_string(), (ok(), ok())), ("b".to_string(), (ok(), ok()))]);
        assert!(opt.restore(3, extra).is_err());
        opt.restore(3, HashMap::from([("a".to_string(), (ok(), ok()))])).unwrap();
        assert_eq!(opt.step_count(), 3);
        assert_eq!(opt.moments().next().unwrap().1.sum(Kind::Float).double_value(&[]), 2.0);
    }
}
