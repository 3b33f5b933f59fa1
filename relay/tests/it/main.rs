//! One integration-test binary (hickory-dns style): every file starts real `chatrelay` processes
//! on loopback through `harness` and talks to them over real TCP and TLS.

mod dns_server;
mod harness;
mod seeding;

mod foundation;
mod http_alpn;
mod http_delete;
mod http_files;
mod http_pages;
mod ops_acme;
mod ops_control;
mod ops_dns;
mod ops_init;
mod push_notify;
mod push_smtp;
mod retention_expiry;
mod retention_smtp;
mod retention_trim;

mod fixtures;

mod delivery_mta_sts;
mod delivery_queue;
mod delivery_relay;
mod delivery_restart;
mod delivery_sink;
mod delivery_units;
mod filter_fixtures;
mod filter_oracle;
mod filter_strict;
mod imap_async_imap;
mod imap_basic;
mod imap_checker;
mod imap_consistency;
mod imap_delivery;
mod imap_features;
mod imap_helpers;
mod imap_more;
mod imap_sessions;
mod ops_deploy;
mod ops_install;
mod ops_reload;
mod smtp_ingress;
mod smtp_large;
mod smtp_lifecycle;
mod smtp_literal;
mod smtp_session;
mod smtp_submission;

mod federation_delivery;
mod federation_dkim;
mod federation_limits;
mod federation_privacy;
mod limits_bounded;
mod robust_abuse;
mod robust_common;
mod robust_crash;
mod robust_logs;
mod robust_relay;
mod scaleout_expiry;
mod scaleout_mailboxes;
mod scaleout_migrate;
mod scaleout_pg;
mod scaleout_proxy;
mod scaleout_push;
mod scaleout_queue;
mod scaleout_s3;
mod store_blobs;
mod store_deliver;
