//! AdamW written over flat parameter buffers, with state that can be checkpointed.
//!
//! One update, at step `t` (1-based) with learning rate `lr`, for every parameter `p` with
//! gradient `g`:
//!
//! 1. global clipping: when `grad_clip > 0`, every `g` is scaled by
//!    `min(1, grad_clip / (‖g‖₂ + 1e-6))`, the norm taken over all gradients together;
//! 2. `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`;
//! 3. decoupled weight decay, for decayed parameters only: `p ← p − lr·wd·s·p`, where
//!    `s = lr / lr_peak` with [`AdamWConfig::wd_schedule`] and 1 otherwise;
//! 4. `u = m / (√v / √(1−β₂ᵗ) + ε)`; with [`AdamWConfig::cautious`], `u` is zeroed where
//!    `m·g ≤ 0` (the update's sign disagrees with the gradient's) and the kept entries are
//!    rescaled by `n / (kept + 1)`, `n` the number of scalars (the Cautious optimizer's
//!    normalisation, counted over all parameters together);
//! 5. `p ← p − lr/(1−β₁ᵗ) · u`.
//!
//! Layout: every parameter, its gradient and its two moments are views into one contiguous
//! buffer each (decayed parameters first), so an update is a dozen large kernels however many
//! tensors the model has. [`AdamW::new`] moves the parameters into the buffer; the gradients
//! are moved in on the first update (autograd then accumulates into them in place, and
//! [`AdamW::zero_grad`] zeroes the whole buffer at once). All parameters must share one
//! device and dtype. A parameter without a gradient counts as having a zero gradient.
//!
//! Mixed precision ([`AdamW::with_compute_kind`], e.g. bf16): the flat buffers above stay in
//! the parameters' own dtype (fp32: the master weights, their gradients and moments), and two
//! more flat buffers of the compute dtype are added: a copy of the parameters, whose views
//! become the model's tensors (so forward and backward run in the compute dtype), and the
//! gradient buffer autograd accumulates into. [`AdamW::fold_grads`] adds the compute
//! gradients into the master gradient buffer (one kernel; a plain cast after
//! [`AdamW::zero_grad`]) and clears them, so micro-batch accumulation happens in the master
//! dtype; [`AdamW::step`] folds what is left, updates the masters and refreshes the compute
//! copy with one cast kernel. [`AdamW::masters`] gives the master weights (what checkpoints
//! store).
//!
//! Everything stays on the device: no value is read back to the host.

use crate::model::{Param, ParamKind};
use isoflop_core::Recipe;
use std::collections::HashMap;
use tch::{Kind, TchError, Tensor};

/// Which parameter kinds receive weight decay besides matrices (which always do): the
/// recipe's `decay_embeddings` and `decay_norms`.
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
    /// Cautious masking of the update (see the module docs).
    pub cautious: bool,
    /// Scale the weight decay by `lr / lr_peak`.
    pub wd_schedule: bool,
    /// The schedule's peak learning rate (used by `wd_schedule` only).
    pub lr_peak: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
            grad_clip: 0.0,
            decay_scope: DecayScope::default(),
            cautious: false,
            wd_schedule: false,
            lr_peak: 0.0,
        }
    }
}

impl AdamWConfig {
    /// The optimiser settings of a recipe (its decay scope included).
    pub fn from_recipe(r: &Recipe) -> Self {
        Self {
            beta1: r.beta1,
            beta2: r.beta2,
            eps: r.eps,
            weight_decay: r.weight_decay,
            grad_clip: r.grad_clip,
            decay_scope: DecayScope { embeddings: r.decay_embeddings, norms: r.decay_norms },
            cautious: r.cautious,
            wd_schedule: r.wd_schedule,
            lr_peak: r.lr,
        }
    }

    /// The weight-decay factor of an update with learning rate `lr`: `lr·wd·s`.
    fn decay(&self, lr: f64) -> f64 {
        let s = if self.wd_schedule && self.lr_peak > 0.0 { lr / self.lr_peak } else { 1.0 };
        lr * self.weight_decay * s
    }
}

struct Slot {
    name: String,
    /// The model's tensor (its data a view of the compute buffer under mixed precision, else
    /// of the master buffer).
    param: Tensor,
    /// This parameter's view of the master buffer.
    master: Tensor,
    /// This parameter's view of the gradient buffer autograd accumulates into (the compute
    /// gradient buffer under mixed precision, else the master one).
    grad: Tensor,
    m: Tensor,
    v: Tensor,
}

