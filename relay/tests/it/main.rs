//! One integration-test binary (hickory-dns style): every file starts real `chatrelay` processes
//! on loopback through `harness` and talks to them over real TCP and TLS.

mod harness;

mod foundation;
mod delivery_dns;
mod delivery_sink;
mod delivery_units;
mod delivery_restart;
mod delivery_relay;
mod delivery_mta_sts;
