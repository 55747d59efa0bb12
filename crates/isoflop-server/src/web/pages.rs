//! The HTML of the pages, rendered on the server with maud: every number is in the page as
//! served (it reads without JavaScript); `assets/app.js` sorts, filters, draws the charts and
//! applies the stream's changes in place.

use super::api::{self, ApiError};
use super::view::{JobView, SweepSummary};
use crate::http::HttpState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;

/// `s` as a URL query value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `1.2k`, `3.4M`, `5.6B`.
pub fn si(x: f64) -> String {
    let a = x.abs();
    let (v, unit) = if a >= 1e12 {
        (x / 1e12, "T")
    } else if a >= 1e9 {
        (x / 1e9, "B")
    } else if a >= 1e6 {
        (x / 1e6, "M")
    } else if a >= 1e3 {
        (x / 1e3, "k")
    } else {
        return format!("{x:.0}");
    };
    format!("{v:.1}{unit}")
}

/// `3h 05m`, `4m 10s`, `12s`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// A time in ms since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(ms: i64) -> String {
    let (y, m, d, h, min, sec) = isoflop_core::clock::utc_civil(ms);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{min:02}:{sec:02} UTC")
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

fn layout(title: &str, page: &str, attrs: &[(&str, &str)], body: Markup) -> Html<String> {
    let data_attrs: String =
        attrs.iter().map(|(k, v)| format!(" data-{k}=\"{}\"", maud::html!((v)).into_string())).collect::<String>();
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · isoflop" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/assets/vendor/uPlot.min.css";
                link rel="stylesheet" href="/assets/app.css";
            }
            (PreEscaped(format!("<body data-page=\"{page}\"{data_attrs}>")))
            header {
                a.brand href="/" { "isoflop" }
                span.live #live title="live updates" { "connecting" }
            }
            main { (body) }
            script src="/assets/vendor/uPlot.iife.min.js" {}
            script type="module" src="/assets/app.js" {}
            (PreEscaped("</body>"))
        }
    };
    Html(markup.into_string())
}

fn error_page(e: ApiError) -> Response {
    let status = e.status();
    let body =
        layout("error", "error", &[], html! { h1 { "Not here" } p.error { (e.to_string()) } p { a href="/" { "All sweeps" } } });
    (status, body).into_response()
}

fn state_counts(s: &SweepSummary) -> Markup {
    html! {
        span.counts {
            @for (state, n) in &s.states {
                span class={ "badge " (state) } data-state=(state) { (state) " " (n) }
            }
        }
    }
}

fn sweep_row(s: &SweepSummary) -> Markup {
    html! {
        tr data-sweep=(s.name) {
            td { a href={ "/sweeps/" (url_encode(&s.name)) } { (s.name) } }
            td data-key="states" { (state_counts(s)) }
            td data-key="done" { (s.succeeded) " / " (s.jobs) }
            td data-key="flops" { (format!("{:.2e}", s.flops_done)) " / " (format!("{:.2e}", s.flops_planned)) }
            td data-key="rate" { (if s.tokens_per_second > 0.0 { si(s.tokens_per_second) } else { "-".into() }) }
            td data-key="eta" { (opt(s.eta_seconds, duration)) }
            td { (utc(s.created_ms)) }
        }
    }
}

/// `/`: every sweep.
pub async fn sweeps(State(s): State<HttpState>) -> Response {
    let list = match s.coord.blocking(api::summaries).await {
        Ok(l) => l,
        Err(e) => return error_page(e),
    };
    layout(
        "sweeps",
        "sweeps",
        &[],
        html! {
            h1 { "Sweeps" }
            @if list.is_empty() {
                p.empty { "No sweep yet: " code { "isoflop submit SPEC" } " or " code { "isoflop run SPEC" } "." }
            }
            table #sweeps {
                thead { tr { th { "sweep" } th { "jobs by state" } th { "done" } th { "FLOPs done / planned" } th { "tokens/s" } th { "ETA" } th { "created" } } }
                tbody { @for s in &list { (sweep_row(s)) } }
            }
        },
    )
    .into_response()
}

/// The columns of a sweep's table: key, header, and whether it sorts as a number.
pub const COLUMNS: &[(&str, &str, bool)] = &[
    ("name", "job", false),
    ("kind", "kind", false),
    ("budget", "budget", true),
    ("params", "params", true),
    ("tokens", "tokens", true),
    ("state", "state", false),
    ("fraction", "progress", true),
    ("loss", "loss", true),
    ("best_loss", "best", true),
    ("tokens_per_second", "tokens/s", true),
    ("mfu", "MFU", true),
    ("elapsed_seconds", "elapsed", true),
    ("eta_seconds", "ETA", true),
    ("attempts", "attempts", true),
];

