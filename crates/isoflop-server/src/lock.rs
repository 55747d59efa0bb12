//! One `isoflop run` or `isoflop serve` per store: an exclusive lock beside the database.

use crate::ServerError;
use std::path::Path;

/// An exclusive lock on a store, held for the life of the value.
#[derive(Debug)]
pub struct StoreLock {
    _file: std::fs::File,
}

impl StoreLock {
    /// Takes the lock `STORE.lock`, or fails with [`ServerError::Locked`] at once.
    pub fn acquire(store_path: &Path) -> Result<StoreLock, ServerError> {
        let lock = store_path.with_extension("lock");
        if let Some(d) = lock.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(|source| ServerError::Io { what: "cannot create", path: d.into(), source })?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(|source| ServerError::Io { what: "cannot open", path: lock.clone(), source })?;
        match file.try_lock() {
            Ok(()) => {
                // Who holds it, for the message of the next one to try: `pid N: isoflop serve`.
                // Best effort; the lock is what counts.
                use std::io::Write;
                let args: Vec<String> = std::env::args().take(2).collect();
                let cmd = args
                    .iter()
                    .map(|a| std::path::Path::new(a).file_name().map_or(a.clone(), |f| f.to_string_lossy().into_owned()));
                let holder = format!("pid {}: {}", std::process::id(), cmd.collect::<Vec<_>>().join(" "));
                let _ = file.set_len(0).and_then(|_| (&file).write_all(holder.as_bytes()));
                Ok(StoreLock { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock).unwrap_or_default().trim().to_string();
                let holder = if holder.is_empty() { "another isoflop process".to_string() } else { format!("`{holder}`") };
                Err(ServerError::Locked { store: store_path.into(), lock, holder })
            }
            Err(std::fs::TryLockError::Error(source)) => Err(ServerError::Io { what: "cannot lock", path: lock, source }),
        }
    }
}

impl StoreLock {
    /// Who holds the lock of `store_path` right now (`pid N: isoflop run`), or `None` when
    /// nobody does: then no coordinator runs the store's active attempts. Takes and drops the
    /// lock to find out; never creates anything.
    pub fn holder(store_path: &Path) -> Option<String> {
        let lock = store_path.with_extension("lock");
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&lock).ok()?;
        match file.try_lock() {
            Ok(()) => None,
            Err(_) => Some(std::fs::read_to_string(&lock).unwrap_or_default().trim().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state/isoflop.db");
        let held = StoreLock::acquire(&db).unwrap();
        let err = StoreLock::acquire(&db).unwrap_err();
        assert!(err.is_input() && err.to_string().contains("isoflop.lock"), "{err}");
        assert!(err.to_string().contains(&format!("pid {}", std::process::id())), "names the holder: {err}");
        assert!(StoreLock::holder(&db).is_some_and(|h| h.contains(&std::process::id().to_string())));
        drop(held);
        assert_eq!(StoreLock::holder(&db), None, "free once dropped");
        StoreLock::acquire(&db).unwrap();
    }
}
