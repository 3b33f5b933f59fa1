//! ACME (OPS-3): certificates for the mail domain and its `mta-sts.`/`www.` names over HTTP-01.

use std::path::{Path, PathBuf};

/// `data_dir/acme/`: account key, certificate and key.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("acme")
}

/// The ACME account URI, written once the account exists (used for the CAA record, OPS-9).
pub fn account_uri_path(data_dir: &Path) -> PathBuf {
    dir(data_dir).join("account-uri")
}
