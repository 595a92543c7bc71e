//! `GET /members/{member_id}` (SPEC §7): the member's view as of their
//! partition's clock now. Personal data: served only when `http.member_api`
//! is on, and only to requests bearing the token of
//! `http.member_api_token_file`.
//!
//! Answers: 200 with the view; 401 without the right bearer token; 404 for a
//! member no partition of this instance holds; 503 when the member may be on
//! a partition that is restoring, or their state sits on a partition another
//! instance owns now (the body names the partition), or before the store is
//! open. Member ids never reach a log line or a metric label: handlers log
//! the status and partition only.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::live::Live;
use super::view::{self, ViewError};
use crate::engine::EngineConfig;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("http.member_api_token_file: cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("http.member_api_token_file: {path} holds no token")]
    Empty { path: String },
}

/// Reads the bearer token (surrounding whitespace, a trailing newline
/// included, is not part of it).
pub fn read_token(path: &Path) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.display().to_string(),
        });
    }
    Ok(token.to_string())
}

/// The member API's token when `http.member_api` is on, `None` when off.
pub fn token_for(http: &crate::config::HttpConfig) -> Result<Option<String>, TokenError> {
    match &http.member_api_token_file {
        Some(path) if http.member_api => read_token(path).map(Some),
        _ => Ok(None),
    }
}

#[derive(Clone)]
struct Api {
    live: Arc<Live>,
    cfg: Arc<EngineConfig>,
    token: Arc<[u8]>,
}

/// The member API's routes, to merge into the `http.listen` router.
pub fn router(live: Arc<Live>, cfg: EngineConfig, token: String) -> Router {
    Router::new()
        .route("/members/{member_id}", get(member))
        .with_state(Api {
            live,
            cfg: Arc::new(cfg),
            token: token.into_bytes().into(),
        })
}

/// Constant-time comparison of the presented token: how much of it matches
/// takes the same time to find out (only its length can be learnt).
fn authorised(headers: &HeaderMap, token: &[u8]) -> bool {
    let Some(presented) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    presented.ct_eq(token).into()
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn member(
    State(api): State<Api>,
    UrlPath(member_id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if !authorised(&headers, &api.token) {
        tracing::debug!(status = 401, "member api: request without the right token");
        let mut r = answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "a bearer token is required (Authorization: Bearer …)"}),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    // RocksDB reads block: keep them off the async workers.
    let looked_up =
        tokio::task::spawn_blocking(move || lookup(&api.live, &api.cfg, &member_id)).await;
    let (status, partition, body) = match looked_up {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "member api: reading state failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                json!({"error": e.to_string()}),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "member api: lookup task failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                json!({"error": "lookup failed"}),
            )
        }
    };
    tracing::debug!(
        status = status.as_u16(),
        partition,
        "member api: request served"
    );
    answer(status, body)
}

type Found = (StatusCode, Option<u32>, serde_json::Value);

fn lookup(live: &Live, cfg: &EngineConfig, member_id: &str) -> Result<Found, ViewError> {
    let Some(store) = live.store() else {
        return Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            json!({"error": "the state store is not open yet"}),
        ));
    };
    let parts = live.partitions();
    for (&p, clock) in &parts.processing {
        if let Some(m) = view::load(store.as_ref(), p, member_id)? {
            let now = match clock {
                Some(c) => *c,
                None => view::stored_clock(store.as_ref(), p)?.unwrap_or(m.last_event_ms),
            };
            let v = view::evaluate(member_id, p, &m, now, cfg);
            return Ok((StatusCode::OK, Some(p), v.to_json()));
        }
    }
    if !parts.restoring.is_empty() {
        let list: Vec<u32> = parts.restoring.iter().copied().collect();
        return Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            json!({
                "error": format!(
                    "partition(s) {} restoring from the changelog; the member may be there, retry shortly",
                    join(&list)
                ),
                "restoring_partitions": list,
            }),
        ));
    }
    // State of partitions this instance processed before a rebalance stays
    // in the store a while (pipeline.drop_unowned_after_ms): a member found
    // there now belongs to the partition's new owner.
    for p in view::member_partitions(store.as_ref())? {
        if parts.processing.contains_key(&p) {
            continue;
        }
        if view::load(store.as_ref(), p, member_id)?.is_some() {
            return Ok((
                StatusCode::SERVICE_UNAVAILABLE,
                Some(p),
                json!({
                    "error": format!(
                        "the member's partition {p} is owned by another instance; ask that instance"
                    ),
                    "partition": p,
                }),
            ));
        }
    }
    let here: Vec<u32> = parts.processing.keys().copied().collect();
    Ok((
        StatusCode::NOT_FOUND,
        None,
        json!({
            "error": "unknown member on the partitions this instance processes",
            "partitions_here": here,
        }),
    ))
}

fn join(ps: &[u32]) -> String {
    ps.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
