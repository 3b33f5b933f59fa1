//! `POST /mxdeliv`: relay-to-relay ingress (delivery.md section 8, HTTP-24).
//!
//! SLOT: the delivery issue replaces this file only. The route, its body limit
//! (`max_message_size`) and its 60 s timeout are set up in `routes.rs`; the handler below receives
//! the request with `ConnInfo` as an extension. Until then every delivery is refused as a local
//! error so the sending relay retries or falls back to SMTP.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::context::Ctx;

pub async fn handler(State(_ctx): State<Ctx>) -> Response {
    (StatusCode::BAD_REQUEST, "451 4.3.0 Local error").into_response()
}
