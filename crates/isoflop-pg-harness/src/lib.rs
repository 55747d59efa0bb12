//! A real PostgreSQL server for tests, never a mock.
//!
//! [`server`] starts one server per test process, the first time a test asks: `initdb` of a
//! cluster in a temporary directory (trust authentication, user `isoflop`, C locale, no
//! fsync), then `postgres` listening only on a Unix socket in that directory. The server
//! belongs to the process that started it: it is run under a small shell that stops it and
//! deletes the directory as soon as the test process exits, however it exits (the shell
//! waits on a pipe only the test process holds). [`PgServer::fresh_database`] creates an
//! empty database for one test and returns its URL.
//!
//! The binaries are Debian's `postgresql` package (`/usr/lib/postgresql/N/bin`, the newest
//! N), else `initdb` and `postgres` on `PATH`. Missing, they are an error that says what to
//! install: a test that needs PostgreSQL fails, it does not skip. PostgreSQL refuses to run
//! as root, so under root the server runs as the `postgres` user the package creates.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The socket's port number (it names the socket file; nothing listens on TCP).
const PORT: u16 = 5432;
/// The superuser `initdb` creates.
pub const USER: &str = "isoflop";

/// A running server.
pub struct PgServer {
    dir: PathBuf,
    /// The shell's stdin: closed when this process exits, which stops the server.
    _lifeline: Mutex<ChildStdin>,
    /// The shell, to tell whether the server has exited.
    shell: Mutex<Child>,
    next: AtomicUsize,
    /// What the server reports.
    pub version: String,
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgServer({})", self.dir.display())
    }
}

/// The server of this test process, started on first use. Panics with what is wrong when it
/// cannot start (binaries missing, `initdb` failed, no answer in time).
pub fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| PgServer::start().unwrap_or_else(|e| panic!("PostgreSQL test server: {e}")))
}

/// A fresh, empty database on this process's server: its URL.
pub fn fresh_database() -> String {
    server().fresh_database().unwrap_or_else(|e| panic!("PostgreSQL test server: {e}"))
}

/// The directory of `initdb` and `postgres`.
fn bin_dir() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("postgres").is_file())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).find(|d| d.join("initdb").is_file() && d.join("postgres").is_file()).ok_or_else(|| {
        "no PostgreSQL server binaries (initdb, postgres) in /usr/lib/postgresql/*/bin or on PATH: install Debian's \
         `postgresql` package (scripts/setup.sh does)"
            .to_string()
    })
}

fn is_root() -> bool {
    // /proc/self belongs to this process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// A command run as the unprivileged user when this process is root.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} exited with {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

impl PgServer {
    fn start() -> Result<Self, String> {
        let started = Instant::now();
        let bin = bin_dir()?;
        let dir =
            tempfile::Builder::new().prefix("isoflop-pg-").tempdir().map_err(|e| format!("temporary directory: {e}"))?.keep();
        let data = dir.join("data");
        let log = dir.join("postgres.log");
        if is_root() {
            let mut chown = Command::new("chown");
            chown.args(["postgres:postgres"]).arg(&dir);
            run(chown, "chown of the server's directory to user postgres (the postgresql package creates it)")?;
        }
        let mut initdb = as_server_user(&bin.join("initdb"));
        initdb.arg("-D").arg(&data).args(["-U", USER, "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]);
        run(initdb, &format!("{} -D {}", bin.join("initdb").display(), data.display()))?;
        let mut postgres = vec![bin.join("postgres").display().to_string(), "-D".into(), data.display().to_string()];
        for setting in [
            format!("unix_socket_directories={}", dir.display()),
            "listen_addresses=".into(),
            format!("port={PORT}"),
            "fsync=off".into(),
            "synchronous_commit=off".into(),
            "full_page_writes=off".into(),
            "max_connections=300".into(),
            "shared_buffers=64MB".into(),
        ] {
            postgres.push("-c".into());
            postgres.push(setting);
        }
        let quoted: Vec<String> = postgres.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect();
        let prefix = if is_root() { "setpriv --reuid=postgres --regid=postgres --init-groups -- " } else { "" };
        // The server runs until this process's end of the shell's stdin closes (it exits),
        // then stops at once (SIGQUIT: the data is throwaway) and the directory goes. (An
        // asynchronous list's stdin is /dev/null, hence the copy on fd 3.)
        let script = format!(
            "exec 3<&0\n{prefix}{} >'{log}' 2>&1 & pid=$!\n(read -r _ <&3; kill -QUIT $pid 2>/dev/null) &\nwait $pid; status=$?\nrm -rf '{dir}'\nexit $status",
            quoted.join(" "),
            log = log.display(),
            dir = dir.display(),
        );
        let mut shell = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("sh: {e}"))?;
        let lifeline = shell.stdin.take().expect("piped");
        let mut server = PgServer {
            dir: dir.clone(),
            _lifeline: Mutex::new(lifeline),
            shell: Mutex::new(shell),
            next: AtomicUsize::new(0),
            version: String::new(),
        };
        loop {
            match server.admin() {
                Ok(mut client) => {
                    server.version = client.query_one("SHOW server_version", &[]).map_err(|e| e.to_string())?.get(0);
                    break;
                }
                Err(e) => {
                    let exited = server.shell.lock().unwrap().try_wait().ok().flatten();
                    if exited.is_some() || started.elapsed() > START_TIMEOUT {
                        let mut text = String::new();
                        let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut text));
                        return Err(format!(
                            "postgres in {} not accepting connections ({e}; exited: {exited:?}); its log:\n{text}",
                            dir.display()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        eprintln!(
            "PostgreSQL {} test server in {} ready in {:.1} s",
            server.version,
            dir.display(),
            started.elapsed().as_secs_f64()
        );
        Ok(server)
    }

    fn url(&self, database: &str) -> String {
        format!("postgresql://{USER}@/{database}?host={}&port={PORT}", self.dir.display())
    }

    /// A client of database `postgres` as the superuser.
    pub fn admin(&self) -> Result<postgres::Client, postgres::Error> {
        postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
    }

    /// Creates an empty database; its URL (`postgresql://isoflop@/NAME?host=DIR&port=5432`).
    pub fn fresh_database(&self) -> Result<String, String> {
        let name = format!("t{}_{}", std::process::id(), self.next.fetch_add(1, Ordering::SeqCst));
        let mut admin = self.admin().map_err(|e| format!("connecting to {}: {e}", self.url("postgres")))?;
        admin.batch_execute(&format!("CREATE DATABASE {name}")).map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        Ok(self.url(&name))
    }
}
