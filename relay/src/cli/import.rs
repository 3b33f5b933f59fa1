//! `chatrelay import --from-chatmail /home/vmail/mail/<domain>` (issue 29): move the accounts of
//! a chatmail/relay host into data_dir.
//!
//! The reference keeps one directory per address under its `mailboxes_dir`:
//! `<addr>/password` (`{SHA512-CRYPT}$6$...`, accepted at login and re-hashed to argon2id, ACC-20),
//! a Dovecot Maildir (`cur/`, `new/`, subfolders `.<name>/`, flags after `:2,`, files possibly
//! gzip-compressed by Dovecot's `zlib_save`), `enforceE2EEincoming` (present unless cleartext was
//! allowed) and `metadata.json` (`{"devicetoken": {token: unix time}}` or a plain list). Its DKIM
//! key is `/etc/dkimkeys/opendkim.private`, selector `opendkim`.
//!
//! Idempotent and resumable: accounts that exist are left as they are (their password too), and
//! every imported message file is recorded in `data_dir/import-chatmail.journal` right after its
//! commit, so a re-run (after a crash, or to pick up mail that arrived meanwhile) imports only what
//! is missing. `--dry-run` reads everything and changes nothing. Run it while `serve` is stopped.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{Failure, load_config, runtime};
use crate::accounts::Secret;
use crate::address::Address;
use crate::config::Config;
use crate::store::{CreateOutcome, Flags, Store};

/// The reference's DKIM key location and selector (cmdeploy's opendkim deployer).
pub const REFERENCE_DKIM_KEY: &str = "/etc/dkimkeys/opendkim.private";
pub const REFERENCE_DKIM_SELECTOR: &str = "opendkim";
const JOURNAL: &str = "import-chatmail.journal";

pub struct Options {
    pub config: PathBuf,
    pub from: PathBuf,
    pub chatmail_ini: Option<PathBuf>,
    pub dkim_key: Option<PathBuf>,
    pub dry_run: bool,
}

/// What an import did (or, with `--dry-run`, would do).
#[derive(Debug, Default)]
pub struct Report {
    pub accounts_created: u64,
    pub accounts_existing: u64,
    pub messages_imported: u64,
    pub messages_already: u64,
    pub push_tokens: u64,
    pub cleartext_allowed: u64,
    pub dkim: String,
    /// One line per thing left out, with the reason (no message contents, no passwords).
    pub skipped: Vec<String>,
}

impl Report {
    pub fn render(&self, dry_run: bool) -> String {
        let w = if dry_run { "would be " } else { "" };
        let mut s = format!(
            "accounts: {} {w}created, {} already present\nmessages: {} {w}imported, {} already imported\n\
             push tokens: {} {w}imported\ncleartext allowed: {} accounts\ndkim: {}\n",
            self.accounts_created,
            self.accounts_existing,
            self.messages_imported,
            self.messages_already,
            self.push_tokens,
            self.cleartext_allowed,
            self.dkim
        );
        s.push_str(&format!("skipped: {}\n", self.skipped.len()));
        for line in &self.skipped {
            s.push_str(&format!("  {line}\n"));
        }
        s
    }
}

pub fn run(opts: Options) -> Result<(), Failure> {
    let cfg = load_config(&opts.config)?;
    if !opts.from.is_dir() {
        return Err(Failure::Usage(format!("{} is not a directory", opts.from.display())));
    }
    let domain = match &opts.chatmail_ini {
        Some(p) => ini_mail_domain(p)?,
        None => opts.from.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    if !domain.eq_ignore_ascii_case(&cfg.mail_domain) {
        return Err(Failure::Usage(format!(
            "the chatmail host's mail_domain {domain:?} is not this relay's mail_domain {:?}; \
             set mail_domain to it first (chatrelay init --from-chatmail-ini)",
            cfg.mail_domain
        )));
    }
    // The running serve holds caches of accounts; importing under it is not supported.
    if crate::control::request(&cfg.data_dir, &crate::control::Request::Ping).is_some() {
        return Err(Failure::Usage("chatrelay serve is running on this data_dir; stop it before importing".into()));
    }
    let rt = runtime()?;
    let report = rt.block_on(import(&cfg, &opts))?;
    print!("{}", report.render(opts.dry_run));
    Ok(())
}

/// `mail_domain` from the `[params]` section of a chatmail.ini.
fn ini_mail_domain(path: &Path) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
    let mut in_params = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_params = line == "[params]";
        } else if in_params
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == "mail_domain"
        {
            return Ok(v.trim().to_string());
        }
    }
    Err(Failure::Usage(format!("{}: no mail_domain in [params]", path.display())))
}

