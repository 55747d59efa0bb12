//! `/api/v1`: what the pages show, as JSON, for scripts; and `/api/v1/stream`, the page's live
//! updates as Server-Sent Events.
//!
//! | path | what |
//! |---|---|
//! | `GET /api/v1/sweeps` | every sweep's [`SweepSummary`] |
//! | `GET /api/v1/sweeps/{name}` | `{summary, jobs}`: the summary and a [`JobView`] per job |
//! | `GET /api/v1/sweeps/{name}/curves?points=N` | `{run_id: [[tokens, loss, lr, step], ...]}` per training run, downsampled |
//! | `GET /api/v1/sweeps/{name}/fit` | `{task, metric, baseline, report}`: the fitter's report of the sweep's first task (`isoflop fit SWEEP`, without the parametric law), or `{why}` when there is none yet; computed again when a job ends |
//! | `GET /api/v1/runs/{id}` | a job (id, unique prefix or name): its row, config, events, attempts, checkpoints, results |
//! | `GET /api/v1/runs/{id}/progress?points=N` | its curve |
//! | `GET /api/v1/runs/{id}/log?attempt=A&offset=B` | its attempt's log from byte `B`: `{text, offset, size, ...}` |
//! | `GET /api/v1/stream?sweep=S&run=R&cursor=MS` | events `summaries`, `jobs`, `points`, `events`, each with id the server's time |

use super::view::{self, CurvePoint, JobView, SweepSummary};
use crate::http::HttpState;
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use isoflop_coordinator::Coordinator;
use isoflop_proto::v1 as pb;
use isoflop_store::{ProgressPoint, RunRow, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::time::Duration;

/// Points of a curve unless the caller asks for other: about 1,000 per run.
pub const CURVE_POINTS: usize = 1000;
/// Points per run on a sweep's chart (hundreds of runs on one chart).
pub const SWEEP_CURVE_POINTS: usize = 300;
/// Bytes of a log per call.
pub const LOG_CHUNK: u64 = 256 * 1024;
/// How often the stream sends what changed.
pub const STREAM_PERIOD: Duration = Duration::from_millis(500);

pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/api/v1/sweeps", get(sweeps))
        .route("/api/v1/sweeps/{name}", get(sweep))
        .route("/api/v1/sweeps/{name}/curves", get(curves))
        .route("/api/v1/sweeps/{name}/fit", get(fit))
        .route("/api/v1/runs/{id}", get(run))
        .route("/api/v1/runs/{id}/progress", get(progress))
        .route("/api/v1/runs/{id}/log", get(log))
        .route("/api/v1/stream", get(stream))
}

