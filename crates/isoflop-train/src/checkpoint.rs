//! Atomic checkpoint directories.
//!
//! A checkpoint of step `s` is the directory `step-{s:08}/` holding
//!
//! * `state.safetensors`: every parameter as `param/<name>`, and the AdamW moments as
//!   `adam_m/<name>` and `adam_v/<name>` (all `f32`, on the CPU). The parameters are the
//!   optimiser's master weights, so a bf16 mixed-precision run stores (and resumes from) the
//!   same fp32 state as an fp32 run;
//! * `manifest.json`: a [`Manifest`], which records the SHA-256 digest and the length of
//!   `state.safetensors` as written (read back from the disk after the fsync).
//!
//! It is written into `step-{s:08}.tmp/`, both files and the directory are fsynced, the
//! directory is renamed into place and the parent fsynced, so a directory named
//! `step-XXXXXXXX` is always complete. [`latest`] ignores any other name (leftovers of a
//! crash), and [`save`] removes leftovers and all but the newest `keep` checkpoints.
//!
//! A complete directory can still be damaged later (a disk, a copy, a user). [`verify`]
//! checks the tensors against the manifest's digest, and [`load`] verifies before it reads:
//! a truncated or corrupt checkpoint is a [`CheckpointError::Corrupt`], never tensors of
//! garbage. [`set_aside`] renames such a directory `step-XXXXXXXX.corrupt` so that [`list`]
//! no longer offers it; the worker then resumes from the checkpoint before it and says so in
//! its first report, and once that report is taken ([`mark_reported`]) the next [`save`]
//! deletes it. Checkpoints of builds before the digest have none and are read unverified.

use crate::optim::AdamW;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use tch::{Device, TchError, Tensor};

/// Version of the checkpoint layout written by this build.
pub const FORMAT_VERSION: u32 = 1;
/// Checkpoints kept by default.
pub const DEFAULT_KEEP: usize = 2;
/// File name of the tensors.
pub const STATE_FILE: &str = "state.safetensors";
/// File name of the manifest.
pub const MANIFEST_FILE: &str = "manifest.json";

/// What a checkpoint is: which run, how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Run the checkpoint belongs to.
    pub run_id: String,
    /// Optimiser steps completed.
    pub step: u64,
    /// Training tokens consumed.
    pub tokens_seen: u64,
    /// The optimiser's own update count (for bias correction).
    pub optimizer_step: u64,
    /// The last progress point reported before this checkpoint (its step, mean loss, learning
    /// rate and gradient norm): a run resumed at its final step reports it again as its final
    /// train loss, rather than scoring a batch again. Absent in checkpoints of older builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress: Option<LastProgress>,
    /// The store whose attempt wrote it ([`isoflop_store`'s store id]); absent in checkpoints
    /// of older builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    /// SHA-256 of `state.safetensors` (lowercase hex) and its length in bytes, as written:
    /// [`save`] fills them in. Absent in checkpoints of older builds (read unverified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_bytes: Option<u64>,
}

/// See [`Manifest::last_progress`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LastProgress {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
}

/// Errors writing or reading a checkpoint; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing a file or directory failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// libtorch failed to serialise or deserialise the tensors.
    #[error("{path}: {source}")]
    Torch { path: PathBuf, source: TchError },
    /// The checkpoint does not match this build or this model.
    #[error("{path}: invalid checkpoint ({reason})")]
    Format { path: PathBuf, reason: String },
    /// The checkpoint's files are damaged: a manifest that does not parse, tensors truncated
    /// or not matching the manifest's digest. Resuming falls back to an older checkpoint.
    #[error("{path}: corrupt checkpoint ({reason})")]
    Corrupt { path: PathBuf, reason: String },
    /// The filesystem has no room for the checkpoint (`ENOSPC`): `free` bytes were free, the
    /// tensors alone need `needed` (0 when a smaller write failed).
    #[error(
        "{path}: the disk is full (no space left on device): the checkpoint needs {needed} bytes of tensors, {free} bytes \
         are free"
    )]
    DiskFull { path: PathBuf, needed: u64, free: u64 },
}

