//! One integration-test binary (hickory-dns style): every file starts real `chatrelay` processes
//! on loopback through `harness` and talks to them over real TCP and TLS.

mod harness;

mod foundation;
mod http_alpn;
mod http_delete;
mod http_files;
mod http_pages;
mod fixtures;

mod filter_fixtures;
mod smtp_ingress;
mod smtp_lifecycle;
mod smtp_session;
mod smtp_submission;

mod robust_common;
mod robust_relay;
mod robust_logs;
mod robust_crash;
mod robust_abuse;