async fn import(cfg: &Config, opts: &Options) -> Result<Report, Failure> {
    let mut report = Report::default();
    let journal_path = cfg.data_dir.join(JOURNAL);
    let done: HashSet<String> =
        std::fs::read_to_string(&journal_path).map(|t| t.lines().map(str::to_string).collect()).unwrap_or_default();
    report.dkim = dkim(cfg, opts)?;
    let (store, secret, mut journal) = if opts.dry_run {
        (
            if cfg.db_path().exists() { Some(Store::open(&cfg.data_dir).map_err(Failure::runtime)?) } else { None },
            None,
            None,
        )
    } else {
        std::fs::create_dir_all(&cfg.data_dir).map_err(Failure::runtime)?;
        let store = Store::open(&cfg.data_dir).map_err(Failure::runtime)?;
        let secret = Secret::load_or_create(&cfg.data_dir).map_err(Failure::runtime)?;
        let journal = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&journal_path)
            .map_err(|e| Failure::Runtime(format!("{}: {e}", journal_path.display())))?;
        (Some(store), Some(secret), Some(journal))
    };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&opts.from)
        .map_err(|e| Failure::Runtime(format!("{}: {e}", opts.from.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().contains('@')))
        .collect();
    dirs.sort();
    let limit = read_limit(cfg);
    for dir in dirs {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Ok(addr) = Address::parse(&name) else {
            report.skipped.push(format!("{name}: not an address chatrelay accepts"));
            continue;
        };
        if !addr.is_local(&cfg.mail_domain) {
            report.skipped.push(format!("{addr}: not of mail_domain"));
            continue;
        }
        let hash = match read_small(&dir.join("password"), 4096) {
            Ok(h) if h.trim().starts_with("{SHA512-CRYPT}$6$") => h.trim().to_string(),
            Ok(_) => {
                report.skipped.push(format!("{addr}: password file is not {{SHA512-CRYPT}}$6$..."));
                continue;
            }
            Err(e) => {
                report.skipped.push(format!("{addr}: no password file ({})", e.kind()));
                continue;
            }
        };
        let cleartext = !dir.join("enforceE2EEincoming").exists();
        let tokens = push_tokens(&dir.join("metadata.json"));
        let existing = match &store {
            Some(s) => s.account_by_address(addr.as_str()).await.map_err(Failure::runtime)?,
            None => None,
        };
        let account = match (&store, &secret) {
            (Some(s), Some(secret)) => {
                match s
                    .create_account(addr.as_str(), hash, secret.tombstone(addr.as_str()))
                    .await
                    .map_err(Failure::runtime)?
                {
                    CreateOutcome::Created(a) => {
                        report.accounts_created += 1;
                        if cleartext {
                            s.set_cleartext(a.id, true).await.map_err(Failure::runtime)?;
                        }
                        Some(a)
                    }
                    CreateOutcome::AlreadyExists(a) => {
                        report.accounts_existing += 1;
                        Some(a)
                    }
                    CreateOutcome::Tombstoned => {
                        report.skipped.push(format!("{addr}: deleted on this relay before (tombstoned)"));
                        continue;
                    }
                }
            }
            _ => {
                if existing.is_some() {
                    report.accounts_existing += 1;
                } else {
                    report.accounts_created += 1;
                }
                None
            }
        };
        if cleartext && existing.is_none() {
            report.cleartext_allowed += 1;
        }
        if let (Some(s), Some(a)) = (&store, &account) {
            let have = s.push_tokens(a.id).await.map_err(Failure::runtime)?;
            for t in tokens.iter().filter(|t| !have.contains(t)) {
                s.add_push_token(a.id, t.clone()).await.map_err(Failure::runtime)?;
                report.push_tokens += 1;
            }
        } else if existing.is_none() {
            report.push_tokens += tokens.len() as u64;
        }
        for (folder, path) in folders(&dir) {
            for (file, flags) in maildir_files(&path) {
                let base = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let base = base.split_once(":2,").map_or(base.as_str(), |(b, _)| b).to_string();
                let key = format!("{addr}\t{folder}\t{base}");
                if done.contains(&key) {
                    report.messages_already += 1;
                    continue;
                }
                let data = match read_message(&file, limit) {
                    Ok(d) => d,
                    Err(e) => {
                        report.skipped.push(format!("{addr} {folder} {base}: {e}"));
                        continue;
                    }
                };
                let (Some(s), Some(a), Some(j)) = (&store, &account, journal.as_mut()) else {
                    report.messages_imported += 1;
                    continue;
                };
                let mailbox = match s.mailbox(a.id, &folder).await.map_err(Failure::runtime)? {
                    Some(m) => m,
                    None => s.create_mailbox(a.id, folder.clone()).await.map_err(Failure::runtime)?,
                };
                let date = std::fs::metadata(&file)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or_else(crate::store::now_secs, |d| d.as_secs() as i64);
                let blob = s.put_blob(Bytes::from(data)).await.map_err(Failure::runtime)?;
                // The old host's quota was its own business; nothing imported is refused for it.
                if let Err(e) = s.append(a.id, mailbox.id, blob, date, flags, Vec::new(), u64::MAX).await {
                    report.skipped.push(format!("{addr} {folder} {base}: {e}"));
                    continue;
                }
                writeln!(j, "{key}").and_then(|()| j.sync_data()).map_err(Failure::runtime)?;
                report.messages_imported += 1;
            }
        }
    }
    Ok(report)
}

