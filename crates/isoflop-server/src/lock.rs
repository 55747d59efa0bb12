//! One `isoflop run` or `isoflop serve` per store: an exclusive lock beside a SQLite
//! database, a session advisory lock in a PostgreSQL one ([`isoflop_store::PgLock`]).

use crate::ServerError;
use isoflop_store::{PgLock, PgStore, StoreLocation};
use std::path::Path;

/// An exclusive lock on a store, held for the life of the value.
#[derive(Debug)]
pub struct StoreLock {
    _held: Held,
}

/// What holds the lock: kept for its drop, never read.
#[derive(Debug)]
#[allow(dead_code)]
enum Held {
    File(std::fs::File),
    Postgres(Box<PgLock>),
}

/// `pid N: isoflop serve`: who takes a lock, for the message of the next one to try.
fn this_process() -> String {
    let args: Vec<String> = std::env::args().take(2).collect();
    let cmd = args.iter().map(|a| Path::new(a).file_name().map_or(a.clone(), |f| f.to_string_lossy().into_owned()));
    format!("pid {}: {}", std::process::id(), cmd.collect::<Vec<_>>().join(" "))
}

impl StoreLock {
    /// Takes the store's lock, or fails with [`ServerError::Locked`] at once. Blocks (a
    /// PostgreSQL round trip): from async code, call it on a blocking thread.
    pub fn acquire(location: &StoreLocation) -> Result<StoreLock, ServerError> {
        match location {
            StoreLocation::Sqlite(path) => Self::acquire_file(path),
            StoreLocation::Postgres(url) => match PgStore::try_lock(url, &this_process())? {
                Some(lock) => Ok(StoreLock { _held: Held::Postgres(Box::new(lock)) }),
                None => {
                    let holder = PgStore::lock_holder(url)?.unwrap_or_else(|| "another isoflop process".into());
                    Err(ServerError::Locked { store: location.to_string(), lock: "its coordinator advisory lock".into(), holder })
                }
            },
        }
    }

    /// Who holds the store's lock right now (`pid N: isoflop run`), or `None` when nobody
    /// does: then no coordinator runs the store's active attempts. Never creates anything.
    pub fn holder(location: &StoreLocation) -> Option<String> {
        match location {
            StoreLocation::Sqlite(path) => Self::file_holder(path),
            StoreLocation::Postgres(url) => PgStore::lock_holder(url).ok().flatten(),
        }
    }

    /// Takes the lock `STORE.lock` beside a SQLite file.
    fn acquire_file(store_path: &Path) -> Result<StoreLock, ServerError> {
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
                let _ = file.set_len(0).and_then(|_| (&file).write_all(this_process().as_bytes()));
                Ok(StoreLock { _held: Held::File(file) })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock).unwrap_or_default().trim().to_string();
                let holder = if holder.is_empty() { "another isoflop process".to_string() } else { format!("`{holder}`") };
                Err(ServerError::Locked { store: store_path.display().to_string(), lock: lock.display().to_string(), holder })
            }
            Err(std::fs::TryLockError::Error(source)) => Err(ServerError::Io { what: "cannot lock", path: lock, source }),
        }
    }
}

impl StoreLock {
    /// Who holds the lock beside a SQLite file: takes and drops it to find out.
    fn file_holder(store_path: &Path) -> Option<String> {
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
        let db = StoreLocation::Sqlite(dir.path().join("state/isoflop.db"));
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