/// A job's row; every cell carries its sortable value.
pub fn job_row(j: &JobView) -> Markup {
    let num = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let state_title = match j.failure_class {
        Some(c) => format!("{c}: {}", j.message),
        None => j.message.clone(),
    };
    html! {
        tr data-id=(j.run_id) data-state=(j.state) data-kind=(j.kind) {
            td.sel { input type="checkbox" data-select=(j.run_id) title="overlay on the chart"; }
            td data-key="name" data-v=(j.name) { a href={ "/runs/" (j.run_id) } { (j.name) } }
            td data-key="kind" data-v=(j.kind) { (j.kind) }
            td data-key="budget" data-v=(j.budget) { (format!("{:.1e}", j.budget)) }
            td data-key="params" data-v=(num(j.params.map(|p| p as f64))) { (opt(j.params, |p| si(p as f64))) }
            td data-key="tokens" data-v=(num(j.tokens.map(|p| p as f64))) { (opt(j.tokens, |p| si(p as f64))) }
            td data-key="state" data-v=(j.state) title=(state_title) {
                span class={ "badge " (j.state) } { (j.state) }
                @if let Some(c) = j.failure_class { " " span.class { (c) } }
                @if !j.message.is_empty() && j.state != "succeeded" { div.reason { (j.message) } }
            }
            td data-key="fraction" data-v=(j.fraction) {
                div.bar { div.fill style={ "width:" (format!("{:.1}", j.fraction * 100.0)) "%" } {} }
                span.steps { (j.step) "/" (j.total_steps) }
            }
            td data-key="loss" data-v=(num(j.loss)) { (opt(j.loss, |l| format!("{l:.4}"))) }
            td data-key="best_loss" data-v=(num(j.best_loss)) { (opt(j.best_loss, |l| format!("{l:.4}"))) }
            td data-key="tokens_per_second" data-v=(num(j.tokens_per_second)) { (opt(j.tokens_per_second, si)) }
            td data-key="mfu" data-v=(num(j.mfu)) { (opt(j.mfu, |m| format!("{:.1}%", m * 100.0))) }
            td data-key="elapsed_seconds" data-v=(num(j.elapsed_seconds)) { (opt(j.elapsed_seconds, duration)) }
            td data-key="eta_seconds" data-v=(num(j.eta_seconds)) { (opt(j.eta_seconds, duration)) }
            td data-key="attempts" data-v=(j.attempts) { (j.attempts) }
            td { a href={ "/runs/" (j.run_id) "#log" } { "log" } }
        }
    }
}

fn summary_block(s: &SweepSummary) -> Markup {
    html! {
        div #summary data-sweep=(s.name) {
            (state_counts(s))
            span data-key="done" { (s.succeeded) " of " (s.jobs) " jobs done" }
            span data-key="flops" { (format!("{:.2e}", s.flops_done)) " of " (format!("{:.2e}", s.flops_planned)) " FLOPs" }
            span data-key="rate" { (if s.tokens_per_second > 0.0 { si(s.tokens_per_second) } else { "-".into() }) " tokens/s" }
            span data-key="eta" { "ETA " (opt(s.eta_seconds, duration)) }
        }
    }
}