/// Install the reference's DKIM key as ours, so the published `opendkim._domainkey` record stays
/// valid. Returns the report line.
fn dkim(cfg: &Config, opts: &Options) -> Result<String, Failure> {
    let src = opts.dkim_key.clone().unwrap_or_else(|| PathBuf::from(REFERENCE_DKIM_KEY));
    let Ok(pem) = std::fs::read(&src) else {
        return Ok(format!("no key at {} (kept this relay's own key)", src.display()));
    };
    crate::dkim::Signer::from_pem(&pem, &cfg.mail_domain, REFERENCE_DKIM_SELECTOR)
        .map_err(|e| Failure::Runtime(format!("{}: {e}", src.display())))?;
    let dst = cfg.dkim.key.clone().unwrap_or_else(|| crate::outbound::dkim_key::default_path(&cfg.data_dir));
    let selector_note = if cfg.dkim.selector == REFERENCE_DKIM_SELECTOR {
        String::new()
    } else {
        format!("; set [dkim] selector = \"{REFERENCE_DKIM_SELECTOR}\" so the published record keeps matching")
    };
    if std::fs::read(&dst).is_ok_and(|cur| cur == pem) {
        return Ok(format!("{} already installed{selector_note}", src.display()));
    }
    if opts.dry_run {
        return Ok(format!("{} would replace {}{selector_note}", src.display(), dst.display()));
    }
    if dst.exists() {
        let keep = dst.with_extension("pem.before-import");
        std::fs::rename(&dst, &keep).map_err(|e| Failure::Runtime(format!("{}: {e}", dst.display())))?;
    }
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(Failure::runtime)?;
    }
    write_private(&dst, &pem).map_err(|e| Failure::Runtime(format!("{}: {e}", dst.display())))?;
    Ok(format!("{} installed as {}{selector_note}", src.display(), dst.display()))
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A small text file, at most `limit` bytes read (a bigger one is not what the reference writes).
fn read_small(path: &Path, limit: u64) -> std::io::Result<String> {
    let mut s = String::new();
    std::fs::File::open(path)?.take(limit + 1).read_to_string(&mut s)?;
    if s.len() as u64 > limit {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "file too large"));
    }
    Ok(s)
}

