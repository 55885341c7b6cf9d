//! The `--metrics-listen` HTTP server: hyper's HTTP/1 server, one small task per scrape
//! connection, never in the driver's way (it only reads atomics and the registry).
//!
//! Routes (`GET` or `HEAD`; anything else is 405, an unknown path 404):
//! - `/metrics`: every metric in the OpenMetrics text format;
//! - `/healthz`: 200 `ok` while the driver loop turns, else 503 with the reason;
//! - `/readyz`: 200 `ready` once the node knows a leader and caught up, else 503 with why not.
//!
//! Each connection must send its request head within [`HEADER_TIMEOUT`] and is closed after
//! [`CONNECTION_LIFETIME`]; at most [`MAX_CONNECTIONS`] are served at once (more are closed
//! at accept), so a scraper cannot pin the daemon's descriptors or memory.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::health::STALE;
use super::Metrics;

/// How long a connection has to send its request head.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a scrape connection stays open (keep-alive included).
pub(crate) const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Most scrape connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `closing` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    closing: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = closing.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Typically out of descriptors: back off instead of spinning.
                tracing::warn!(%error, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("too many metrics connections; closing one");
            continue;
        };
        let metrics = metrics.clone();
        let closing = closing.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&metrics, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = closing.cancelled() => {}
                _ = tokio::time::timeout(CONNECTION_LIFETIME, connection) => {}
            }
            drop(slot);
        });
    }
}

/// The answer to one request.
fn respond(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET and HEAD\n".into(),
        );
    }
    match request.uri().path() {
        "/metrics" => reply(StatusCode::OK, OPENMETRICS, metrics.encode()),
        "/healthz" => verdict(metrics.health.alive(STALE), "ok"),
        "/readyz" => verdict(metrics.health.ready(), "ready"),
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

fn verdict(result: Result<(), String>, good: &str) -> Response<Full<Bytes>> {
    match result {
        Ok(()) => reply(StatusCode::OK, TEXT, format!("{good}\n")),
        Err(reason) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{reason}\n")),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