/// `/sweeps/{name}`: its summary, charts and table of jobs.
pub async fn sweep(State(s): State<HttpState>, Path(name): Path<String>) -> Response {
    let n = name.clone();
    let d = match s.coord.blocking(move |c| api::sweep_data(c, &n)).await {
        Ok(d) => d,
        Err(e) => return error_page(e),
    };
    let states: Vec<&str> = isoflop_core::RunState::ALL.iter().map(|s| s.as_str()).collect();
    layout(
        &name,
        "sweep",
        &[("sweep", &name)],
        html! {
            h1 { "Sweep " (name) }
            (summary_block(&d.summary))
            div.charts {
                figure { figcaption { "Training loss against tokens (log-log), coloured by budget" } div #chart-loss {} }
                figure { figcaption #isoflop-caption { "Final loss against parameters, per budget (IsoFLOP)" } div #chart-isoflop {} }
                figure { figcaption #optima-caption { "Compute-optimal parameters N* and tokens D* against compute" } div #chart-optima {} }
                figure { figcaption #laws-caption { "Loss at the compute-optimal size per distribution, E(F)" } div #chart-laws {} }
                figure { figcaption #relative-caption { "Relative to the baseline, G(F) = E/E_baseline, with bands" } div #chart-relative {} }
            }
            div.controls {
                label { "filter " input #filter-q type="search" placeholder="name, state, reason"; }
                label { "state " select #filter-state { option value="" { "any" } @for st in &states { option value=(st) { (st) } } } }
                label { "kind " select #filter-kind { option value="" { "any" } option value="train" { "train" } option value="eval" { "eval" } } }
                label { "smoothing " input #ema type="range" min="0" max="0.99" step="0.01" value="0.6"; }
                span #shown {}
            }
            table #jobs {
                thead { tr {
                    th.sel {}
                    @for (key, label, numeric) in COLUMNS { th data-key=(key) data-num=(numeric) { (label) } }
                    th { "log" }
                } }
                tbody { @for j in &d.jobs { (job_row(j)) } }
            }
        },
    )
    .into_response()
}

/// `/runs/{id}`: a job's config, history, curves, results, attempts and log.
pub async fn run(State(s): State<HttpState>, Path(id): Path<String>) -> Response {
    let d = match s.coord.blocking(move |c| api::run_data(c, &id)).await {
        Ok(d) => d,
        Err(e) => return error_page(e),
    };
    let j = &d.job;
    let first_sweep = d.sweeps.first().cloned().unwrap_or_default();
    layout(
        &j.name,
        "run",
        &[("run", &j.run_id), ("attempts", &j.attempts.to_string())],
        html! {
            p.crumbs { @for sw in &d.sweeps { a href={ "/sweeps/" (url_encode(sw)) } { (sw) } " " } }
            h1 { (j.name) }
            div #run-state {
                span class={ "badge " (j.state) } data-key="state" { (j.state) }
                @if let Some(c) = j.failure_class { " " span.class { (c) } }
                " " span data-key="message" { (j.message) }
                " · " span data-key="steps" { (j.step) "/" (j.total_steps) " steps" }
                " · loss " span data-key="loss" { (opt(j.loss, |l| format!("{l:.4}"))) }
                " · best " span data-key="best_loss" { (opt(j.best_loss, |l| format!("{l:.4}"))) }
                " · " span data-key="tokens_per_second" { (opt(j.tokens_per_second, si)) } " tokens/s"
                " · ETA " span data-key="eta_seconds" { (opt(j.eta_seconds, duration)) }
                " · attempts " span data-key="attempts" { (j.attempts) }
            }
            @if j.kind == "eval" {
                p { "Evaluates " a href={ "/runs/" (j.parent.clone().unwrap_or_default()) } { "its run" } " at step " (j.eval_step.unwrap_or(0)) ", task " (j.task.clone().unwrap_or_default()) "." }
            }
            @if j.kind == "train" {
                div.charts {
                    figure { figcaption { "Loss against tokens" } div #chart-run-loss {} }
                    figure { figcaption { "Learning rate against step" } div #chart-run-lr {} }
                }
            }
            @if !d.evals.is_empty() {
                h2 { "Held-out losses" }
                table #evals { thead { tr { th { "distribution" } th { "loss (nats/token)" } th { "bits/byte" } th { "tokens" } } }
                    tbody { @for e in &d.evals { tr { td { (e.distribution) } td { (format!("{:.4}", e.loss)) } td { (format!("{:.4}", e.bits_per_byte)) } td { (e.tokens) } } } } }
            }
            @if !d.metrics.is_empty() {
                h2 { "Results" }
                table #results { thead { tr { th { "subset" } th { "metric" } th { "value" } } }
                    tbody { @for m in &d.metrics { tr { td { (m.subset) } td { (m.metric) } td { (format!("{:.4}", m.value)) } } } } }
            }
            h2 { "State history" }
            table #events {
                thead { tr { th { "time" } th { "attempt" } th { "from" } th { "to" } th { "reason" } } }
                tbody { @for e in &d.events { tr {
                    td { (utc(e.at_ms)) } td { (opt(e.attempt, |a| a.to_string())) } td { (e.from.as_str()) }
                    td { span class={ "badge " (e.to.as_str()) } { (e.to.as_str()) } }
                    td { @if let Some(c) = e.failure_class { span.class { (c.as_str()) } " " } (e.message) }
                } } }
            }
            h2 { "Attempts" }
            table #attempts {
                thead { tr { th { "attempt" } th { "outcome" } th { "started" } th { "ended" } th { "resumed from" } th { "where" } th { "message" } } }
                tbody { @for a in &d.attempts { tr {
                    td { (a.attempt) } td { (a.outcome.as_str()) @if let Some(c) = a.failure_class { " (" (c.as_str()) ")" } }
                    td { (utc(a.started_ms)) } td { (opt(a.ended_ms, utc)) } td { (a.resume_step) } td { code { (a.executor_ref) } } td { (a.message) }
                } } }
            }
            h2 #log { "Log" }
            div.controls {
                label { "attempt " select #log-attempt { @for a in (1..=j.attempts).rev() { option value=(a) { (a) } } } }
                label { "search " input #log-search type="search" placeholder="text in the log"; }
                label { input #log-follow type="checkbox" checked; " follow" }
                span #log-status {}
            }
            pre #log-text {}
            h2 { "Config" }
            pre #config { (serde_json::to_string_pretty(&d.config).unwrap_or_default()) }
            @if !first_sweep.is_empty() { p { a href={ "/sweeps/" (url_encode(&first_sweep)) } { "Back to " (first_sweep) } } }
        },
    )
    .into_response()
}

#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    next: String,
}

/// The login form: the admin token, kept as an HttpOnly cookie.
pub fn login_page(next: &str, error: Option<&str>) -> Html<String> {
    layout(
        "login",
        "login",
        &[],
        html! {
            h1 { "Log in" }
            p { "This coordinator asks for its admin token (" code { "isoflop serve" } "'s " code { "admin_token_file" } ", or the chart's Secret)." }
            @if let Some(e) = error { p.error #login-error { (e) } }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label { "token " input type="password" name="token" autocomplete="current-password" autofocus; }
                button type="submit" { "Log in" }
            }
        },
    )
}

pub async fn login(Query(q): Query<LoginQuery>) -> Response {
    (StatusCode::OK, login_page(if q.next.is_empty() { "/" } else { &q.next }, None)).into_response()
}
