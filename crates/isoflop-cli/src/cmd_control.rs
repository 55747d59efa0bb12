//! The control commands: `status`, `logs` and `cancel` (over the local store's in-process
//! coordinator, or a daemon with `--coordinator`), and `submit` and `watch` (a daemon only).
//! All of them are control API calls.

use crate::args::{Format, RemoteArgs, StoreArgs};
use crate::control::{Control, runtime};
use crate::exit::{CliError, CliResult, client, input};
use crate::render::status::{Seen, status_json, status_table, summary_line, sweeps_json, sweeps_table};
use crate::render::table::{count, duration};
use anyhow::{Context, anyhow};
use isoflop_core::Clock;
use isoflop_core::RunState;
use isoflop_core::spec::SweepSpec;
use isoflop_proto::convert;
use isoflop_proto::v1 as pb;
use isoflop_server::{ControlClient, Scope};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// `isoflop status [SWEEP]`.
pub fn status(sweep: Option<&str>, format: Format, store: &StoreArgs, remote: &RemoteArgs) -> CliResult {
    runtime()?.block_on(async {
        let mut control = Control::open(store, remote, Scope::Store, false).await?;
        let c = control.client();
        let sweep = match sweep {
            Some(s) => s.to_string(),
            None => c.newest_sweep().await.map_err(client)?,
        };
        let runs = c.runs(&sweep).await.map_err(client)?;
        control.close().await;
        // On a local store, active runs need a coordinator holding the store's lock (an
        // `isoflop run` or `serve`); without one, they are what a killed one left behind.
        let gone = match remote.coordinator() {
            Some(_) => false,
            None => {
                let at = store.store.clone();
                tokio::task::spawn_blocking(move || isoflop_server::StoreLock::holder(&at).is_none())
                    .await
                    .context("reading the store's lock")?
            }
        };
        let seen = Seen { now_ms: isoflop_core::SystemClock.now_ms(), coordinator_gone: gone };
        match format {
            Format::Json => println!("{}", status_json(&sweep, &runs, &seen)),
            Format::Table => print!("{}", status_table(&sweep, &runs, &seen)),
        }
        Ok(())
    })
}

/// `isoflop sweeps`: every sweep of the store (or the coordinator), newest first.
pub fn sweeps(format: Format, store: &StoreArgs, remote: &RemoteArgs) -> CliResult {
    runtime()?.block_on(async {
        let mut control = Control::open(store, remote, Scope::Store, false).await?;
        let list = control.client().sweeps().await.map_err(client);
        control.close().await;
        let list = list?;
        match format {
            Format::Json => println!("{}", sweeps_json(&list)),
            Format::Table => print!("{}", sweeps_table(&list, isoflop_core::SystemClock.now_ms())),
        }
        Ok(())
    })
}

/// `isoflop curves RUN`: a run's progress history (every attempt), as CSV or JSON.
pub fn curves(run: &str, format: crate::args::CurveFormat, store: &StoreArgs, remote: &RemoteArgs) -> CliResult {
    runtime()?.block_on(async {
        let mut control = Control::open(store, remote, Scope::Run(run), false).await?;
        let r = control.client().progress(run).await.map_err(client);
        control.close().await;
        let r = r?;
        print!("{}", crate::render::status::curves(&r, format));
        Ok(())
    })
}

/// `isoflop events RUN`: a run's state changes, oldest first.
pub fn events(run: &str, format: Format, store: &StoreArgs, remote: &RemoteArgs) -> CliResult {
    runtime()?.block_on(async {
        let mut control = Control::open(store, remote, Scope::Run(run), false).await?;
        let r = control.client().events(run).await.map_err(client);
        control.close().await;
        print!("{}", crate::render::status::events(&r?, format));
        Ok(())
    })
}

/// `isoflop delete SWEEP [--yes]`: the jobs only it holds, with their history and artifacts,
/// after a confirmation (a terminal's y, or --yes).
pub fn delete(sweep: &str, yes: bool, store: &StoreArgs, remote: &RemoteArgs) -> CliResult {
    runtime()?.block_on(async {
        let mut control = Control::open(store, remote, Scope::Sweep(sweep), false).await?;
        let r = delete_confirmed(control.client(), sweep, yes).await;
        control.close().await;
        r
    })
}

