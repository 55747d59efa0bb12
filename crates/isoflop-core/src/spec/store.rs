//! The `store:` section of a sweep spec and of `isoflop serve`'s config, and where a store
//! lives as a user names it on the command line ([`StoreLocation`]).

use super::SpecError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the sweep's state lives: a SQLite file (the default, `.isoflop/isoflop.db`) or a
/// PostgreSQL database; and its checkpoints and logs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSpec {
    /// SQLite database file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<PathBuf>,
    /// A PostgreSQL database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSpec>,
    /// Directory for checkpoints and logs (default: `runs/` beside a SQLite database; required
    /// with PostgreSQL).
    pub artifacts: Option<PathBuf>,
}

/// A PostgreSQL database: its URL, or the environment variable that holds it (so that a
/// password stays out of the file).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
}

/// The SQLite file of a spec without a `store.sqlite`.
pub const DEFAULT_SQLITE: &str = ".isoflop/isoflop.db";

impl StoreSpec {
    /// Checks the section's shape (one database, one way to name a PostgreSQL one, an
    /// artifacts directory with PostgreSQL); `key` is where it sits (`store`).
    pub fn validate(&self, file: &Path, key: &str) -> Result<(), SpecError> {
        let err = |k: &str, m: &str| Err(SpecError::at(file, format!("{key}.{k}"), m));
        match (&self.sqlite, &self.postgres) {
            (Some(_), Some(_)) => return err("postgres", "expected one database: `sqlite` or `postgres`, not both"),
            (Some(p), None) if p.as_os_str().is_empty() => return err("sqlite", "expected a file path"),
            (None, Some(pg)) => {
                match (&pg.url, &pg.url_env) {
                    (Some(_), Some(_)) | (None, None) => {
                        return err(
                            "postgres",
                            "expected one of `url` (postgres://USER@HOST/DATABASE) or `url_env` (a variable holding it)",
                        );
                    }
                    (Some(u), None) if !is_postgres_url(u) => {
                        return err("postgres.url", "expected a postgres:// or postgresql:// URL");
                    }
                    (None, Some(v)) if v.is_empty() || v.contains('=') => {
                        return err("postgres.url_env", "expected the name of an environment variable");
                    }
                    _ => {}
                }
                if self.artifacts.is_none() {
                    return err(
                        "artifacts",
                        "expected a directory for checkpoints and logs (a PostgreSQL store has no file beside which to keep them)",
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Where the store is: paths resolved by `resolve`, a `url_env` read now (unset is an
    /// error naming the key).
    pub fn location(&self, file: &Path, key: &str, resolve: impl Fn(&Path) -> PathBuf) -> Result<StoreLocation, SpecError> {
        match &self.postgres {
            None => Ok(StoreLocation::Sqlite(resolve(self.sqlite.as_deref().unwrap_or(Path::new(DEFAULT_SQLITE))))),
            Some(PostgresSpec { url: Some(u), .. }) => Ok(StoreLocation::Postgres(u.clone())),
            Some(PostgresSpec { url_env: Some(v), .. }) => match std::env::var(v) {
                Ok(u) if is_postgres_url(&u) => Ok(StoreLocation::Postgres(u)),
                Ok(_) => Err(SpecError::at(file, format!("{key}.postgres.url_env"), format!("${v} is not a postgres:// URL"))),
                Err(_) => {
                    Err(SpecError::at(file, format!("{key}.postgres.url_env"), format!("environment variable {v} is not set")))
                }
            },
            Some(_) => Err(SpecError::at(file, format!("{key}.postgres"), "expected `url` or `url_env`")),
        }
    }
}

fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// Where a store lives: a SQLite file or a PostgreSQL database (a `postgres://` URL or a
/// `key=value` connection string). `Display` never shows a password.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

impl StoreLocation {
    /// A store as a user names it: `postgres://...` or `postgresql://...`, `postgres:CONNINFO`,
    /// `sqlite:PATH`, or a path of a SQLite file.
    pub fn parse(s: &str) -> StoreLocation {
        if is_postgres_url(s) {
            StoreLocation::Postgres(s.into())
        } else if let Some(rest) = s.strip_prefix("postgres:") {
            StoreLocation::Postgres(rest.into())
        } else {
            StoreLocation::Sqlite(PathBuf::from(s.strip_prefix("sqlite:").unwrap_or(s)))
        }
    }

    /// The SQLite file, if it is one.
    pub fn sqlite(&self) -> Option<&Path> {
        match self {
            StoreLocation::Sqlite(p) => Some(p),
            StoreLocation::Postgres(_) => None,
        }
    }
}

impl std::str::FromStr for StoreLocation {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(StoreLocation::parse(s))
    }
}

/// A connection string without its password (`postgres://user:***@host/db`, `password=***`).
pub fn redact(conn: &str) -> String {
    if let Some((scheme, rest)) = conn.split_once("://") {
        let (authority, tail) = rest.split_once('/').map_or((rest, None), |(a, t)| (a, Some(t)));
        let authority = match authority.rsplit_once('@') {
            Some((user, host)) => match user.split_once(':') {
                Some((name, _)) => format!("{name}:***@{host}"),
                None => format!("{user}@{host}"),
            },
            None => authority.to_string(),
        };
        let tail = tail.map(|t| {
            let (path, query) = t.split_once('?').map_or((t, None), |(p, q)| (p, Some(q)));
            match query {
                Some(q) => format!("/{path}?{}", redact_pairs(q, '&')),
                None => format!("/{path}"),
            }
        });
        format!("{scheme}://{authority}{}", tail.unwrap_or_default())
    } else {
        redact_pairs(conn, ' ')
    }
}

fn redact_pairs(s: &str, sep: char) -> String {
    s.split(sep)
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.trim() == "password" => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join(&sep.to_string())
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(p) => write!(f, "{}", p.display()),
            StoreLocation::Postgres(u) => f.write_str(&redact(u)),
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            StoreLocation::Postgres(u) => write!(f, "Postgres({})", redact(u)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_hide_passwords() {
        assert_eq!(StoreLocation::parse("a/b.db"), StoreLocation::Sqlite("a/b.db".into()));
        assert_eq!(StoreLocation::parse("sqlite:a/b.db"), StoreLocation::Sqlite("a/b.db".into()));
        assert_eq!(StoreLocation::parse("postgres:postgres://h/db"), StoreLocation::Postgres("postgres://h/db".into()));
        assert_eq!(StoreLocation::parse("postgres:host=h dbname=d"), StoreLocation::Postgres("host=h dbname=d".into()));
        let loc = StoreLocation::parse("postgresql://me:s3cret@db.example:5433/isoflop?sslmode=disable&password=x");
        assert_eq!(loc.to_string(), "postgresql://me:***@db.example:5433/isoflop?sslmode=disable&password=***");
        assert!(!format!("{loc:?}").contains("s3cret"));
        assert_eq!(redact("host=h password=pw user=u"), "host=h password=*** user=u");
    }

    #[test]
    fn the_section_names_one_database() {
        let file = Path::new("/s.yaml");
        let pg = |url: Option<&str>, env: Option<&str>, artifacts: bool| StoreSpec {
            sqlite: None,
            postgres: Some(PostgresSpec { url: url.map(Into::into), url_env: env.map(Into::into) }),
            artifacts: artifacts.then(|| PathBuf::from("/runs")),
        };
        let err = |s: StoreSpec| s.validate(file, "store").unwrap_err().to_string();
        assert!(err(pg(None, None, true)).contains("store.postgres: expected one of `url`"));
        assert!(err(pg(Some("mysql://x"), None, true)).contains("store.postgres.url: expected a postgres://"));
        assert!(err(pg(Some("postgres://h/d"), None, false)).contains("store.artifacts: expected a directory"));
        assert!(err(StoreSpec { sqlite: Some("x.db".into()), ..pg(Some("postgres://h/d"), None, true) }).contains("not both"));
        pg(Some("postgres://h/d"), None, true).validate(file, "store").unwrap();
        let env = pg(None, Some("ISOFLOP_TEST_UNSET_URL"), true);
        env.validate(file, "store").unwrap();
        let e = env.location(file, "store", Path::to_path_buf).unwrap_err().to_string();
        assert!(e.contains("store.postgres.url_env: environment variable ISOFLOP_TEST_UNSET_URL is not set"), "{e}");
        let default = StoreSpec::default().location(file, "store", |p| Path::new("/base").join(p)).unwrap();
        assert_eq!(default, StoreLocation::Sqlite("/base/.isoflop/isoflop.db".into()));
    }
}
