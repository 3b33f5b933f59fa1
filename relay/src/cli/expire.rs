//! `chatrelay expire --config FILE [--dry-run]` (RET-13, RET-14): one expiry pass on `data_dir`
//! directly, then a summary on stdout. Live IMAP sessions of a running `serve` are not told of
//! these deletions until they next look (the control socket of RET-15 is not built yet).

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::{Failure, load_config, runtime};
use crate::accounts::Secret;
use crate::expiry;
use crate::store::{ExpiryReport, Store};

pub fn run(config: &Path, dry_run: bool) -> Result<(), Failure> {
    let cfg = load_config(config)?;
    if !cfg.db_path().exists() {
        return Err(Failure::Runtime(format!("no database in {}", cfg.data_dir.display())));
    }
    let report = runtime()?.block_on(async {
        let store = Store::open(&cfg.data_dir).map_err(Failure::runtime)?;
        let p = expiry::policy(&cfg);
        if dry_run {
            expiry::dry_run(&store, p).await.map_err(Failure::runtime)
        } else {
            let secret = Secret::load_or_create(&cfg.data_dir).map_err(Failure::runtime)?;
            let stop = CancellationToken::new();
            expiry::run_pass(&store, expiry::Remover::Offline(&secret), p, None, &stop).await.map_err(Failure::runtime)
        }
    })?;
    print!("{}", summary(&report, dry_run));
    Ok(())
}

/// The summary lines; `--dry-run` prints the same numbers under a header saying nothing changed.
pub fn summary(r: &ExpiryReport, dry_run: bool) -> String {
    let head = if dry_run { "dry run: nothing was changed; a pass would remove:\n" } else { "" };
    format!(
        "{head}accounts deleted: {}\nmessages deleted (age): {}\nmessages deleted (large): {}\nmessages deleted (quota): {}\nbytes freed: {}\npush tokens expired: {}\norphan files removed: {}\n",
        r.accounts_deleted, r.removed_age, r.removed_large, r.removed_quota, r.bytes_freed, r.tokens_expired, r.orphans_removed
    )
}