async fn delete_confirmed(c: &mut ControlClient, sweep: &str, yes: bool) -> CliResult {
    let what = c.delete_sweep(sweep, true).await.map_err(client)?;
    let line = format!(
        "sweep {sweep}: {} training run(s) and {} evaluation job(s) only it holds, with their history and {} artifact \
         director{}; {} job(s) shared with other sweeps are kept",
        what.runs,
        what.evals,
        what.artifacts.len(),
        if what.artifacts.len() == 1 { "y" } else { "ies" },
        what.shared
    );
    if !yes {
        use std::io::{BufRead, IsTerminal, Write};
        if !std::io::stdin().is_terminal() {
            return Err(input(anyhow!("{line}: pass --yes to delete them (stdin is not a terminal to ask)")));
        }
        print!("delete {line}? [y/N] ");
        std::io::stdout().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).context("reading the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("nothing deleted");
            return Ok(());
        }
    }
    let done = c.delete_sweep(sweep, false).await.map_err(client)?;
    println!(
        "deleted sweep {sweep}: {} training run(s), {} evaluation job(s), {} artifact director{}; kept {} shared job(s)",
        done.runs,
        done.evals,
        done.artifacts.len(),
        if done.artifacts.len() == 1 { "y" } else { "ies" },
        done.shared
    );
    Ok(())
}

/// `isoflop logs RUN [--attempt N]`.
pub fn logs(run: &str, attempt: Option<u64>, store: &StoreArgs, remote: &RemoteArgs) -> CliResult {
    runtime()?.block_on(async {
        let mut control = Control::open(store, remote, Scope::Run(run), true).await?;
        let r = control.client().logs(run, attempt).await.map_err(client);
        control.close().await;
        let r = r?;
        if r.logs.is_empty() {
            return Err(input(anyhow!("run {} ({}) has not started yet", r.name, r.run_id)));
        }
        for l in r.logs {
            let from = if l.live { "the running attempt" } else { l.path.as_str() };
            println!("==> {} attempt {}: {from} <==", r.name, l.attempt);
            if l.error.is_empty() {
                print!("{}", l.text);
            } else {
                println!("(no log: {})", l.error);
            }
        }
        Ok(())
    })
}

/// `isoflop cancel SWEEP` / `isoflop cancel --run RUN`: live workers are stopped; on a cluster,
/// the runs' Jobs are deleted before the command returns.
pub fn cancel(target: &str, run: bool, store: &StoreArgs, remote: &RemoteArgs) -> CliResult {
    runtime()?.block_on(async {
        let scope = if run { Scope::Run(target) } else { Scope::Sweep(target) };
        let mut control = Control::open(store, remote, scope, true).await?;
        let c = control.client();
        let n = if run { c.cancel_run(target).await } else { c.cancel_sweep(target).await }.map_err(client);
        control.close().await;
        println!("cancelled {} run(s)", n?);
        Ok(())
    })
}

/// `isoflop submit SPEC --coordinator URL`.
pub fn submit(spec_path: &Path, remote: &RemoteArgs) -> CliResult {
    // Check it here first: a bad spec is refused with its line and key before any network.
    let loaded = SweepSpec::load(spec_path).map_err(input)?;
    let path = std::path::absolute(spec_path).unwrap_or_else(|_| spec_path.to_path_buf());
    runtime()?.block_on(async {
        let mut c = ControlClient::connect(remote.url()?, remote.token()?).await.map_err(client)?;
        let r = c.submit(loaded.text.clone(), path.display().to_string()).await.map_err(client)?;
        let done = r.succeeded_runs;
        println!(
            "submitted sweep {} to {}: {} runs ({} already succeeded, {} shared with earlier sweeps), {} evaluation jobs \
             ({} new){}{}",
            r.sweep,
            c.url(),
            r.runs,
            done,
            r.reused_runs,
            r.evals,
            r.evals - r.reused_evals,
            if r.updated { "; the spec changed (it only adds): the stored spec was updated" } else { "" },
            requeued_note(r.requeued as usize)
        );
        if !r.note.is_empty() {
            println!("{}", r.note);
        }
        println!("`isoflop watch {} --coordinator {}` follows it", r.sweep, c.url());
        Ok(())
    })
}

