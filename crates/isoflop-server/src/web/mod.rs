//! The coordinator's web page and its JSON API, on the HTTP listener beside `/metrics`.
//!
//! * [`view`]: what a sweep and a job show (state counts, FLOPs, ETA, curves), pure.
//! * [`api`]: `/api/v1/...` as JSON, and `/api/v1/stream`, Server-Sent Events carrying what
//!   changed since the client's cursor.
//! * [`pages`]: the HTML of the sweeps, sweep and run pages (maud), rendered on the server;
//!   `assets/app.js` makes them live and `assets/vendor` holds uPlot (see `assets/README.md`).
//!
//! Access: when the coordinator has an admin token, every page and API call asks for it, as
//! `Authorization: Bearer TOKEN` or the HttpOnly cookie the login form sets; health, metrics,
//! the login form and the static assets do not.

pub mod api;
pub mod pages;
pub mod view;

use crate::http::HttpState;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

/// The cookie the login form sets.
pub const COOKIE: &str = "isoflop_token";

/// The page, the API and the login form, behind the token check.
pub fn router(state: HttpState) -> Router<HttpState> {
    let guarded = Router::new()
        .route("/", get(pages::sweeps))
        .route("/sweeps/{name}", get(pages::sweep))
        .route("/runs/{id}", get(pages::run))
        .merge(api::router())
        .route_layer(axum::middleware::from_fn_with_state(state, require_token));
    Router::new()
        .merge(guarded)
        .route("/login", get(pages::login).post(login))
        .route("/logout", post(logout))
        .route("/assets/{*file}", get(asset))
}

/// The token the request carries: its bearer header, or the login cookie.
fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(t) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")) {
        return Some(t.trim().to_string());
    }
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == COOKIE).then(|| v.to_string())
    })
}

/// Compares digests, so that the comparison takes the same time wherever the strings differ.
fn token_ok(expected: &str, given: &str) -> bool {
    let (a, b) = (isoflop_coordinator::auth::hash_token(expected), isoflop_coordinator::auth::hash_token(given));
    a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(s): State<HttpState>, req: Request, next: Next) -> Response {
    let Some(expected) = s.admin_token.as_deref() else { return next.run(req).await };
    if presented(req.headers()).is_some_and(|t| token_ok(expected, &t)) {
        return next.run(req).await;
    }
    if req.uri().path().starts_with("/api/") {
        let body = serde_json::json!({"error": "this coordinator asks for its admin token: Authorization: Bearer TOKEN"});
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], axum::Json(body)).into_response();
    }
    let back = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    Redirect::to(&format!("/login?next={}", pages::url_encode(&back))).into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// Checks the token; sets the cookie and goes back where the user was, or shows the form again.
async fn login(State(s): State<HttpState>, axum::Form(form): axum::Form<LoginForm>) -> Response {
    // Only paths on this site: an absolute URL would make the form an open redirect.
    let next = if form.next.starts_with('/') && !form.next.starts_with("//") { form.next } else { "/".into() };
    match s.admin_token.as_deref() {
        Some(expected) if !token_ok(expected, form.token.trim()) => {
            // The form again, saying why (a 200: the browser shows a page, not a failed load).
            pages::login_page(&next, Some("That is not this coordinator's admin token.")).into_response()
        }
        _ => {
            let cookie = format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", form.token.trim());
            let mut resp = Redirect::to(&next).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
    }
}

async fn logout() -> Response {
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_static("isoflop_token=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"));
    resp
}

/// The static files, embedded in the binary.
pub const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../assets/app.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../../assets/app.css")),
    ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8", include_str!("../../assets/vendor/uPlot.iife.min.js")),
    ("vendor/uPlot.min.css", "text/css; charset=utf-8", include_str!("../../assets/vendor/uPlot.min.css")),
];

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, mime, body)) => ([(header::CONTENT_TYPE, *mime), (header::CACHE_CONTROL, "no-cache")], *body).into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}
