//! Which coordinator a control command talks to: a daemon (`--coordinator URL`), or an
//! in-process one over the local store. Either way the command makes the same control calls.

use crate::args::{RemoteArgs, StoreArgs};
use crate::exit::{CliError, client, input, server};
use anyhow::{Context, anyhow};
use isoflop_server::{ControlClient, LocalControl, Scope};

/// Opens an existing store (a SQLite file that is missing is the user's mistake: nothing is
/// created). Blocks.
pub fn open_existing(location: &isoflop_store::StoreLocation) -> Result<std::sync::Arc<dyn isoflop_store::Store>, CliError> {
    if let Some(path) = location.sqlite().filter(|p| !p.is_file()) {
        return Err(input(anyhow!("no isoflop store at {} (set --store or ISOFLOP_STORE)", path.display())));
    }
    isoflop_store::open(location).map_err(crate::exit::store)
}

/// A control client and what serves it.
#[allow(clippy::large_enum_variant)] // one per command; boxing buys nothing
pub enum Control {
    Remote(ControlClient),
    Local(LocalControl),
}

impl Control {
    /// Connects to `--coordinator` when given, else opens the local store; `scope` and
    /// `cluster` choose the local coordinator's settings (see [`LocalControl::open`]).
    pub async fn open(store: &StoreArgs, remote: &RemoteArgs, scope: Scope<'_>, cluster: bool) -> Result<Control, CliError> {
        match remote.coordinator() {
            Some(url) => Ok(Control::Remote(ControlClient::connect(url, remote.token()?).await.map_err(client)?)),
            None => Ok(Control::Local(LocalControl::open(&store.store, scope, cluster).await.map_err(server)?)),
        }
    }

    /// The client.
    pub fn client(&mut self) -> &mut ControlClient {
        match self {
            Control::Remote(c) => c,
            Control::Local(l) => l.client(),
        }
    }

    /// Waits for what the local coordinator still does (cluster deletions) and stops it.
    pub async fn close(self) {
        if let Control::Local(l) = self {
            l.close().await;
        }
    }
}

impl RemoteArgs {
    /// The admin token: from `--token-file`, else `ISOFLOP_TOKEN`.
    pub fn token(&self) -> Result<Option<String>, CliError> {
        match (self.token_file(), std::env::var("ISOFLOP_TOKEN").ok().filter(|t| !t.is_empty())) {
            (Some(f), _) => {
                let t = std::fs::read_to_string(&f)
                    .with_context(|| format!("cannot read token file {}", f.display()))
                    .map_err(input)?;
                Ok(Some(t.trim().to_string()))
            }
            (None, t) => Ok(t),
        }
    }

    /// The coordinator URL, required.
    pub fn url(&self) -> Result<&str, CliError> {
        self.coordinator().ok_or_else(|| input(anyhow!("--coordinator URL (or ISOFLOP_COORDINATOR) is required")))
    }
}

/// The requeue of `isoflop resume SWEEP`.
pub fn requeue(sweep: &str, include_diverged: bool, store: &StoreArgs, remote: &RemoteArgs) -> Result<(), CliError> {
    runtime()?.block_on(async {
        let mut control = Control::open(store, remote, Scope::Sweep(sweep), false).await?;
        let n = control.client().resume(sweep, include_diverged).await.map_err(client);
        let url = control.client().url().to_string();
        control.close().await;
        let n = n?;
        match remote.coordinator() {
            Some(_) => println!("requeued {n} run(s) of sweep {sweep}; the coordinator at {url} runs them"),
            None => println!("requeued {n} run(s) of sweep {sweep}"),
        }
        Ok(())
    })
}

/// A tokio runtime for one command on the calling thread.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?)
}
