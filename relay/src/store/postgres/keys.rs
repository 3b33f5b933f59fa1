//! Keys every node must share: the keyed-hash secret and the DKIM key.

use super::*;

/// The keyed-hash secret (`data_dir/secret.key`: tombstones, the login cache) must be the same
/// on every node, or an address deleted through one node could be registered again through
/// another. The first node (or `migrate`) stores it in `kv`; a node without the file adopts the
/// cluster's; a node whose file differs refuses to start rather than split the tombstones.
pub(super) async fn share_secret(c: &tokio_postgres::Client, data_dir: &std::path::Path) -> Result<()> {
    let path = data_dir.join(crate::accounts::Secret::FILE);
    let local = std::fs::read(&path).ok().filter(|b| b.len() == 32);
    let mine = local.clone().unwrap_or_else(|| rand::random::<[u8; 32]>().to_vec());
    let hex_of = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    c.execute("INSERT INTO kv(key, value) VALUES('secret_key', $1) ON CONFLICT(key) DO NOTHING", &[&hex_of(&mine)])
        .await?;
    let cluster: String = c.query_one("SELECT value FROM kv WHERE key = 'secret_key'", &[]).await?.get(0);
    match local {
        Some(l) if hex_of(&l) == cluster => Ok(()),
        Some(_) => Err(StoreError::Invalid(
            "data_dir/secret.key differs from the cluster's (kv secret_key); remove the file to adopt the cluster's",
        )),
        None => {
            let bytes: Vec<u8> = (0..cluster.len() / 2)
                .filter_map(|i| cluster.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .collect();
            if bytes.len() != 32 {
                return Err(StoreError::Invalid("the cluster's secret_key is malformed"));
            }
            write_private(&path, &bytes)
        }
    }
}

/// Write a key file readable by the service user only: a temporary file synced, then renamed over
/// `path`, so a crash leaves the old file or the new one, never a torn key.
pub(super) fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().ok_or(StoreError::Invalid("key file without a directory"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("adopt.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::File::options();
    opts.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    std::io::Write::write_all(&mut f, bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// The DKIM key (`data_dir/dkim.pem`, when `dkim.key` names no file of the operator's) must be the
/// same on every node, or peers would fail the signatures of the nodes whose key is not in DNS.
/// Same rule as the secret: a node without the file adopts the cluster's; the first node offers
/// its own (generated here if it has none); a node whose own file differs refuses to start. A key
/// this node generated a moment ago and lost the race for is replaced by the winner's.
pub(super) async fn share_dkim(c: &tokio_postgres::Client, path: &std::path::Path) -> Result<()> {
    const SELECT: &str = "SELECT value FROM kv WHERE key = 'dkim_pem'";
    let local = std::fs::read_to_string(path).ok();
    let generated = local.is_none();
    let mine = match local {
        Some(pem) => pem,
        None => {
            if let Some(row) = c.query_opt(SELECT, &[]).await? {
                let cluster: String = row.get(0);
                return write_private(path, cluster.as_bytes());
            }
            crate::outbound::dkim_key::ensure(path)
                .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
            std::fs::read_to_string(path)?
        }
    };
    c.execute("INSERT INTO kv(key, value) VALUES('dkim_pem', $1) ON CONFLICT(key) DO NOTHING", &[&mine]).await?;
    let cluster: String = c.query_one(SELECT, &[]).await?.get(0);
    if cluster == mine {
        Ok(())
    } else if generated {
        write_private(path, cluster.as_bytes())
    } else {
        Err(StoreError::Invalid(
            "data_dir/dkim.pem differs from the cluster's (kv dkim_pem); remove the file to adopt the cluster's",
        ))
    }
}
