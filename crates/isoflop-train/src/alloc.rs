//! Host allocator tuning for training processes.
//!
//! libtorch allocates its CPU tensors with the C allocator. With glibc's defaults, buffers of
//! 32 MiB and more (on a small model, the logits and their gradients) are always served by a
//! fresh `mmap` and returned by `munmap` when freed, so every training step page-faults its
//! largest temporaries back in; smaller ones above the dynamic threshold do so until it adapts.
//! [`keep_freed_memory`] makes glibc serve every allocation from its heaps and keep freed
//! memory there, so steady-state steps reuse it. The process's resident memory then stays at
//! its high-water mark, which is what a dedicated training process wants. On the bench/train
//! CPU configuration this is worth about 15% of step time.

/// Configures glibc's `malloc` to never use `mmap` and never trim its heaps (process-wide;
/// later calls are no-ops). Returns whether the settings were applied (false off glibc).
pub fn keep_freed_memory() -> bool {
    static APPLIED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *APPLIED.get_or_init(apply)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn apply() -> bool {
    // SAFETY: mallopt only changes malloc's tunables; it is thread-safe (it takes the arena
    // locks) and has no other preconditions.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
            && libc::mallopt(libc::M_TOP_PAD, 64 << 20) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn applies_once_and_is_idempotent() {
        let first = super::keep_freed_memory();
        assert_eq!(super::keep_freed_memory(), first);
        assert_eq!(first, cfg!(all(target_os = "linux", target_env = "gnu")));
    }
}