impl CheckpointError {
    /// True when the checkpoint (or its directory) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CheckpointError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Corrupt { path: path.to_path_buf(), reason: reason.into() }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| match source.kind() {
        std::io::ErrorKind::StorageFull => disk_full(path),
        _ => CheckpointError::Io { path: path.to_path_buf(), source },
    }
}

/// A [`CheckpointError::DiskFull`] for a small write to `path` that did not fit, with what the
/// filesystem says is free.
fn disk_full(path: &Path) -> CheckpointError {
    CheckpointError::DiskFull { path: path.to_path_buf(), needed: 0, free: free_bytes(path).unwrap_or(0) }
}

/// Bytes an unprivileged writer may still use on the filesystem holding `path` (or its
/// nearest existing ancestor), if `statvfs` can say.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let st = nix::sys::statvfs::statvfs(existing).ok()?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

fn torch_err(path: &Path) -> impl FnOnce(TchError) -> CheckpointError + '_ {
    move |source| CheckpointError::Torch { path: path.to_path_buf(), source }
}

fn format_err(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Format { path: path.to_path_buf(), reason: reason.into() }
}

/// Directory name of the checkpoint of `step`.
pub fn dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// The step of a complete checkpoint directory name (`step-` and at least 8 digits).
pub fn parse_dir_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    if digits.len() < 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Complete checkpoints in `dir`, oldest first. A missing or unreadable directory has none.
pub fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| Some((parse_dir_name(e.file_name().to_str()?)?, e.path())))
        .collect();
    found.sort();
    found
}

/// The newest complete checkpoint in `dir`, ignoring `.tmp` leftovers.
pub fn latest(dir: &Path) -> Option<(u64, PathBuf)> {
    list(dir).pop()
}

fn fsync(path: &Path) -> Result<(), CheckpointError> {
    File::open(path).and_then(|f| f.sync_all()).map_err(io_err(path))
}

/// Writes the checkpoint of `manifest.step` (the master weights and moments of `opt`) into
/// `dir` atomically, then deletes all but the newest `keep` (at least 1) checkpoints and any
/// leftovers of interrupted saves. Returns the checkpoint's directory.
pub fn save(dir: &Path, manifest: &Manifest, opt: &AdamW, keep: usize) -> Result<PathBuf, CheckpointError> {
    save_keeping(dir, manifest, opt, keep, &[])
}

/// [`save`], never deleting the checkpoints of `kept_steps` (those evaluation jobs score);
/// `keep` counts the others.
pub fn save_keeping(
    dir: &Path,
    manifest: &Manifest,
    opt: &AdamW,
    keep: usize,
    kept_steps: &[u64],
) -> Result<PathBuf, CheckpointError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = dir_name(manifest.step);
    let final_dir = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;

    let state = tmp.join(STATE_FILE);
    let cpu = |t: &Tensor| t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous();
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (n, p) in opt.masters() {
        named.push((format!("param/{n}"), cpu(p).map_err(torch_err(&state))?));
    }
    for (n, m, v) in opt.moments() {
        named.push((format!("adam_m/{n}"), cpu(m).map_err(torch_err(&state))?));
        named.push((format!("adam_v/{n}"), cpu(v).map_err(torch_err(&state))?));
    }
    if let Err(e) = Tensor::write_safetensors(&named, &state) {
        // A partial file would hold the space it took until the next save's clean-up.
        let _ = std::fs::remove_dir_all(&tmp);
        let needed: u64 = named.iter().map(|(_, t)| (t.numel() * t.kind().elt_size_in_bytes()) as u64).sum();
        // libtorch's error carries no kind: a filesystem with less room than the tensors is
        // the full disk (the one failure a retry elsewhere or later can cure).
        return Err(match free_bytes(dir) {
            Some(free) if free < needed => CheckpointError::DiskFull { path: state, needed, free },
            _ => CheckpointError::Torch { path: state, source: e },
        });
    }
    drop(named);
    fsync(&state)?;
    let (digest, bytes) = sha256_file(&state)?;
    let manifest = Manifest { state_sha256: Some(digest), state_bytes: Some(bytes), ..manifest.clone() };

    let mpath = tmp.join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    let mut f = File::create(&mpath).map_err(io_err(&mpath))?;
    f.write_all(&json).and_then(|_| f.sync_all()).map_err(io_err(&mpath))?;
    drop(f);
    fsync(&tmp)?;

    if final_dir.exists() {
        // Re-saving a step: move the old copy aside so the new one can take its name.
        let old = dir.join(format!("{name}.old"));
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
        }
        std::fs::rename(&final_dir, &old).map_err(io_err(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(io_err(&final_dir))?;
    fsync(dir)?;
    prune_keeping(dir, keep, kept_steps)?;
    Ok(final_dir)
}

/// Deletes all but the newest `keep` (at least 1) checkpoints, leftover `.tmp`/`.old`
/// directories of interrupted saves, and checkpoints [`set_aside`] as corrupt once reported
/// ([`mark_reported`]).
pub fn prune(dir: &Path, keep: usize) -> Result<(), CheckpointError> {
    prune_keeping(dir, keep, &[])
}

/// [`prune`], never deleting the checkpoints of `kept_steps`; `keep` counts the others.
pub fn prune_keeping(dir: &Path, keep: usize, kept_steps: &[u64]) -> Result<(), CheckpointError> {
    let all: Vec<(u64, PathBuf)> = list(dir).into_iter().filter(|(s, _)| !kept_steps.contains(s)).collect();
    let excess = all.len().saturating_sub(keep.max(1));
    for (_, path) in &all[..excess] {
        std::fs::remove_dir_all(path).map_err(io_err(path))?;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let leftover = name.strip_suffix(".tmp").or_else(|| name.strip_suffix(".old"));
            let reported = name.strip_suffix(SET_ASIDE_SUFFIX).filter(|_| e.path().join(REPORTED_FILE).exists());
            if leftover.or(reported).and_then(parse_dir_name).is_some() {
                let path = e.path();
                std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
            }
        }
    }
    Ok(())
}