/// `metadata.json`'s device tokens (a dict token → time, or an older plain list).
fn push_tokens(path: &Path) -> Vec<String> {
    let Ok(text) = read_small(path, 1 << 20) else { return Vec::new() };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return Vec::new() };
    let mut out: Vec<String> = match v.get("devicetoken") {
        Some(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    };
    out.retain(|t| !t.is_empty() && t.len() <= 4096);
    // The store keeps at most 20 per account (IMAP-36).
    out.truncate(20);
    out
}

/// The account's folders: INBOX is the Maildir itself, `.<name>` directories are Maildir++
/// subfolders (`.` separates levels there, `/` here).
fn folders(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = vec![("INBOX".to_string(), dir.to_path_buf())];
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut subs: Vec<(String, PathBuf)> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("cur").is_dir() || p.join("new").is_dir())
            .filter_map(|p| {
                let n = p.file_name()?.to_string_lossy().into_owned();
                let name = n.strip_prefix('.')?.replace('.', "/");
                (!name.is_empty() && !name.eq_ignore_ascii_case("inbox")).then_some((name, p))
            })
            .collect();
        subs.sort();
        out.extend(subs);
    }
    out
}

/// Message files of one Maildir folder with their flags, `new/` and `cur/` together in delivery
/// order (Dovecot names start with the delivery time), so UIDs follow the old order.
fn maildir_files(folder: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(rd) = std::fs::read_dir(folder.join(sub)) else { continue };
        for f in rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()) {
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !name.starts_with('.') {
                out.push((f, maildir_flags(&name)));
            }
        }
    }
    let key = |p: &PathBuf| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let time = name.split('.').next().and_then(|t| t.parse::<u64>().ok()).unwrap_or(u64::MAX);
        (time, name)
    };
    out.sort_by_cached_key(|(p, _)| key(p));
    out
}

/// Flags from a Maildir name's `:2,` info (S seen, R answered, F flagged, T deleted, D draft;
/// lowercase letters are Dovecot keywords, not carried over).
pub fn maildir_flags(name: &str) -> u32 {
    let Some((_, info)) = name.rsplit_once(":2,") else { return 0 };
    info.chars().fold(0, |acc, c| {
        acc | match c {
            'S' => Flags::SEEN,
            'R' => Flags::ANSWERED,
            'F' => Flags::FLAGGED,
            'T' => Flags::DELETED,
            'D' => Flags::DRAFT,
            _ => 0,
        }
    })
}

/// The largest message file (after decompression) read; anything bigger is reported, not read.
fn read_limit(cfg: &Config) -> u64 {
    cfg.max_message_size.bytes().max(32 << 20).saturating_mul(4)
}

/// A message file, gunzipped when Dovecot's zlib plugin compressed it, bounded by `limit`.
fn read_message(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(path).map_err(|e| e.kind().to_string())?;
    let mut head = [0u8; 2];
    let mut reader = std::io::BufReader::new(f);
    let mut raw = Vec::new();
    (&mut reader).take(2).read_to_end(&mut raw).map_err(|e| e.kind().to_string())?;
    head[..raw.len()].copy_from_slice(&raw);
    let chained = std::io::Cursor::new(raw).chain(reader);
    let mut out = Vec::new();
    let n = if head == [0x1f, 0x8b] {
        flate2::read::GzDecoder::new(chained).take(limit + 1).read_to_end(&mut out)
    } else {
        chained.take(limit + 1).read_to_end(&mut out)
    }
    .map_err(|e| format!("unreadable ({})", e.kind()))?;
    if n as u64 > limit {
        return Err(format!("larger than {limit} bytes"));
    }
    if out.is_empty() {
        return Err("empty file".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_from_maildir_names() {
        assert_eq!(maildir_flags("1700000000.M1P2.host,S=10,W=12:2,FS"), Flags::SEEN | Flags::FLAGGED);
        assert_eq!(maildir_flags("1700000000.M1P2.host:2,DRTab"), Flags::DRAFT | Flags::ANSWERED | Flags::DELETED);
        assert_eq!(maildir_flags("1700000000.M1P2.host"), 0);
    }
}
