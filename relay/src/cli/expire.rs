//! `chatrelay expire --config FILE [--dry-run]` (RET-13..RET-15): one expiry pass, then a summary
//! on stdout. When `serve` runs, the pass runs inside it through the control socket so live
//! sessions see the expunges; otherwise it works on `data_dir` directly.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::{Failure, load_config, runtime};
use crate::accounts::Secret;
use crate::expiry;
use crate::store::Store;

pub fn run(config: &Path, dry_run: bool) -> Result<(), Failure> {
    let cfg = load_config(config)?;
    let pg = cfg.store.backend == crate::config::StoreKind::Postgres;
    if !pg && !cfg.db_path().exists() {
        return Err(Failure::Runtime(format!("no database in {}", cfg.data_dir.display())));
    }
    // RET-15: a running serve does the pass itself, so its live sessions see the expunges.
    if let Some(reply) = crate::control::request(&cfg.data_dir, &crate::control::Request::Expire { dry_run }) {
        if !reply.ok {
            return Err(Failure::Runtime(reply.message));
        }
        eprintln!("chatrelay: the pass ran inside the running serve");
        print!("{}", reply.message);
        return Ok(());
    }
    let rt = runtime()?;
    let report = rt.block_on(async {
        // On PostgreSQL the shared database (issue 27), not the node's own SQLite file.
        let store = Store::open_config(&cfg).map_err(Failure::runtime)?;
        let p = expiry::policy(&cfg);
        if dry_run {
            expiry::dry_run(&store, p).await.map_err(Failure::runtime)
        } else {
            let secret = Secret::load_or_create(&cfg.data_dir).map_err(Failure::runtime)?;
            let stop = CancellationToken::new();
            expiry::run_pass(&store, expiry::Remover::Offline(&secret), p, None, &stop).await.map_err(Failure::runtime)
        }
    })?;
    print!("{}", expiry::summary(&report, dry_run));
    Ok(())
}