/// What a submission says of shared jobs it queued again (failed or cancelled in another sweep).
pub fn requeued_note(n: usize) -> String {
    match n {
        0 => String::new(),
        n => format!("; {n} shared job(s) that had failed or been cancelled in another sweep are queued again for this one"),
    }
}

/// One line for an event, or `None` for events not worth a line.
fn event_line(ev: &pb::RunEvent, names: &HashMap<String, String>) -> Option<String> {
    let name = names.get(&ev.run_id).cloned().unwrap_or_else(|| ev.run_id.clone());
    let state = |v| convert::run_state(v).map(|s| s.to_string()).unwrap_or_else(|_| "?".into());
    Some(match ev.event.as_ref()? {
        pb::run_event::Event::State(s) => {
            let mut line = format!("{name}: {} -> {}", state(s.from), state(s.to));
            if let Some(c) = convert::failure_class(s.failure_class) {
                line.push_str(&format!(" ({c})"));
            }
            if !s.message.is_empty() {
                line.push_str(&format!(": {}", s.message));
            }
            line
        }
        pb::run_event::Event::Progress(p) => {
            format!("{name}: step {}/{} loss {:.4} {} tok/s", p.step, p.total_steps, p.loss, count(p.tokens_per_second as u64))
        }
        pb::run_event::Event::Eval(e) => {
            format!("{name}: eval {} loss {:.4} ({:.4} bits/byte)", e.distribution, e.loss, e.bits_per_byte)
        }
    })
}

enum Next {
    Message(Result<Option<pb::RunEvent>, tonic::Status>),
    Resync,
    Interrupted,
}

/// `isoflop watch SWEEP --coordinator URL`: one line per event until every run of the sweep
/// has finished; exit code 0 when all succeeded, 1 otherwise.
pub fn watch(sweep: &str, remote: &RemoteArgs) -> CliResult {
    runtime()?.block_on(async {
        let mut c = ControlClient::connect(remote.url()?, remote.token()?).await.map_err(client)?;
        let started = Instant::now();
        let rows = |runs: Vec<isoflop_store::RunResults>| runs.into_iter().map(|x| x.run).collect::<Vec<_>>();
        loop {
            // Subscribe first, then read the current state: no event falls in between.
            let mut stream = c.watch(sweep).await.map_err(client)?;
            let mut runs = rows(c.runs(sweep).await.map_err(client)?);
            let names: HashMap<String, String> = runs.iter().map(|r| (r.run_id.clone(), r.name.clone())).collect();
            println!("{}", summary_line(sweep, &runs));
            let mut resync = tokio::time::interval(Duration::from_secs(5));
            let lost = loop {
                if isoflop_coordinator::sweep_settled(&runs) {
                    let failed = runs.iter().filter(|r| r.state != RunState::Succeeded).count();
                    println!("{}  elapsed {}", summary_line(sweep, &runs), duration(started.elapsed().as_secs_f64()));
                    return if failed == 0 {
                        Ok(())
                    } else {
                        Err(anyhow!("{failed} run(s) of sweep {sweep} did not succeed").into())
                    };
                }
                let next = tokio::select! {
                    m = stream.message() => Next::Message(m),
                    _ = resync.tick() => Next::Resync,
                    _ = tokio::signal::ctrl_c() => Next::Interrupted,
                };
                match next {
                    // Periodically re-read the state, in case an event was missed.
                    Next::Resync => runs = rows(c.runs(sweep).await.map_err(client)?),
                    Next::Interrupted => return Err(CliError::Interrupted),
                    Next::Message(Ok(Some(ev))) => {
                        if let Some(line) = event_line(&ev, &names) {
                            println!("{line}");
                        }
                        if let Some(pb::run_event::Event::State(s)) = &ev.event
                            && let Some(r) = runs.iter_mut().find(|r| r.run_id == ev.run_id)
                            && let Ok(to) = convert::run_state(s.to)
                        {
                            r.state = to;
                        }
                    }
                    Next::Message(Ok(None)) => break true,
                    Next::Message(Err(s)) if s.code() == tonic::Code::DataLoss => break false,
                    Next::Message(Err(s)) => return Err(client(c.error(s))),
                }
            };
            if lost {
                return Err(CliError::Unavailable(anyhow!(
                    "lost the connection: the coordinator at {} closed the stream (shutting down?)",
                    c.url()
                )));
            }
            println!("(fell behind the coordinator's events; re-reading the state)");
        }
    })
}
