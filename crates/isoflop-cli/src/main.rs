//! `isoflop`: plan, run, watch, store and resume IsoFLOP sweeps. One binary for every role; it
//! parses arguments, calls the role's library (`isoflop_server` for `run` and `serve` and the
//! control path, `isoflop_worker` for `worker`, the planner, the fitter) and renders.

mod args;
#[cfg(feature = "trainer")]
mod cmd_bench;
mod cmd_control;
mod cmd_data;
mod cmd_export;
mod cmd_fit;
mod cmd_plan;
mod cmd_run;
mod cmd_serve;
mod cmd_store;
#[cfg(feature = "trainer")]
mod cmd_worker;
mod control;
mod exit;
mod render;
mod throughput;

use args::{Format, LogFormat, RemoteArgs, StoreArgs};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "isoflop", version, about = "Plan, run, watch, resume and store IsoFLOP sweeps of small language models")]
struct Cli {
    /// Log format on stderr. The level is `ISOFLOP_LOG` (a tracing filter, e.g. `debug` or
    /// `isoflop_coordinator=debug`); default `info` for `serve` and `worker`, `warn` otherwise.
    #[arg(long, global = true, value_enum, default_value = "text", env = "ISOFLOP_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the runs a sweep spec plans, with FLOP accounting.
    Plan {
        spec: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Compare with the sweep of that name in the spec's store: the runs and evaluation
        /// jobs an edited spec adds, and any it would drop (refused: a sweep only grows).
        #[arg(long)]
        diff: bool,
    },
    /// Run a whole sweep here: coordinator in-process, local workers, SQLite. Run it again
    /// after an interruption to continue where it stopped.
    Run {
        spec: PathBuf,
        /// Print a status block every N seconds instead of a live display.
        #[arg(long)]
        plain: bool,
        /// Where the web page listens (its URL is printed); `off` for none. Loopback only by
        /// default: the page asks for no token.
        #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
        http: String,
    },
    /// Run the coordinator as a long-lived service (until SIGTERM or Ctrl-C): clients submit
    /// and watch sweeps with `--coordinator URL`; its executor, store and artifacts run them.
    Serve {
        /// The service's YAML config (listen, worker_url, store, artifacts, admin_token_file, executor).
        #[arg(long)]
        config: PathBuf,
    },
    /// Send a sweep spec to an `isoflop serve` coordinator, print its runs, and exit.
    Submit {
        spec: PathBuf,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Follow a sweep on an `isoflop serve` coordinator, one line per event, until it finishes.
    Watch {
        sweep: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show the state of a sweep's runs (during or after a run), from the local store or from a
    /// coordinator with --coordinator.
    Status {
        /// Sweep name (default: the newest sweep).
        sweep: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List every sweep, newest first: its jobs by state, training FLOPs done of planned,
    /// start, end and duration (from the local store, or a coordinator with --coordinator).
    Sweeps {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Print a run's progress history (loss, learning rate, gradient norm, throughput per
    /// reported step, every attempt) as CSV or JSON.
    Curves {
        /// Run id (or a unique prefix) or run name.
        run: String,
        #[arg(long, value_enum, default_value = "csv")]
        format: crate::args::CurveFormat,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Print a run's state changes: time, attempt, from, to, failure class and reason.
    Events {
        /// Run id (or a unique prefix) or run name.
        run: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Print the worker logs of a run (every attempt, or one).
    Logs {
        /// Run id (or a unique prefix) or run name.
        run: String,
        #[arg(long)]
        attempt: Option<u64>,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Write a run's checkpoint as a Hugging Face model directory (safetensors, config.json
    /// as LlamaForCausalLM or Qwen3ForCausalLM, tokenizer files) that transformers loads; or,
    /// with --csv, a sweep's results as the table `isoflop fit --from-csv` reads.
    Export {
        /// Run id (or a unique prefix) or run name; with --csv, a sweep.
        target: String,
        /// `hf` (a run's checkpoint) or `csv` (a sweep's table).
        #[arg(long, default_value = "hf")]
        format: String,
        /// Same as `--format csv`.
        #[arg(long)]
        csv: bool,
        /// The model directory (hf), or the CSV file (default: stdout).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// The checkpoint step (default: the newest); hf only.
        #[arg(long)]
        step: Option<u64>,
        /// With --csv: one evaluation task's table instead of the held-out text losses.
        #[arg(long)]
        task: Option<String>,
        /// With --csv --task: the error metric (as `isoflop fit --metric`).
        #[arg(long, requires = "task")]
        metric: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Requeue the runs of a sweep that ended failed or cancelled, and run them.
    Resume {
        sweep: String,
        /// Also requeue runs that diverged.
        #[arg(long)]
        include_diverged: bool,
        /// Only requeue; do not run.
        #[arg(long)]
        no_run: bool,
        #[arg(long)]
        plain: bool,
        /// Where the web page listens while it runs; `off` for none.
        #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
        http: String,
        #[command(flatten)]
        store: StoreArgs,
        /// With --coordinator: requeue there; the coordinator runs them.
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Cancel a sweep's unfinished runs (or one run); live workers are stopped.
    Cancel {
        /// Sweep name, or run id with --run.
        target: String,
        #[arg(long)]
        run: bool,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Delete a sweep: the runs and evaluation jobs no other sweep shares, their history and
    /// their checkpoints and logs (asks first, unless --yes).
    Delete {
        sweep: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Fit scaling laws (IsoFLOP, parametric, relative) to a sweep or a CSV table.
    Fit {
        /// Sweep name (default: the newest sweep); ignored with --from-csv.
        sweep: Option<String>,
        #[command(flatten)]
        args: cmd_fit::FitArgs,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        #[command(flatten)]
        store: StoreArgs,
        /// With --coordinator: the sweep's tables come from the coordinator's store.
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Write the fit as report.json, a self-contained report.html, and plots (SVG and PNG).
    Report {
        /// Sweep name (default: the newest sweep); ignored with --from-csv.
        sweep: Option<String>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        args: cmd_fit::FitArgs,
        #[command(flatten)]
        store: StoreArgs,
        /// With --coordinator: the sweep's tables come from the coordinator's store.
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Benchmarks' timed cores (see bench/).
    #[cfg(feature = "trainer")]
    Bench {
        #[command(subcommand)]
        command: cmd_bench::BenchCommand,
    },
    /// Manage stores: copy one into another (a local SQLite history into a cluster's PostgreSQL).
    Store {
        #[command(subcommand)]
        command: cmd_store::StoreCommand,
    },
    /// Prepare token shards from corpora the package registries ship.
    Data {
        #[command(subcommand)]
        command: cmd_data::DataCommand,
    },
    /// Train one attempt for a coordinator (started by executors, not by hand).
    #[cfg(feature = "trainer")]
    Worker(cmd_worker::WorkerArgs),
}

/// Printing commands die quietly on a closed pipe (`isoflop plan ... | head`), as Unix tools
/// do. Long-lived roles keep Rust's default (EPIPE as an error), so a closed socket never
/// kills a worker or the coordinator.
fn default_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called first thing in `main`, before any other thread exists; SIG_DFL installs
    // no handler code.
    #[allow(unsafe_code)]
    let r = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    if let Err(e) = r {
        eprintln!("warning: cannot restore the default SIGPIPE action: {e}");
    }
}

/// Logs to stderr: `ISOFLOP_LOG` or the role's default level, as text or JSON lines.
fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ISOFLOP_LOG").unwrap_or_else(|_| default_level.into());
    // Colour only on a terminal: worker logs go to files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().with_current_span(true).with_span_list(false).init(),
    }
}

fn main() {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Plan { .. }
            | Command::Status { .. }
            | Command::Sweeps { .. }
            | Command::Curves { .. }
            | Command::Events { .. }
            | Command::Logs { .. }
            | Command::Fit { .. }
            | Command::Watch { .. }
    ) {
        default_sigpipe();
    }
    // The long-lived roles say what they do at info; commands only warn.
    #[cfg(feature = "trainer")]
    let role = matches!(cli.command, Command::Serve { .. } | Command::Worker(_));
    #[cfg(not(feature = "trainer"))]
    let role = matches!(cli.command, Command::Serve { .. });
    let level = if role { "info" } else { "warn" };
    init_logging(cli.log_format, level);
    let result = match cli.command {
        Command::Plan { spec, format, diff: false } => cmd_plan::plan(&spec, format),
        Command::Plan { spec, diff: true, .. } => cmd_plan::diff(&spec),
        Command::Run { spec, plain, http } => cmd_run::run(&spec, plain, &http),
        Command::Serve { config } => cmd_serve::serve(&config),
        Command::Submit { spec, remote } => cmd_control::submit(&spec, &remote),
        Command::Watch { sweep, remote } => cmd_control::watch(&sweep, &remote),
        Command::Status { sweep, format, store, remote } => cmd_control::status(sweep.as_deref(), format, &store, &remote),
        Command::Sweeps { format, store, remote } => cmd_control::sweeps(format, &store, &remote),
        Command::Curves { run, format, store, remote } => cmd_control::curves(&run, format, &store, &remote),
        Command::Events { run, format, store, remote } => cmd_control::events(&run, format, &store, &remote),
        Command::Logs { run, attempt, store, remote } => cmd_control::logs(&run, attempt, &store, &remote),
        Command::Resume { sweep, include_diverged, no_run, plain, http, store, remote } => {
            cmd_run::resume(&sweep, include_diverged, no_run, plain, &http, &store, &remote)
        }
        Command::Delete { sweep, yes, store, remote } => cmd_control::delete(&sweep, yes, &store, &remote),
        Command::Cancel { target, run, store, remote } => cmd_control::cancel(&target, run, &store, &remote),
        Command::Fit { sweep, args, format, store, remote } => {
            cmd_fit::fit(&args.source(sweep, &store.store, &remote), &args, format)
        }
        Command::Report { sweep, out, args, store, remote } => {
            cmd_fit::report(&args.source(sweep, &store.store, &remote), &args, &out)
        }
        Command::Export { target, format, csv, out, step, task, metric, store } => {
            if csv || format == "csv" {
                let args = cmd_fit::FitArgs { task, metric, ..cmd_fit::FitArgs::default() };
                cmd_fit::export_csv(&target, &args, &store.store, out.as_deref())
            } else {
                match out {
                    Some(out) => cmd_export::export(&target, &format, &out, step, &store.store),
                    None => Err(exit::input(anyhow::anyhow!("--out DIR is required for --format {format}"))),
                }
            }
        }
        #[cfg(feature = "trainer")]
        Command::Bench { command } => cmd_bench::bench(command),
        Command::Data { command } => cmd_data::data(command),
        Command::Store { command } => cmd_store::store(command),
        #[cfg(feature = "trainer")]
        Command::Worker(args) => cmd_worker::main(args),
    };
    if let Err(e) = result {
        // Not `eprintln!`: it panics when stderr cannot be written (a worker's log on a full
        // disk), and the exit code that says what failed would become 101.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "error: {e:#}");
        std::process::exit(e.exit_code());
    }
}
