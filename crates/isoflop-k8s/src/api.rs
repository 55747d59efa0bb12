//! Being kind to the API server: a client-side token bucket (QPS and burst from the spec) for
//! the calls the executor makes, and a count of every HTTP request the client sends (watches
//! and their reconnects included), so the cost of a sweep can be measured.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// A token bucket: `burst` calls at once, then `qps` per second.
#[derive(Debug)]
pub struct Limiter {
    qps: f64,
    burst: f64,
    state: tokio::sync::Mutex<(f64, Instant)>,
}

impl Limiter {
    pub fn new(qps: f32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Limiter { qps: f64::from(qps).max(1e-3), burst, state: tokio::sync::Mutex::new((burst, Instant::now())) }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().await;
                let now = Instant::now();
                s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.qps).min(self.burst);
                s.1 = now;
                if s.0 >= 1.0 {
                    s.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - s.0) / self.qps)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Counts of HTTP requests by `VERB resource` (`POST jobs`, `WATCH pods`, `DELETE jobs`).
#[derive(Debug, Clone, Default)]
pub struct ApiCalls(Arc<Mutex<BTreeMap<String, u64>>>);

impl ApiCalls {
    /// Every request so far.
    pub fn total(&self) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).values().sum()
    }

    /// Requests by verb and resource.
    pub fn by_kind(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record<B>(&self, req: &http::Request<B>) {
        let query = req.uri().query().unwrap_or_default();
        let verb = if query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1") {
            "WATCH".to_string()
        } else {
            req.method().as_str().to_string()
        };
        let resource = resource_of(req.uri().path());
        *self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(format!("{verb} {resource}")).or_default() += 1;
    }
}

/// The resource a request path names: `/apis/batch/v1/namespaces/x/jobs/name` → `jobs`,
/// `/api/v1/namespaces/x/pods/p/status` → `pods/status`.
fn resource_of(path: &str) -> String {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let start = match parts.first() {
        Some(&"api") => 2,
        Some(&"apis") => 3,
        _ => return path.to_string(),
    };
    let rest = parts.get(start..).unwrap_or_default();
    let rest = if rest.first() == Some(&"namespaces") && rest.len() > 2 { &rest[2..] } else { rest };
    match rest {
        [r] | [r, _] => r.to_string(),
        [r, _, sub, ..] => format!("{r}/{sub}"),
        [] => "namespaces".into(),
    }
}

/// A tower layer that records each request in an [`ApiCalls`].
#[derive(Debug, Clone)]
pub struct CountLayer(pub ApiCalls);

impl<S> tower::Layer<S> for CountLayer {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted { inner, calls: self.0.clone() }
    }
}

/// See [`CountLayer`].
#[derive(Debug, Clone)]
pub struct Counted<S> {
    inner: S,
    calls: ApiCalls,
}

impl<S, B> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.calls.record(&req);
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_named_from_paths() {
        assert_eq!(resource_of("/apis/batch/v1/namespaces/x/jobs"), "jobs");
        assert_eq!(resource_of("/apis/batch/v1/namespaces/x/jobs/isoflop-a-a1"), "jobs");
        assert_eq!(resource_of("/api/v1/namespaces/x/pods/p/status"), "pods/status");
        assert_eq!(resource_of("/api/v1/namespaces/x/secrets/s"), "secrets");
        assert_eq!(resource_of("/api/v1/nodes"), "nodes");
        assert_eq!(resource_of("/version"), "/version");
    }

    #[test]
    fn requests_are_counted_by_verb() {
        let calls = ApiCalls::default();
        let req = |m: &str, uri: &str| http::Request::builder().method(m).uri(uri).body(()).unwrap();
        calls.record(&req("POST", "/apis/batch/v1/namespaces/x/jobs"));
        calls.record(&req("GET", "/api/v1/namespaces/x/pods?labelSelector=a%3Db&watch=true&resourceVersion=5"));
        calls.record(&req("GET", "/api/v1/namespaces/x/pods?labelSelector=a%3Db"));
        assert_eq!(calls.total(), 3);
        assert_eq!(calls.by_kind()["WATCH pods"], 1);
        assert_eq!(calls.by_kind()["GET pods"], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_a_burst_then_the_rate() {
        let l = Limiter::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.acquire().await;
        }
        assert!(t0.elapsed() < Duration::from_millis(1), "the burst is free");
        for _ in 0..4 {
            l.acquire().await;
        }
        let e = t0.elapsed().as_secs_f64();
        assert!((1.9..2.2).contains(&e), "4 more calls at 2 per second take 2 s (virtual time), took {e}");
    }
}
