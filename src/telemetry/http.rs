//! `/metrics`, `/healthz` and `/readyz` (SPEC §7).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::Metrics;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

async fn render_metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let restoring = s.metrics.restoring_partitions.get();
    if s.metrics.state_write_failing.get() > 0 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the state store refuses writes (disk full or read-only?); consumption paused, retrying\n"
                .to_string(),
        )
    } else if restoring > 0 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: restoring {restoring} partition(s) from the changelog\n"),
        )
    } else if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no partitions assigned, broker unreachable, or no recent commit\n"
                .to_string(),
        )
    }
}

/// Binds `listen` now (so a bad address fails start-up) and serves until
/// the runtime stops. `extra` adds routes (the member API when enabled).
pub async fn serve(
    listen: &str,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    extra: Router,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let addr: SocketAddr = listen.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{listen}: {e}"))
    })?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, ready })
        .merge(extra);
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "http server stopped");
        }
    }))
}