/// Why a call has no answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the store: {0}")]
    Store(#[from] StoreError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<isoflop_coordinator::CoordinatorError> for ApiError {
    fn from(e: isoflop_coordinator::CoordinatorError) -> Self {
        match e {
            isoflop_coordinator::CoordinatorError::Store(s) => ApiError::Store(s),
            other => ApiError::NotFound(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(json!({"error": self.to_string()}))).into_response()
    }
}

/// Every sweep's summary, newest first.
pub fn summaries(c: &Coordinator) -> Result<Vec<SweepSummary>, ApiError> {
    let store = c.store();
    let mut out = Vec::new();
    for s in store.sweeps()? {
        let runs = store.sweep_runs(&s.name)?;
        out.push(view::summarize(&s.name, s.created_ms, &runs));
    }
    out.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

/// A sweep's summary, its jobs' rows and its progress histories.
pub struct SweepData {
    pub summary: SweepSummary,
    pub jobs: Vec<JobView>,
    pub rows: Vec<RunRow>,
    pub history: HashMap<String, Vec<ProgressPoint>>,
}

pub fn sweep_data(c: &Coordinator, name: &str) -> Result<SweepData, ApiError> {
    let store = c.store();
    let Some(row) = store.sweep(name)? else { return Err(ApiError::NotFound(format!("no sweep named {name}"))) };
    let rows = store.sweep_runs(name)?;
    let history = store.sweep_progress(name)?;
    let jobs = rows.iter().map(|r| view::job_view(r, history.get(&r.run_id).map(Vec::as_slice))).collect();
    Ok(SweepData { summary: view::summarize(name, row.created_ms, &rows), jobs, rows, history })
}

/// The curves of a sweep's training runs.
pub fn sweep_curves(d: &SweepData, points: usize) -> BTreeMap<String, Vec<CurvePoint>> {
    d.rows
        .iter()
        .filter(|r| r.is_training())
        .filter_map(|r| Some((r.run_id.clone(), view::curve(d.history.get(&r.run_id)?, points))))
        .collect()
}

/// A job with everything its page shows.
pub struct RunData {
    pub row: RunRow,
    pub job: JobView,
    pub config: Value,
    pub sweeps: Vec<String>,
    pub events: Vec<isoflop_store::EventRow>,
    pub attempts: Vec<isoflop_store::AttemptRow>,
    pub checkpoints: Vec<isoflop_store::CheckpointRow>,
    pub evals: Vec<isoflop_store::EvalRow>,
    pub metrics: Vec<isoflop_core::EvalMetric>,
    pub history: Vec<ProgressPoint>,
}

pub fn run_data(c: &Coordinator, key: &str) -> Result<RunData, ApiError> {
    let row = c.find_run(key)?;
    let store = c.store();
    let history = store.progress(&row.run_id)?;
    let sweeps = store
        .sweeps()?
        .into_iter()
        .map(|s| s.name)
        .filter(|s| store.sweep_members(s).is_ok_and(|m| m.iter().any(|m| m.run_id == row.run_id)))
        .collect();
    Ok(RunData {
        job: view::job_view(&row, Some(&history)),
        config: serde_json::from_str(&row.config_json).unwrap_or(Value::Null),
        sweeps,
        events: store.events(&row.run_id)?,
        attempts: store.attempts(&row.run_id)?,
        checkpoints: store.checkpoints(&row.run_id)?,
        evals: if row.is_training() { store.evals(&row.run_id)? } else { Vec::new() },
        metrics: if row.is_training() { Vec::new() } else { store.eval_results(&row.run_id)? },
        history,
        row,
    })
}

pub fn event_json(e: &isoflop_store::EventRow) -> Value {
    json!({
        "id": e.id,
        "run_id": e.run_id,
        "attempt": e.attempt,
        "at_ms": e.at_ms,
        "from": e.from.as_str(),
        "to": e.to.as_str(),
        "failure_class": e.failure_class.map(|f| f.as_str()),
        "message": e.message,
    })
}

fn run_json(d: &RunData) -> Value {
    json!({
        "job": d.job,
        "sweeps": d.sweeps,
        "config": d.config,
        "events": d.events.iter().map(event_json).collect::<Vec<_>>(),
        "attempts": d.attempts.iter().map(|a| json!({
            "attempt": a.attempt,
            "outcome": a.outcome.as_str(),
            "failure_class": a.failure_class.map(|f| f.as_str()),
            "message": a.message,
            "executor_ref": a.executor_ref,
            "resume_step": a.resume_step,
            "started_ms": a.started_ms,
            "ended_ms": a.ended_ms,
        })).collect::<Vec<_>>(),
        "checkpoints": d.checkpoints.iter().map(|c| json!({"step": c.step, "attempt": c.attempt, "path": c.path, "tokens_seen": c.tokens_seen})).collect::<Vec<_>>(),
        "evals": d.evals.iter().map(|e| json!({"distribution": e.distribution, "loss": e.loss, "bits_per_byte": e.bits_per_byte, "tokens": e.tokens, "bytes": e.bytes})).collect::<Vec<_>>(),
        "results": d.metrics.iter().map(|m| json!({"subset": m.subset, "metric": m.metric, "value": m.value})).collect::<Vec<_>>(),
    })
}

async fn sweeps(State(s): State<HttpState>) -> Result<Json<Vec<SweepSummary>>, ApiError> {
    Ok(Json(s.coord.blocking(summaries).await?))
}

async fn sweep(State(s): State<HttpState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let d = s.coord.blocking(move |c| sweep_data(c, &name)).await?;
    Ok(Json(json!({"summary": d.summary, "jobs": d.jobs})))
}

#[derive(Deserialize)]
pub struct PointsQuery {
    points: Option<usize>,
}

fn points_of(q: &PointsQuery, default: usize) -> Result<usize, ApiError> {
    match q.points {
        None => Ok(default),
        Some(n) if (2..=100_000).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!("points={n}: expected 2 to 100000"))),
    }
}

