//! chatrelay: a chatmail relay in one binary.
//!
//! The flow, stage by stage (see docs/architecture.md):
//! `smtp/` (and `http/` for `/mxdeliv`) hand an envelope and message to `filter::check`; on accept,
//! `store` delivers local recipients and enqueues remote ones in one transaction; the commit
//! publishes `MessageStored`, which `imap/` (IDLE) and `push/` hear; `outbound/` drains the queue;
//! `expiry/` forgets what is old. `accounts/` serves every login; `tls/` every handshake.

pub mod accounts;
pub mod address;
pub mod civil;
pub mod cli;
pub mod config;
pub mod context;
pub mod control;
pub mod dkim;
pub mod expiry;
pub mod filter;
pub mod http;
pub mod imap;
pub mod inflight;
pub mod iroh;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod outbound;
pub mod proxy;
pub mod push;
pub mod server;
pub mod smtp;
pub mod store;
pub mod tls;
pub mod turn;