/// SHA-256 (lowercase hex) and length of the file at `path`, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> Result<(String, u64), CheckpointError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    let hex: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, len))
}

/// Reads the manifest of the checkpoint directory `path`. A manifest that is not JSON of a
/// manifest (truncated, overwritten) is [`CheckpointError::Corrupt`]; one of another layout
/// version is [`CheckpointError::Format`].
pub fn read_manifest(path: &Path) -> Result<Manifest, CheckpointError> {
    let mpath = path.join(MANIFEST_FILE);
    let bytes = std::fs::read(&mpath).map_err(io_err(&mpath))?;
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| corrupt(&mpath, e.to_string()))?;
    if m.format_version != FORMAT_VERSION {
        return Err(format_err(&mpath, format!("format version {}, this build reads {FORMAT_VERSION}", m.format_version)));
    }
    Ok(m)
}

/// Checks the checkpoint directory `path`: its manifest reads, and its tensors file has the
/// length and SHA-256 digest the manifest recorded (not checked for checkpoints of builds
/// that recorded none). Returns the manifest.
pub fn verify(path: &Path) -> Result<Manifest, CheckpointError> {
    let manifest = read_manifest(path)?;
    let state = path.join(STATE_FILE);
    let len = std::fs::metadata(&state).map_err(io_err(&state))?.len();
    if let Some(want) = manifest.state_bytes
        && want != len
    {
        return Err(corrupt(&state, format!("{len} bytes, the manifest says {want}")));
    }
    if let Some(want) = &manifest.state_sha256 {
        let (got, _) = sha256_file(&state)?;
        if &got != want {
            return Err(corrupt(&state, format!("SHA-256 {got}, the manifest says {want}")));
        }
    }
    Ok(manifest)
}

/// File in a directory [`set_aside`] renamed: why it was set aside.
pub const SET_ASIDE_FILE: &str = "set-aside.txt";
/// File [`mark_reported`] writes in a set-aside directory: its rejection is on record.
pub const REPORTED_FILE: &str = "reported";

