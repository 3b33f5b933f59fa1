//! The `/account/delete` body parser (form and JSON), through the same axum extractors the
//! handler uses. `/new` reads no body (HTTP-13), so this is the only form parser the HTTP side has.
#![no_main]

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    let ctype = match sel % 4 {
        0 => "application/x-www-form-urlencoded",
        1 => "application/json",
        2 => "application/x-www-form-urlencoded; charset=utf-8",
        _ => "text/plain",
    };
    let Ok(req) = Request::post("/account/delete").header("content-type", ctype).body(Body::from(body.to_vec())) else { return };
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    if let Ok((email, password)) = rt.block_on(relay::http::parse_delete_fields(req)) {
        let _ = (email.len(), password.len());
    }
});
