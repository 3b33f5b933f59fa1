//! Schema migrations. The version lives in `PRAGMA user_version` (OPS-25): older schemas are
//! migrated at start inside one transaction after a copy of the file is written next to it; a
//! newer schema than this binary knows is refused.

use rusqlite::Connection;

use super::StoreError;

/// Each entry moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE accounts (
        id              INTEGER PRIMARY KEY,
        address         TEXT NOT NULL UNIQUE,
        password_hash   TEXT NOT NULL,
        created_day     INTEGER NOT NULL,      -- days since the Unix epoch, UTC
        last_login_day  INTEGER NOT NULL,
        blocked         INTEGER NOT NULL DEFAULT 0,
        cleartext       INTEGER NOT NULL DEFAULT 0,
        usage_bytes     INTEGER NOT NULL DEFAULT 0   -- RET-7: kept in the same transaction as every store/delete
    );
    CREATE TABLE mailboxes (
        id              INTEGER PRIMARY KEY,
        account_id      INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name            TEXT NOT NULL,
        uidvalidity     INTEGER NOT NULL,
        uidnext         INTEGER NOT NULL DEFAULT 1,
        highestmodseq   INTEGER NOT NULL DEFAULT 1,
        subscribed      INTEGER NOT NULL DEFAULT 1,
        UNIQUE(account_id, name)
    );
    -- Message bytes live in files under data_dir/blobs or in blob_data (migration 2); one blob
    -- may back several rows.
    CREATE TABLE messages (
        id              INTEGER PRIMARY KEY,
        mailbox_id      INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        uid             INTEGER NOT NULL,
        blob            TEXT NOT NULL,
        size            INTEGER NOT NULL,
        internal_date   INTEGER NOT NULL,      -- Unix seconds
        flags           INTEGER NOT NULL DEFAULT 0,   -- bitmask, see store::Flags
        keywords        TEXT NOT NULL DEFAULT '',     -- space-separated
        modseq          INTEGER NOT NULL,
        UNIQUE(mailbox_id, uid)
    );
    CREATE INDEX messages_blob ON messages(blob);
    CREATE INDEX messages_date ON messages(internal_date);
    -- IMAP catch-up reads rows changed after a modseq (IMAP-25) without scanning the mailbox.
    CREATE INDEX messages_modseq ON messages(mailbox_id, modseq);
    -- Expunged UIDs, so sessions can catch up by modseq; pruned by the expiry pass.
    CREATE TABLE expunged (
        mailbox_id      INTEGER NOT NULL,
        uid             INTEGER NOT NULL,
        modseq          INTEGER NOT NULL,
        expunged_at     INTEGER NOT NULL DEFAULT (unixepoch()),   -- RET-3: pruned after a day
        PRIMARY KEY (mailbox_id, uid)
    ) WITHOUT ROWID;
    CREATE INDEX expunged_modseq ON expunged(mailbox_id, modseq);
    CREATE TABLE metadata (
        account_id      INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        mailbox         TEXT NOT NULL,
        entry           TEXT NOT NULL,
        value           BLOB NOT NULL,
        PRIMARY KEY (account_id, mailbox, entry)
    );
    CREATE TABLE push_tokens (
        account_id      INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        token           TEXT NOT NULL,
        set_at          INTEGER NOT NULL,      -- Unix seconds
        PRIMARY KEY (account_id, token)
    );
    -- At most one pending job per token (PUSH-13).
    CREATE TABLE push_jobs (
        id              INTEGER PRIMARY KEY,
        account_id      INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        token           TEXT NOT NULL,
        created_at      INTEGER NOT NULL,      -- Unix ms of the message that caused it
        first_attempt   INTEGER,               -- Unix ms
        next_attempt    INTEGER NOT NULL,      -- Unix ms
        attempts        INTEGER NOT NULL DEFAULT 0,
        messages        INTEGER NOT NULL DEFAULT 1,   -- messages merged into this job (PUSH-13..15)
        last_message_at INTEGER NOT NULL DEFAULT 0,   -- Unix ms of the newest merged message
        UNIQUE(account_id, token)
    );
    CREATE INDEX push_jobs_due ON push_jobs(next_attempt);
    CREATE TABLE queue (
        id              TEXT PRIMARY KEY,
        blob            TEXT NOT NULL,
        sender          TEXT NOT NULL,
        sender_account  INTEGER,
        domain          TEXT NOT NULL,
        created_at      INTEGER NOT NULL,      -- Unix seconds
        next_attempt    INTEGER NOT NULL,      -- Unix seconds
        attempts        INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX queue_due ON queue(next_attempt);
    CREATE INDEX queue_blob ON queue(blob);
    CREATE TABLE queue_rcpts (
        queue_id        TEXT NOT NULL REFERENCES queue(id) ON DELETE CASCADE,
        rcpt            TEXT NOT NULL,
        state           TEXT NOT NULL DEFAULT 'pending',   -- pending | done | bounced
        last_reply      TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (queue_id, rcpt)
    );
    CREATE TABLE tombstones (
        hash            BLOB PRIMARY KEY
    ) WITHOUT ROWID;
    CREATE TABLE mta_sts (
        domain          TEXT PRIMARY KEY,
        policy_id       TEXT NOT NULL,
        policy          TEXT NOT NULL,
        fetched_at      INTEGER NOT NULL,
        max_age         INTEGER NOT NULL
    );
    CREATE TABLE kv (
        key             TEXT PRIMARY KEY,
        value           TEXT NOT NULL
    );
    "#,
    // 2: small message bodies inside the database (store::blobs::INLINE_MAX), written in the same
    // commit as their rows.
    r#"
    CREATE TABLE blob_data (
        id              TEXT PRIMARY KEY,
        data            BLOB NOT NULL
    );
    "#,
    // 3: registration invites (issue 28); only a hash of each token is kept.
    r#"
    CREATE TABLE invites (
        id              INTEGER PRIMARY KEY,
        token_hash      BLOB NOT NULL UNIQUE,  -- SHA-256 of the token
        hint            TEXT NOT NULL,         -- the token's first characters, for `invites list`
        max_uses        INTEGER NOT NULL,
        used            INTEGER NOT NULL DEFAULT 0,
        created_at      INTEGER NOT NULL,      -- Unix seconds
        expires_at      INTEGER,               -- Unix seconds; NULL: never
        revoked         INTEGER NOT NULL DEFAULT 0
    );
    "#,
];

pub const LATEST: i64 = MIGRATIONS.len() as i64;

pub fn migrate(conn: &mut Connection, db_path: &std::path::Path) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > LATEST {
        return Err(StoreError::SchemaTooNew { found: version, known: LATEST });
    }
    if version == LATEST {
        return Ok(());
    }
    if version > 0 {
        // OPS-25: keep a copy of the old database before touching it.
        let backup = db_path.with_extension(format!("db.v{version}.bak"));
        conn.execute("VACUUM INTO ?1", [backup.to_string_lossy()])?;
    }
    let tx = conn.transaction()?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}