/// Renames the damaged checkpoint directory `path` (`step-XXXXXXXX`) to
/// `step-XXXXXXXX.corrupt`, replacing an older such copy, and writes `reason` into it
/// ([`SET_ASIDE_FILE`]), so that [`list`] and [`latest`] no longer return it and
/// [`set_aside_in`] does. [`prune`] deletes it only once [`mark_reported`] said its rejection
/// is on record (the worker's report was taken): a worker stopped before that leaves it for
/// the next attempt to report. Returns the new path.
pub fn set_aside(path: &Path, reason: &str) -> Result<PathBuf, CheckpointError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint");
    let aside = path.with_file_name(format!("{name}{SET_ASIDE_SUFFIX}"));
    if aside.exists() {
        std::fs::remove_dir_all(&aside).map_err(io_err(&aside))?;
    }
    std::fs::rename(path, &aside).map_err(io_err(path))?;
    // Best effort: the rename is what keeps the checkpoint from being resumed.
    let _ = std::fs::write(aside.join(SET_ASIDE_FILE), reason);
    Ok(aside)
}

/// What [`set_aside`] appends to a damaged checkpoint's directory name.
pub const SET_ASIDE_SUFFIX: &str = ".corrupt";

/// A checkpoint [`set_aside`] as damaged, not yet pruned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    pub step: u64,
    /// Where it is now (`step-XXXXXXXX.corrupt`).
    pub path: PathBuf,
    /// Where it was (`step-XXXXXXXX`).
    pub original: PathBuf,
    /// Why, as recorded when it was set aside (empty when that write failed).
    pub reason: String,
    /// Whether [`mark_reported`] marked it.
    pub reported: bool,
}

/// Marks the set-aside checkpoint directory `aside` (a [`SetAside::path`]) as reported, so
/// that the next save may delete it.
pub fn mark_reported(aside: &Path) -> Result<(), CheckpointError> {
    let marker = aside.join(REPORTED_FILE);
    std::fs::write(&marker, b"").map_err(io_err(&marker))
}

/// The checkpoints in `dir` set aside as damaged and not pruned since, oldest first.
pub fn set_aside_in(dir: &Path) -> Vec<SetAside> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<SetAside> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(SET_ASIDE_SUFFIX)?;
            let step = parse_dir_name(stem)?;
            let path = e.path();
            let reason = std::fs::read_to_string(path.join(SET_ASIDE_FILE)).unwrap_or_default().trim().to_string();
            let reported = path.join(REPORTED_FILE).exists();
            Some(SetAside { step, original: dir.join(stem), path, reason, reported })
        })
        .collect();
    found.sort_by_key(|s| s.step);
    found
}