async fn curves(
    State(s): State<HttpState>,
    Path(name): Path<String>,
    Query(q): Query<PointsQuery>,
) -> Result<Json<BTreeMap<String, Vec<CurvePoint>>>, ApiError> {
    let points = points_of(&q, SWEEP_CURVE_POINTS)?;
    let d = s.coord.blocking(move |c| sweep_data(c, &name)).await?;
    Ok(Json(sweep_curves(&d, points)))
}

async fn run(State(s): State<HttpState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let d = s.coord.blocking(move |c| run_data(c, &id)).await?;
    Ok(Json(run_json(&d)))
}

async fn progress(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    Query(q): Query<PointsQuery>,
) -> Result<Json<Vec<CurvePoint>>, ApiError> {
    let points = points_of(&q, CURVE_POINTS)?;
    let history = s.coord.blocking(move |c| c.find_run(&id).and_then(|r| Ok(c.store().progress(&r.run_id)?))).await?;
    Ok(Json(view::curve(&history, points)))
}

#[derive(Deserialize)]
pub struct LogQuery {
    attempt: Option<u64>,
    #[serde(default)]
    offset: u64,
}

/// Reads up to [`LOG_CHUNK`] bytes of `path` from `offset`, ending at a line's end when it
/// can: `(text, next offset, size)`.
fn read_from(path: &std::path::Path, offset: u64) -> std::io::Result<(String, u64, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    let start = offset.min(size);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(LOG_CHUNK).read_to_end(&mut buf)?;
    // A partial last line waits for the next call (unless the chunk is all one line).
    if let Some(nl) = buf.iter().rposition(|b| *b == b'\n') {
        buf.truncate(nl + 1);
    } else if (buf.len() as u64) < LOG_CHUNK {
        buf.clear();
    }
    let next = start + buf.len() as u64;
    Ok((String::from_utf8_lossy(&buf).into_owned(), next, size))
}

async fn log(State(s): State<HttpState>, Path(id): Path<String>, Query(q): Query<LogQuery>) -> Result<Json<Value>, ApiError> {
    let coord = s.coord.clone();
    let row = s.coord.blocking(move |c| c.find_run(&id)).await?;
    if row.attempts == 0 {
        return Ok(Json(
            json!({"attempt": 0, "attempts": 0, "text": "", "offset": 0, "size": 0, "live": false, "note": "no attempt yet"}),
        ));
    }
    let attempt = q.attempt.unwrap_or(row.attempts);
    if attempt == 0 || attempt > row.attempts {
        return Err(ApiError::NotFound(format!("run {} has attempts 1 to {}, not {attempt}", row.name, row.attempts)));
    }
    let path = coord.log_path(&row.artifacts_key, attempt);
    let file = path.clone();
    let offset = q.offset;
    let read =
        tokio::task::spawn_blocking(move || read_from(&file, offset)).await.map_err(|e| ApiError::NotFound(e.to_string()))?;
    let active = row.state.is_active() && attempt == row.attempts;
    match read {
        Ok((text, next, size)) => Ok(Json(json!({
            "attempt": attempt, "attempts": row.attempts, "text": text, "offset": next, "size": size,
            "live": active, "path": path.display().to_string(),
        }))),
        // A cluster executor has a running attempt's log where it runs: its tail, whole.
        Err(e) => match coord.executor().live_log(&row.run_id, attempt).await {
            Ok(Some(text)) => Ok(Json(json!({
                "attempt": attempt, "attempts": row.attempts, "size": text.len(), "offset": text.len(),
                "text": text, "live": true, "whole": true,
            }))),
            _ => Ok(Json(json!({
                "attempt": attempt, "attempts": row.attempts, "text": "", "offset": 0, "size": 0,
                "live": active, "note": format!("no log yet: {e}"),
            }))),
        },
    }
}

#[derive(Deserialize, Default)]
pub struct StreamQuery {
    sweep: Option<String>,
    run: Option<String>,
    #[serde(default)]
    cursor: i64,
}

/// What one stream follows.
struct Scope {
    sweep: Option<String>,
    /// A run page's run id (resolved).
    run: Option<String>,
    /// The jobs whose changes are sent: the sweep's, or the run's.
    members: HashSet<String>,
}

