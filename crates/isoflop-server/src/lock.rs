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
            Ok(()) => Ok(StoreLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(ServerError::Locked { store: store_path.into(), lock }),
            Err(std::fs::TryLockError::Error(source)) => Err(ServerError::Io { what: "cannot lock", path: lock, source }),
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
        drop(held);
        StoreLock::acquire(&db).unwrap();
    }
}
