//! `chatrelay migrate --to postgres --config FILE` (issue 27): copy this node's SQLite store and
//! message files into the PostgreSQL named by `[store] url`, verify counts and checksums, and
//! print them. Run again to resume or to pick up what a still-running node accepted meanwhile;
//! then set `backend = "postgres"` and restart.

use std::path::Path;

use super::{Failure, load_config, runtime};

pub fn run(config: &Path, to: &str) -> Result<(), Failure> {
    if to != "postgres" {
        return Err(Failure::Usage(format!("migrate --to {to:?}: only \"postgres\" is supported")));
    }
    let cfg = load_config(config)?;
    if !cfg.store.url.starts_with("postgres") {
        return Err(Failure::Usage("migrate --to postgres needs [store] url = \"postgres://...\"".into()));
    }
    if !cfg.db_path().exists() {
        return Err(Failure::Runtime(format!("no database in {}", cfg.data_dir.display())));
    }
    let report = runtime()?
        .block_on(crate::store::postgres::migrate::migrate(&cfg.data_dir, &cfg.store.url))
        .map_err(Failure::runtime)?;
    println!("{:<12} {:>10} {:>10} {:>10}", "table", "sqlite", "postgres", "copied");
    for (table, (s, p, n)) in &report.tables {
        println!("{table:<12} {s:>10} {p:>10} {n:>10}");
    }
    println!("message files copied: {} ({} bytes)", report.files.0, report.files.1);
    for (table, ok) in &report.checksums {
        println!("checksum {table}: {}", if *ok { "equal" } else { "DIFFERENT" });
    }
    println!("body bytes: sqlite {} postgres {}", report.body_bytes.0, report.body_bytes.1);
    println!("acme accounts copied: {}, tls certificates copied: {}", report.acme.0, report.acme.1);
    if report.ok() {
        println!("verified");
        Ok(())
    } else {
        Err(Failure::Runtime("verification failed (see above); run again to resume".into()))
    }
}