/// Flat buffers: parameters, gradients, moments and one scratch buffer.
struct Flat {
    p: Tensor,
    g: Tensor,
    m: Tensor,
    v: Tensor,
    scratch: Tensor,
    /// Number of leading scalars of `p` that are decayed.
    decayed: i64,
    /// Mixed precision only: the compute copy of `p` and the compute gradient buffer.
    compute: Option<Compute>,
    /// Mixed precision only: `g` holds nothing since the last [`AdamW::zero_grad`] (the next
    /// fold can overwrite it instead of adding to it).
    g_empty: bool,
}

/// The compute-dtype buffers of mixed precision.
struct Compute {
    p: Tensor,
    g: Tensor,
}

/// Hand-written AdamW over a fixed list of parameters.
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    flat: Flat,
    step: u64,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW").field("cfg", &self.cfg).field("params", &self.slots.len()).field("step", &self.step).finish()
    }
}

/// A detached copy of a tensor.
fn copy_of(t: &Tensor) -> Result<Tensor, TchError> {
    tch::no_grad(|| {
        let mut out = t.f_zeros_like()?;
        out.f_copy_(t)?;
        Ok(out)
    })
}

fn view(flat: &Tensor, offset: i64, shape: &[i64]) -> Result<Tensor, TchError> {
    let n: i64 = shape.iter().product();
    flat.f_narrow(0, offset, n)?.f_view(shape)
}

impl AdamW {
    /// An optimiser at step 0 with zero moments for `params`, which it moves into its flat
    /// parameter buffer (their values are kept). The model computes in the parameters' dtype.
    pub fn new(params: &[Param], cfg: AdamWConfig) -> Result<Self, TchError> {
        let kind = params.first().map(|p| p.tensor.kind()).unwrap_or(Kind::Float);
        Self::with_compute_kind(params, cfg, kind)
    }