/// One message of the stream: its event name and JSON.
type Message = (&'static str, Value);

/// What changed since `cursor` (a server time in ms; 0 for everything): the summaries, the
/// scope's jobs updated or reported since, their progress points since, and a run's events.
fn changes(c: &Coordinator, scope: &mut Scope, cursor: i64, only: Option<&HashSet<String>>) -> Result<Vec<Message>, ApiError> {
    let mut out: Vec<Message> = vec![("summaries", serde_json::to_value(summaries(c)?).unwrap_or(Value::Null))];
    let store = c.store();
    let rows: Vec<RunRow> = match (&scope.sweep, &scope.run) {
        (Some(s), _) => store.sweep_runs(s)?,
        (None, Some(r)) => store.run(r)?.into_iter().collect(),
        (None, None) => Vec::new(),
    };
    scope.members = rows.iter().map(|r| r.run_id.clone()).collect();
    let changed: Vec<&RunRow> = rows
        .iter()
        .filter(|r| match only {
            Some(ids) => ids.contains(&r.run_id),
            None => r.updated_ms > cursor || r.progress.as_ref().is_some_and(|p| p.at_ms > cursor),
        })
        .collect();
    if changed.is_empty() {
        return Ok(out);
    }
    let history: HashMap<String, Vec<ProgressPoint>> = match (&scope.sweep, &scope.run) {
        (Some(s), _) => store.sweep_progress(s)?,
        (None, Some(r)) => HashMap::from([(r.clone(), store.progress(r)?)]),
        _ => HashMap::new(),
    };
    let jobs: Vec<JobView> = changed.iter().map(|r| view::job_view(r, history.get(&r.run_id).map(Vec::as_slice))).collect();
    out.push(("jobs", serde_json::to_value(jobs).unwrap_or(Value::Null)));
    if only.is_none() {
        // A client that reconnects gets the points it missed.
        let mut points = serde_json::Map::new();
        for r in changed.iter().filter(|r| r.is_training()) {
            let since: Vec<ProgressPoint> =
                history.get(&r.run_id).map(|h| h.iter().filter(|p| p.at_ms > cursor).cloned().collect()).unwrap_or_default();
            if !since.is_empty() {
                points.insert(r.run_id.clone(), json!(view::curve(&since, CURVE_POINTS)));
            }
        }
        if !points.is_empty() {
            out.push(("points", Value::Object(points)));
        }
    }
    if let Some(run) = &scope.run {
        let events: Vec<Value> =
            store.events(run)?.iter().filter(|e| e.at_ms > cursor || only.is_some()).map(event_json).collect();
        out.push(("events", Value::Array(events)));
    }
    Ok(out)
}

/// `/api/v1/stream`: first what changed since `cursor`, then every [`STREAM_PERIOD`] what
/// changed in it (jobs whose state or progress moved, their new curve points, a run's events),
/// each message with the server's time as its id, the client's next cursor. A client that
/// fell behind the coordinator's broadcast gets everything again.
async fn stream(State(s): State<HttpState>, headers: HeaderMap, Query(q): Query<StreamQuery>) -> Result<Response, ApiError> {
    let coord = s.coord.clone();
    // A browser's own reconnect names the last message it got.
    let resumed = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i64>().ok());
    let run = match q.run.clone() {
        Some(key) => Some(coord.blocking(move |c| c.find_run(&key)).await?.run_id),
        None => None,
    };
    if let Some(name) = q.sweep.clone()
        && coord.blocking(move |c| c.store().sweep(&name)).await?.is_none()
    {
        return Err(ApiError::NotFound(format!("no sweep named {}", q.sweep.unwrap_or_default())));
    }
    let mut scope = Scope { sweep: q.sweep.clone(), run, members: HashSet::new() };
    let mut rx = coord.subscribe();
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
    let cursor = resumed.unwrap_or(q.cursor);
    let shutdown = s.shutdown.clone();
    tokio::spawn(async move {
        let send = |tx: &tokio::sync::mpsc::Sender<Result<Event, Infallible>>, msgs: Vec<Message>, at: i64| {
            let tx = tx.clone();
            async move {
                for (name, data) in msgs {
                    let ev = Event::default().event(name).id(at.to_string()).data(data.to_string());
                    if tx.send(Ok(ev)).await.is_err() {
                        return false;
                    }
                }
                true
            }
        };
        let at = coord.now_ms();
        let (first, sc) = coord
            .blocking(move |c| {
                let r = changes(c, &mut scope, cursor, None);
                (r, scope)
            })
            .await;
        scope = sc;
        match first {
            Ok(msgs) => {
                if !send(&tx, msgs, at).await {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Ok(Event::default().event("error").data(json!({"error": e.to_string()}).to_string()))).await;
                return;
            }
        }
        let mut tick = tokio::time::interval(STREAM_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = at;
        loop {
            let mut changed: HashSet<String> = HashSet::new();
            let mut points: BTreeMap<String, Vec<CurvePoint>> = BTreeMap::new();
            let mut lagged = false;
            let mut any = false;
            tokio::select! {
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            loop {
                match rx.try_recv() {
                    Ok(ev) => {
                        any = true;
                        if let Some(pb::run_event::Event::Progress(p)) = &ev.event
                            && scope.members.contains(&ev.run_id)
                        {
                            points.entry(ev.run_id.clone()).or_default().push(CurvePoint(p.tokens_seen, p.loss, p.lr, p.step));
                        }
                        changed.insert(ev.run_id);
                    }
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
                    Err(_) => break,
                }
            }
            if !any && !lagged {
                continue;
            }
            let at = coord.now_ms();
            let since = last;
            let only = (!lagged).then_some(changed);
            let (msgs, sc) = coord
                .blocking(move |c| {
                    // A job of another sweep changed only the summaries.
                    let r = changes(c, &mut scope, if only.is_some() { i64::MAX } else { since }, only.as_ref());
                    (r, scope)
                })
                .await;
            scope = sc;
            let Ok(mut msgs) = msgs else { continue };
            if !points.is_empty() && !lagged {
                msgs.push(("points", serde_json::to_value(points).unwrap_or(Value::Null)));
            }
            if !send(&tx, msgs, at).await {
                return;
            }
            last = at;
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(out);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

/// When a sweep's fit was computed: its jobs that ended, and the newest change among them.
type FitMark = (usize, i64);

/// The fits the page has asked for, by sweep, with what they were computed from.
#[derive(Default)]
pub struct FitCache(std::sync::Mutex<HashMap<String, (FitMark, Value)>>);

/// The fitter's report of a sweep's first task (the held-out text losses when it has them),
/// as `isoflop fit SWEEP --no-parametric` computes it; cached until a job of the sweep ends.
pub fn sweep_fit(c: &Coordinator, cache: &FitCache, name: &str) -> Result<Value, ApiError> {
    let store = c.store();
    if store.sweep(name)?.is_none() {
        return Err(ApiError::NotFound(format!("no sweep named {name}")));
    }
    let rows = store.sweep_runs(name)?;
    let ended: Vec<&RunRow> = rows.iter().filter(|r| r.state.is_terminal()).collect();
    let mark = (ended.len(), ended.iter().map(|r| r.updated_ms).max().unwrap_or(0));
    if let Some((m, v)) = cache.0.lock().unwrap_or_else(|p| p.into_inner()).get(name)
        && *m == mark
    {
        return Ok(v.clone());
    }
    let options = isoflop_fit::FitOptions { run_parametric: false, ..isoflop_fit::FitOptions::default() };
    let so = isoflop_fit::sweep::SectionOptions::default();
    let value = match isoflop_fit::sweep::sections(store.as_ref(), name, None, &options, &so, false) {
        Err(e) => json!({"why": e.to_string()}),
        Ok(sections) => match sections.into_iter().next() {
            None => json!({"why": "no task to fit"}),
            Some((task, Err(why))) => json!({"task": task.name, "why": why}),
            Some((task, Ok(section))) => match section.fit() {
                Ok(report) => {
                    // The points its IsoFLOP parabolas were fitted to: `[budget, params, loss]`.
                    let frontier = &report.isoflop.distribution;
                    let points: Vec<[f64; 3]> = section
                        .table
                        .points
                        .iter()
                        .filter(|p| &p.distribution == frontier)
                        .map(|p| [p.budget, p.params, p.loss])
                        .collect();
                    json!({
                        "task": task.name,
                        "metric": section.metric,
                        "baseline": section.baseline,
                        "points": points,
                        "report": report,
                    })
                }
                Err(e) => json!({"task": task.name, "why": e.to_string()}),
            },
        },
    };
    cache.0.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), (mark, value.clone()));
    Ok(value)
}

async fn fit(State(s): State<HttpState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let cache = s.fits.clone();
    Ok(Json(s.coord.blocking(move |c| sweep_fit(c, &cache, &name)).await?))
}
