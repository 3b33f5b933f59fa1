//! `/healthz` (HTTP-25) on HTTPS and the metrics listener; `/metrics` (HTTP-26) on the metrics
//! listener only.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::accounts::disk_free;
use crate::context::Ctx;

/// 200 `ok`, or 503 naming the first failed check. Listeners are all bound once `serve` answers
/// at all (a bind failure stops start-up), so that check holds by construction.
pub(crate) async fn healthz(State(ctx): State<Ctx>) -> Response {
    let text = |s: StatusCode, b: String| (s, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], b).into_response();
    if let Err(e) = ctx.store.health_check().await {
        tracing::error!(error = %e, "health check: database");
        return text(StatusCode::SERVICE_UNAVAILABLE, "database: read or write failed\n".into());
    }
    let cfg = ctx.config.get();
    // "Has space": room for at least one more message of the largest allowed size.
    let need = cfg.max_message_size.bytes();
    match disk_free(&cfg.data_dir) {
        Some(free) if free < need => {
            return text(StatusCode::SERVICE_UNAVAILABLE, "disk: data directory is full\n".into());
        }
        None => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "disk: cannot read free space of the data directory\n".into(),
            );
        }
        Some(_) => {}
    }
    text(StatusCode::OK, "ok\n".into())
}

pub(crate) async fn metrics(State(ctx): State<Ctx>) -> Response {
    // The accounts gauge is exact at every scrape even after CLI changes from another process.
    match ctx.store.account_count().await {
        Ok(n) => {
            ctx.metrics.accounts.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count accounts"),
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], ctx.metrics.render())
        .into_response()
}