    /// Like [`AdamW::new`], but when `compute` differs from the parameters' dtype (mixed
    /// precision, see the module docs) the parameters' data becomes views of a flat buffer of
    /// `compute` dtype holding their rounded values, and the masters stay in the optimiser.
    pub fn with_compute_kind(params: &[Param], cfg: AdamWConfig, compute: Kind) -> Result<Self, TchError> {
        let (kind, device) = match params.first() {
            Some(p) => (p.tensor.kind(), p.tensor.device()),
            None => (Kind::Float, tch::Device::Cpu),
        };
        if let Some(p) = params.iter().find(|p| p.tensor.kind() != kind || p.tensor.device() != device) {
            return Err(TchError::Kind(format!("parameter {} is not {kind:?} on {device:?} like the first", p.name)));
        }
        // Decayed parameters first, so decay is one kernel over a prefix.
        let mut order: Vec<usize> = (0..params.len()).collect();
        order.sort_by_key(|&i| !cfg.decay_scope.applies_to(params[i].kind));
        let mut offsets = vec![0i64; params.len()];
        let (mut total, mut decayed) = (0i64, 0i64);
        for &i in &order {
            offsets[i] = total;
            total += params[i].tensor.numel() as i64;
            if cfg.decay_scope.applies_to(params[i].kind) {
                decayed = total;
            }
        }
        let zeros = |k: Kind| Tensor::f_zeros([total], (k, device));
        let compute = if compute != kind { Some(Compute { p: zeros(compute)?, g: zeros(compute)? }) } else { None };
        let flat = Flat {
            p: zeros(kind)?,
            g: zeros(kind)?,
            m: zeros(kind)?,
            v: zeros(kind)?,
            scratch: zeros(kind)?,
            decayed,
            compute,
            g_empty: true,
        };
        let slots = tch::no_grad(|| {
            params
                .iter()
                .zip(&offsets)
                .map(|(p, &off)| {
                    let shape = p.tensor.size();
                    let mut master = view(&flat.p, off, &shape)?;
                    master.f_copy_(&p.tensor)?;
                    let (data, grad) = match &flat.compute {
                        Some(c) => {
                            let mut data = view(&c.p, off, &shape)?;
                            data.f_copy_(&master)?;
                            (data, view(&c.g, off, &shape)?)
                        }
                        None => (master.shallow_clone(), view(&flat.g, off, &shape)?),
                    };
                    let mut param = p.tensor.shallow_clone();
                    param.f_set_data(&data)?;
                    Ok(Slot {
                        name: p.name.clone(),
                        param,
                        master,
                        grad,
                        m: view(&flat.m, off, &shape)?,
                        v: view(&flat.v, off, &shape)?,
                    })
                })
                .collect::<Result<Vec<_>, TchError>>()
        })?;
        Ok(Self { cfg, slots, flat, step: 0 })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    /// Number of updates taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The dtype the model computes in (the parameters' data), which is the masters' dtype
    /// unless mixed precision is on.
    pub fn compute_kind(&self) -> Kind {
        match &self.flat.compute {
            Some(c) => c.p.kind(),
            None => self.flat.p.kind(),
        }
    }

    /// Clears every parameter's gradient (one kernel once the gradients live in the buffer).
    pub fn zero_grad(&mut self) {
        if self.grads_bound() {
            let _ = match &mut self.flat.compute {
                Some(c) => c.g.zero_(),
                None => self.flat.g.zero_(),
            };
        } else {
            for s in &mut self.slots {
                s.param.zero_grad();
            }
        }
        self.flat.g_empty = true;
    }

    /// Mixed precision: moves the gradients accumulated so far (in the compute dtype) into the
    /// master gradient buffer and clears them, so that further backward passes accumulate in
    /// the master dtype (call it after each micro-batch). Without mixed precision it does
    /// nothing: the gradients already accumulate in the master buffer.
    pub fn fold_grads(&mut self) -> Result<(), TchError> {
        if self.flat.compute.is_none() {
            return Ok(());
        }
        self.gather_grads()?;
        let Flat { g, compute, g_empty, .. } = &mut self.flat;
        let c = compute.as_mut().expect("mixed precision");
        tch::no_grad(|| {
            if *g_empty {
                g.f_copy_(&c.g)?;
            } else {
                let _ = g.f_add_(&c.g)?;
            }
            c.g.f_zero_().map(|_| ())
        })?;
        *g_empty = false;
        Ok(())
    }

    /// Copies the master weights into the compute copy (one cast kernel); needed after the
    /// masters were overwritten (e.g. a checkpoint loaded). Does nothing without mixed
    /// precision.
    pub fn refresh_compute(&mut self) -> Result<(), TchError> {
        if let Some(c) = &mut self.flat.compute {
            tch::no_grad(|| c.p.f_copy_(&self.flat.p))?;
        }
        Ok(())
    }

    /// The master weights by parameter name, in parameter order (the parameters themselves
    /// without mixed precision).
    pub fn masters(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.slots.iter().map(|s| (s.name.as_str(), &s.master))
    }

    /// A copy of the accumulated gradient of every parameter as one flat fp32-or-master-dtype
    /// vector, in the optimiser's buffer order (for tests and diagnostics; it gathers and
    /// folds like [`AdamW::step`] does first).
    pub fn flat_grads(&mut self) -> Result<Tensor, TchError> {
        self.gather_grads()?;
        self.fold_grads()?;
        copy_of(&self.flat.g)
    }

    /// A copy of the master weights as one flat vector, in the same order as
    /// [`AdamW::flat_grads`].
    pub fn flat_masters(&self) -> Result<Tensor, TchError> {
        copy_of(&self.flat.p)
    }

    /// Whether every parameter's gradient is its view of the flat gradient buffer.
    fn grads_bound(&self) -> bool {
        self.slots.iter().all(|s| {
            let g = s.param.grad();
            g.defined() && g.data_ptr() == s.grad.data_ptr()
        })
    }

    /// Moves every gradient into the flat buffer (copying it there the first time, or after
    /// autograd replaced it); a missing gradient becomes zeros.
    fn gather_grads(&mut self) -> Result<(), TchError> {
        tch::no_grad(|| {
            for s in &mut self.slots {
                let mut g = s.param.grad();
                if !g.defined() {
                    let _ = s.grad.f_zero_()?;
                } else if g.data_ptr() != s.grad.data_ptr() {
                    s.grad.f_copy_(&g)?;
                    g.f_set_data(&s.grad)?;
                }
            }
            Ok(())
        })
    }

    /// Global L2 norm of all current gradients, as a 0-d tensor on the device.
    pub fn grad_norm(&mut self) -> Result<Tensor, TchError> {
        self.gather_grads()?;
        self.fold_grads()?;
        tch::no_grad(|| self.flat.g.f_norm())
    }

    /// Takes one AdamW update with learning rate `lr` using the parameters' current gradients
    /// and returns the gradient norm before clipping (on the device; reading it syncs). The
    /// gradients are consumed: clipped in place, and with `cautious` overwritten by scratch
    /// values; call [`AdamW::zero_grad`] before the next backward pass.
    pub fn step(&mut self, lr: f64) -> Result<Tensor, TchError> {
        self.gather_grads()?;
        self.fold_grads()?;
        let norm = tch::no_grad(|| self.step_inner(lr))?;
        self.refresh_compute()?;
        Ok(norm)
    }

    fn step_inner(&mut self, lr: f64) -> Result<Tensor, TchError> {
        let Flat { p, g, m, v, scratch: s, decayed, .. } = &mut self.flat;
        let norm = g.f_norm()?;
        if self.cfg.grad_clip > 0.0 {
            let clip = norm.f_add_scalar(1e-6)?.f_reciprocal()?.f_mul_scalar(self.cfg.grad_clip)?.f_clamp_max(1.0)?;
            let _ = g.f_mul_(&clip)?;
        }
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let step_size = lr / bc1;
        let _ = m.f_lerp_(g, 1.0 - b1)?;
        let _ = g.f_mul_out(s, g)?;
        let _ = v.f_lerp_(s, 1.0 - b2)?;
        let decay = self.cfg.decay(lr);
        if decay != 0.0 && *decayed > 0 {
            let _ = p.f_narrow(0, 0, *decayed)?.f_mul_scalar_(1.0 - decay)?;
        }
        let _ = v.f_sqrt_out(s)?;
        let _ = s.f_div_scalar_(bc2_sqrt)?.f_add_scalar_(self.cfg.eps)?;
        let _ = m.f_div_out(s, s)?;
        if self.cfg.cautious {
            // Reuse the gradient buffer for the mask: it is cleared before the next backward.
            let _ = m.f_mul_out(g, g)?;
            let mask = g.f_gt(0.0)?;
            let scale = mask.f_sum(s.kind())?.f_add_scalar(1.0)?.f_reciprocal()?.f_mul_scalar(mask.numel() as f64)?;
            let _ = s.f_mul_(&mask)?.f_mul_(&scale)?;
        }
        let _ = s.f_mul_scalar_(step_size)?;
        let _ = p.f_sub_(s)?;
        Ok(norm)
    }

    /// The first and second moments by parameter name, in parameter order.
    pub fn moments(&self) -> impl Iterator<Item = (&str, &Tensor, &Tensor)> {
        self.slots.iter().map(|s| (s.name.as_str(), &s.m, &s.v))
    }

    /// Replaces the step count and every moment (for resuming from a checkpoint). `moments`
    /// must hold exactly one `(m, v)` pair, of the parameter's shape, per parameter name.
    pub fn restore(&mut self, step: u64, moments: HashMap<String, (Tensor, Tensor)>) -> Result<(), TchError> {
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
        tch::no_grad(|| {
            for s in &mut self.slots {
                let (m, v) = &moments[&s.name];
                s.m.f_copy_(m)?;
                s.v.f_copy_(v)?;
            }
            Ok::<_, TchError>(())
        })?;
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn param(name: &str, t: Tensor, kind: ParamKind) -> Param {
        Param { name: name.into(), tensor: t.set_requires_grad(true), kind }
    }

    fn cfg(wd: f64, clip: f64) -> AdamWConfig {
        AdamWConfig { weight_decay: wd, grad_clip: clip, ..AdamWConfig::default() }
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

    /// Scalar reference of the whole parameter vector with cautious masking (the kept fraction
    /// counted over all scalars) and the weight decay scaled by `lr / lr_peak`.
    /// Gradients are `2k(p − c)`. Returns the final parameters and how many scalar updates the
    /// mask dropped in total.
    fn reference_cautious(p0: &[f64], k: &[f64], c: &[f64], lrs: &[f64], cfg: &AdamWConfig, decay: &[bool]) -> (Vec<f64>, usize) {
        let n = p0.len();
        let (mut p, mut m, mut v) = (p0.to_vec(), vec![0.0; n], vec![0.0; n]);
        let mut dropped = 0;
        for (i, &lr) in lrs.iter().enumerate() {
            let t = (i + 1) as i32;
            let g: Vec<f64> = (0..n).map(|j| 2.0 * k[j] * (p[j] - c[j])).collect();
            let mut u = vec![0.0; n];
            for j in 0..n {
                m[j] = cfg.beta1 * m[j] + (1.0 - cfg.beta1) * g[j];
                v[j] = cfg.beta2 * v[j] + (1.0 - cfg.beta2) * g[j] * g[j];
                let denom = (v[j] / (1.0 - cfg.beta2.powi(t))).sqrt() + cfg.eps;
                u[j] = m[j] / denom;
            }
            let keep: Vec<bool> = (0..n).map(|j| !cfg.cautious || m[j] * g[j] > 0.0).collect();
            let kept = keep.iter().filter(|&&x| x).count();
            dropped += n - kept;
            let scale = if cfg.cautious { n as f64 / (kept as f64 + 1.0) } else { 1.0 };
            let wd_scale = if cfg.wd_schedule { lr / cfg.lr_peak } else { 1.0 };
            for j in 0..n {
                if decay[j] {
                    p[j] -= lr * cfg.weight_decay * wd_scale * p[j];
                }
                let uj = if keep[j] { u[j] * scale } else { 0.0 };
                p[j] -= lr / (1.0 - cfg.beta1.powi(t)) * uj;
            }
        }
        (p, dropped)
    }

    #[test]
    fn cautious_and_scheduled_decay_match_scalar_reference() {
        let c = AdamWConfig { weight_decay: 0.3, cautious: true, wd_schedule: true, lr_peak: 0.4, ..AdamWConfig::default() };
        let w = param("w", Tensor::from_slice(&[0.5f64, -1.5, 0.2]).view([1, 3]), ParamKind::Matrix);
        let n = param("n", Tensor::from_slice(&[1.0f64, 3.0]), ParamKind::Norm);
        let mut opt = AdamW::new(&[n, w], c).unwrap();
        let params: Vec<Tensor> = opt.slots.iter().map(|s| s.param.shallow_clone()).collect();
        let k = [1.0, 0.5, 2.0, 0.3, 1.5];
        let target = [0.3, 0.1, -0.2, 0.9, -0.4];
        let lrs: Vec<f64> = (1..=12).map(|i| 0.4 * (1.0 - i as f64 / 24.0)).collect();
        for &lr in &lrs {
            opt.zero_grad();
            let kt = Tensor::from_slice(&k);
            let ct = Tensor::from_slice(&target);
            let flat = Tensor::cat(&[params[0].flatten(0, -1), params[1].flatten(0, -1)], 0);
            let loss = ((flat - ct).square() * kt).sum(Kind::Double);
            loss.backward();
            let _ = opt.step(lr).unwrap();
        }
        let got: Vec<f64> = params.iter().flat_map(|p| Vec::<f64>::try_from(p.flatten(0, -1)).unwrap()).collect();
        let p0 = [1.0, 3.0, 0.5, -1.5, 0.2];
        let (want, dropped) = reference_cautious(&p0, &k, &target, &lrs, &c, &[false, false, true, true, true]);
        assert!(dropped > 0, "the test should exercise the mask");
        for i in 0..5 {
            assert!((got[i] - want[i]).abs() < 1e-12, "param {i}: {} vs {}", got[i], want[i]);
        }
        // Without the options the trajectory differs.
        let plain =
            reference_cautious(&p0, &k, &target, &lrs, &AdamWConfig { cautious: false, wd_schedule: false, ..c }, &[false; 5]);
        assert!(plain.0.iter().zip(&want).any(|(a, b)| (a - b).abs() > 1e-6));
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

    /// bf16 mixed precision over a real model: the model's tensors are bf16 views of one
    /// buffer, the masters stay fp32 and after every step the bf16 copy is exactly the masters
    /// rounded to bf16; the trajectory stays close to the fp32 one.
    #[test]
    fn bf16_mixed_precision_keeps_fp32_masters() {
        use crate::model::Transformer;
        use crate::model::tests::tiny_shape;
        let build = |compute: Kind| {
            let _g = crate::trainer::INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            tch::manual_seed(3);
            let vs = tch::nn::VarStore::new(Device::Cpu);
            let model = Transformer::new(&vs.root(), &crate::model::tests::tiny_shape()).unwrap();
            let c = AdamWConfig { weight_decay: 0.1, grad_clip: 1.0, ..AdamWConfig::default() };
            let opt = AdamW::with_compute_kind(model.params(), c, compute).unwrap();
            (vs, model, opt)
        };
        let (_vs, model, mut opt) = build(Kind::BFloat16);
        let (_vs32, model32, mut opt32) = build(Kind::Float);
        assert_eq!((opt.compute_kind(), opt32.compute_kind()), (Kind::BFloat16, Kind::Float));
        let tokens = Tensor::arange(64, (Kind::Int64, Device::Cpu)).remainder(tiny_shape().vocab_size as i64).view([4, 16]);
        let (mut losses, mut losses32) = (vec![], vec![]);
        for _ in 0..10 {
            for (m, o, out) in [(&model, &mut opt, &mut losses), (&model32, &mut opt32, &mut losses32)] {
                o.zero_grad();
                let loss = m.loss(&tokens, &tokens).unwrap();
                assert_eq!(loss.kind(), Kind::Float, "the cross-entropy is fp32");
                loss.backward();
                let _ = o.step(1e-2).unwrap();
                out.push(loss.double_value(&[]));
            }
            for (p, (name, master)) in model.params().iter().zip(opt.masters()) {
                assert_eq!((p.tensor.kind(), master.kind()), (Kind::BFloat16, Kind::Float), "{name}");
                assert_eq!(p.tensor.grad().kind(), Kind::BFloat16, "{name}");
                assert!(p.tensor.equal(&master.to_kind(Kind::BFloat16)), "{name}: the bf16 copy is the rounded master");
            }
        }
        // The model's tensors share one buffer (they are views of it).
        let ptrs: Vec<usize> = model.params().iter().map(|p| p.tensor.data_ptr() as usize).collect();
        let span = ptrs.iter().max().unwrap() - ptrs.iter().min().unwrap();
        assert!(span < 2 * model.param_count() as usize, "{span}");
        assert!(opt.moments().all(|(_, m, v)| m.kind() == Kind::Float && v.kind() == Kind::Float));
        for (a, b) in losses.iter().zip(&losses32) {
            assert!((a - b).abs() < 0.02 * b, "bf16 {losses:?} vs fp32 {losses32:?}");
        }
        assert!(losses[9] < losses[0] - 0.5, "{losses:?}");
        // refresh_compute restores the copy from the masters.
        let mut first = model.params()[0].tensor.shallow_clone();
        let _ = tch::no_grad(|| first.fill_(0.0));
        opt.refresh_compute().unwrap();
        assert!(first.equal(&opt.masters().next().unwrap().1.to_kind(Kind::BFloat16)));
    }

    /// Under mixed precision, gradients of several backward passes folded one by one sum in
    /// the fp32 master buffer; the first fold after zero_grad overwrites it.
    #[test]
    fn folded_bf16_grads_accumulate_in_fp32() {
        let w = param("w", Tensor::from_slice(&[1.0f32, 2.0, 3.0]), ParamKind::Matrix);
        let mut opt = AdamW::with_compute_kind(&[w], cfg(0.0, 0.0), Kind::BFloat16).unwrap();
        let p = opt.slots[0].param.shallow_clone();
        assert_eq!(p.kind(), Kind::BFloat16);
        let pass = |k: f64| (&p * k).sum(Kind::Float).backward();
        for round in 0..2 {
            opt.zero_grad();
            // 1 + 2^-9 is not representable in bf16: accumulated in bf16, 256 + 1/2 would be lost.
            pass(256.0);
            opt.fold_grads().unwrap();
            pass(0.5);
            opt.fold_grads().unwrap();
            let norm = opt.grad_norm().unwrap().double_value(&[]);
            assert!((norm - 256.5 * 3f64.sqrt()).abs() < 1e-3, "round {round}: {norm}");
            assert_eq!(opt.flat.g.kind(), Kind::Float);
            assert_eq!(Vec::<f32>::try_from(&opt.flat.g).unwrap(), vec![256.5f32; 3]);
            let _ = opt.step(1e-2).unwrap();
        }
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