/// Loads the checkpoint directory `path` into `opt` (built over a model of the same shape:
/// its master weights, the model's compute copy under mixed precision, and its moments) and
/// returns its manifest, after [`verify`]. Every parameter and moment must be present with
/// the right shape, and nothing else.
pub fn load(path: &Path, opt: &mut AdamW) -> Result<Manifest, CheckpointError> {
    let manifest = verify(path)?;
    let state = path.join(STATE_FILE);
    let mut params: HashMap<String, Tensor> = HashMap::new();
    let mut m: HashMap<String, Tensor> = HashMap::new();
    let mut v: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in Tensor::read_safetensors(&state).map_err(torch_err(&state))? {
        let (map, rest) = if let Some(r) = name.strip_prefix("param/") {
            (&mut params, r)
        } else if let Some(r) = name.strip_prefix("adam_m/") {
            (&mut m, r)
        } else if let Some(r) = name.strip_prefix("adam_v/") {
            (&mut v, r)
        } else {
            return Err(format_err(&state, format!("unexpected tensor {name}")));
        };
        map.insert(rest.to_string(), t);
    }
    let count = opt.masters().count();
    if params.len() != count {
        return Err(format_err(&state, format!("{} parameters, the model has {count}", params.len())));
    }
    tch::no_grad(|| -> Result<(), CheckpointError> {
        for (name, p) in opt.masters() {
            let src = params.get(name).ok_or_else(|| format_err(&state, format!("missing param/{name}")))?;
            if src.size() != p.size() {
                return Err(format_err(&state, format!("param/{name} has shape {:?}, the model {:?}", src.size(), p.size())));
            }
            let mut dst = p.shallow_clone();
            dst.f_copy_(src).map_err(torch_err(&state))?;
        }
        Ok(())
    })?;
    opt.refresh_compute().map_err(torch_err(&state))?;
    let mut moments = HashMap::new();
    for (name, mt) in m {
        let vt = v.remove(&name).ok_or_else(|| format_err(&state, format!("missing adam_v/{name}")))?;
        moments.insert(name, (mt, vt));
    }
    if let Some(name) = v.keys().next() {
        return Err(format_err(&state, format!("missing adam_m/{name}")));
    }
    opt.restore(manifest.optimizer_step, moments).map_err(|e| format_err(&state, e.to_string()))?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Transformer;
    use crate::model::tests::tiny_shape;
    use crate::optim::AdamWConfig;
    use tch::{Kind, nn};

    /// Builds a model; holds the init lock so that concurrent seeded builds in other tests
    /// (which assert determinism) see an undisturbed generator.
    fn setup() -> (nn::VarStore, Transformer, AdamW) {
        let _g = crate::trainer::INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Transformer::new(&vs.root(), &tiny_shape()).unwrap();
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, grad_clip: 1.0, ..Default::default() };
        let opt = AdamW::new(model.params(), cfg).unwrap();
        (vs, model, opt)
    }

    fn manifest(step: u64) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            run_id: "r".into(),
            step,
            tokens_seen: step * 10,
            optimizer_step: step,
            last_progress: None,
            store_id: None,
            state_sha256: None,
            state_bytes: None,
        }
    }

    #[test]
    fn round_trip_keep_and_atomicity() {
        let dir = tempfile::tempdir().unwrap();
        let (_vs, model, mut opt) = setup();
        let tokens = Tensor::arange(32, (Kind::Int64, Device::Cpu)).view([2, 16]);
        model.loss(&tokens, &tokens).unwrap().backward();
        let _ = opt.step(1e-2).unwrap();

        assert_eq!(latest(dir.path()), None);
        let p1 = save(dir.path(), &manifest(1), &opt, 2).unwrap();
        assert_eq!(p1.file_name().unwrap(), "step-00000001");
        assert_eq!(latest(dir.path()), Some((1, p1.clone())));
        save(dir.path(), &manifest(2), &opt, 2).unwrap();
        let p3 = save(dir.path(), &manifest(3), &opt, 2).unwrap();
        let steps: Vec<u64> = list(dir.path()).into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![2, 3], "only the newest two are kept");
        // Re-saving an existing step replaces it.
        save(dir.path(), &manifest(3), &opt, 2).unwrap();

        // A half-written checkpoint of a later step is ignored.
        let leftover = dir.path().join("step-00000009.tmp");
        std::fs::create_dir(&leftover).unwrap();
        std::fs::write(leftover.join(MANIFEST_FILE), b"{").unwrap();
        std::fs::create_dir(dir.path().join("not-a-checkpoint")).unwrap();
        assert_eq!(latest(dir.path()), Some((3, p3.clone())));
        assert_eq!(parse_dir_name("step-00000009.tmp"), None);
        assert_eq!(parse_dir_name("step-123456789"), Some(123_456_789));
        // The next save cleans the leftover.
        save(dir.path(), &manifest(4), &opt, 2).unwrap();
        assert!(!leftover.exists());

        // Loading restores parameters and moments exactly.
        let (_vs2, model2, mut opt2) = setup();
        let m = load(&p3, &mut opt2).unwrap();
        let (digest, bytes) = sha256_file(&p3.join(STATE_FILE)).unwrap();
        assert_eq!(m, Manifest { state_sha256: Some(digest), state_bytes: Some(bytes), ..manifest(3) });
        assert_eq!(opt2.step_count(), 3);
        for (a, b) in model.params().iter().zip(model2.params()) {
            assert!(a.tensor.equal(&b.tensor), "{}", a.name);
        }
        for (a, b) in opt.moments().zip(opt2.moments()) {
            assert!(a.1.equal(b.1) && a.2.equal(b.2), "{}", a.0);
        }
    }

    #[test]
    fn load_rejects_wrong_shape_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let (_vs, _model, opt) = setup();
        let p = save(dir.path(), &manifest(1), &opt, 2).unwrap();
        let _g = crate::trainer::INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let vs = nn::VarStore::new(Device::Cpu);
        let other = Transformer::new(&vs.root(), &isoflop_core::ModelShape { hidden: 64, ..tiny_shape() }).unwrap();
        let mut oopt = AdamW::new(other.params(), *opt.config()).unwrap();
        let err = load(&p, &mut oopt).unwrap_err().to_string();
        assert!(err.contains("shape"), "{err}");
        let err = load(&dir.path().join("step-00000007"), &mut oopt).unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[test]
    fn damaged_checkpoints_are_corrupt_and_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (_vs, _model, opt) = setup();
        let p1 = save(dir.path(), &manifest(1), &opt, 3).unwrap();
        let p2 = save(dir.path(), &manifest(2), &opt, 3).unwrap();
        let m = verify(&p2).unwrap();
        assert_eq!(m.state_bytes, Some(std::fs::metadata(p2.join(STATE_FILE)).unwrap().len()));
        assert_eq!(m.state_sha256.as_deref().map(str::len), Some(64));
        let (_vs2, _model2, mut opt2) = setup();

        // Truncated tensors: caught by the length, before any hashing or parsing.
        let state = p2.join(STATE_FILE);
        let bytes = std::fs::read(&state).unwrap();
        std::fs::write(&state, &bytes[..bytes.len() / 2]).unwrap();
        let err = load(&p2, &mut opt2).unwrap_err();
        assert!(matches!(&err, CheckpointError::Corrupt { reason, .. } if reason.contains("bytes")), "{err}");
        // One flipped byte at the same length: caught by the digest.
        let mut flipped = bytes.clone();
        let at = flipped.len() - 7;
        flipped[at] ^= 0x40;
        std::fs::write(&state, &flipped).unwrap();
        let err = verify(&p2).unwrap_err();
        assert!(matches!(&err, CheckpointError::Corrupt { reason, .. } if reason.contains("SHA-256")), "{err}");
        assert!(err.to_string().contains("corrupt checkpoint") && err.to_string().contains(STATE_FILE), "{err}");
        // A truncated manifest.
        let mpath = p1.join(MANIFEST_FILE);
        let text = std::fs::read(&mpath).unwrap();
        std::fs::write(&mpath, &text[..text.len() / 2]).unwrap();
        assert!(matches!(verify(&p1), Err(CheckpointError::Corrupt { .. })));

        // Set aside, the damaged copies leave the listing and are found with their reasons.
        let aside = set_aside(&p2, "12 bytes, the manifest says 900").unwrap();
        assert_eq!(aside.file_name().unwrap(), "step-00000002.corrupt");
        set_aside(&p1, "the manifest does not parse").unwrap();
        assert_eq!(latest(dir.path()), None);
        let found = set_aside_in(dir.path());
        assert_eq!(
            found.iter().map(|s| (s.step, s.reason.as_str())).collect::<Vec<_>>(),
            [(1, "the manifest does not parse"), (2, "12 bytes, the manifest says 900")]
        );
        assert_eq!((found[1].path.clone(), found[1].original.clone()), (aside.clone(), p2.clone()));
        assert!(found.iter().all(|s| !s.reported));
        // Kept by a save until reported (a later attempt reports it), then deleted.
        mark_reported(&aside).unwrap();
        save(dir.path(), &manifest(3), &opt, 3).unwrap();
        let names = |d: &Path| {
            let mut n: Vec<String> =
                std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            n.sort();
            n
        };
        assert_eq!(names(dir.path()), ["step-00000001.corrupt", "step-00000003"]);
        mark_reported(&found[0].path).unwrap();
        assert!(set_aside_in(dir.path())[0].reported);
        prune(dir.path(), 3).unwrap();
        assert_eq!(names(dir.path()), ["step-00000003"]);
        // An older build's checkpoint (no digest) is read unverified.
        let p3 = dir.path().join("step-00000003");
        let mut m3 = read_manifest(&p3).unwrap();
        (m3.state_sha256, m3.state_bytes) = (None, None);
        std::fs::write(p3.join(MANIFEST_FILE), serde_json::to_vec(&m3).unwrap()).unwrap();
        assert_eq!(load(&p3, &mut opt2).unwrap(), m3);
    }
}
