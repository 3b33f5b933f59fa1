//! One integration-test binary (hickory-dns style): every file starts real `chatrelay` processes
//! on loopback through `harness` and talks to them over real TCP and TLS.

mod harness;

mod foundation;
mod imap_basic;
mod imap_helpers;
mod imap_features;
mod imap_async_imap;
mod imap_more;
