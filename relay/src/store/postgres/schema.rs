//! PostgreSQL schema migrations, versioned like the SQLite ones (`store/schema.rs`): the version
//! lives in `chatrelay_schema`, each entry moves it by one, all run in one transaction under an
//! advisory lock so nodes starting together migrate once; a newer schema than this binary knows
//! is refused. Column types mirror SQLite's (integers as BIGINT, blobs as BYTEA) so `migrate --to
//! postgres` copies rows one to one.

use super::super::StoreError;

/// Advisory lock keys (one 64-bit namespace for the whole relay).
pub(super) const LOCK_MIGRATE: i64 = 0x6368_6174_0001;
/// One node's expiry batch at a time.
pub(super) const LOCK_EXPIRY: i64 = 0x6368_6174_0002;
/// One node orders or renews the TLS certificate at a time (held for the whole ACME order).
pub(super) const LOCK_ACME: i64 = 0x6368_6174_0003;

const MIGRATIONS: &[&str] = &[
    // 1: the SQLite schema at its version 2 (accounts .. blob_data).
    r#"
    CREATE TABLE accounts (
        id              BIGSERIAL PRIMARY KEY,
        address         TEXT NOT NULL UNIQUE,
        password_hash   TEXT NOT NULL,
        created_day     BIGINT NOT NULL,
        last_login_day  BIGINT NOT NULL,
        blocked         BIGINT NOT NULL DEFAULT 0,
        cleartext       BIGINT NOT NULL DEFAULT 0,
        usage_bytes     BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE mailboxes (
        id              BIGSERIAL PRIMARY KEY,
        account_id      BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name            TEXT NOT NULL,
        uidvalidity     BIGINT NOT NULL,
        uidnext         BIGINT NOT NULL DEFAULT 1,
        highestmodseq   BIGINT NOT NULL DEFAULT 1,
        subscribed      BIGINT NOT NULL DEFAULT 1,
        UNIQUE(account_id, name)
    );
    CREATE TABLE messages (
        mailbox_id      BIGINT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        uid             BIGINT NOT NULL,
        blob            TEXT NOT NULL,
        size            BIGINT NOT NULL,
        internal_date   BIGINT NOT NULL,
        flags           BIGINT NOT NULL DEFAULT 0,
        keywords        TEXT NOT NULL DEFAULT '',
        modseq          BIGINT NOT NULL,
        PRIMARY KEY (mailbox_id, uid)
    );
    CREATE INDEX messages_blob ON messages(blob);
    CREATE INDEX messages_date ON messages(internal_date);
    CREATE INDEX messages_modseq ON messages(mailbox_id, modseq);
    CREATE TABLE expunged (
        mailbox_id      BIGINT NOT NULL,
        uid             BIGINT NOT NULL,
        modseq          BIGINT NOT NULL,
        expunged_at     BIGINT NOT NULL DEFAULT (extract(epoch FROM now())::bigint),
        PRIMARY KEY (mailbox_id, uid)
    );
    CREATE INDEX expunged_modseq ON expunged(mailbox_id, modseq);
    CREATE TABLE metadata (
        account_id      BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        mailbox         TEXT NOT NULL,
        entry           TEXT NOT NULL,
        value           BYTEA NOT NULL,
        PRIMARY KEY (account_id, mailbox, entry)
    );
    CREATE TABLE push_tokens (
        account_id      BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        token           TEXT NOT NULL,
        set_at          BIGINT NOT NULL,
        PRIMARY KEY (account_id, token)
    );
    CREATE TABLE push_jobs (
        id              BIGSERIAL PRIMARY KEY,
        account_id      BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        token           TEXT NOT NULL,
        created_at      BIGINT NOT NULL,
        first_attempt   BIGINT,
        next_attempt    BIGINT NOT NULL,
        attempts        BIGINT NOT NULL DEFAULT 0,
        messages        BIGINT NOT NULL DEFAULT 1,
        last_message_at BIGINT NOT NULL DEFAULT 0,
        UNIQUE(account_id, token)
    );
    CREATE INDEX push_jobs_due ON push_jobs(next_attempt);
    CREATE TABLE queue (
        id              TEXT PRIMARY KEY,
        blob            TEXT NOT NULL,
        sender          TEXT NOT NULL,
        sender_account  BIGINT,
        domain          TEXT NOT NULL,
        created_at      BIGINT NOT NULL,
        next_attempt    BIGINT NOT NULL,
        attempts        BIGINT NOT NULL DEFAULT 0,
        last_error      TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX queue_due ON queue(next_attempt);
    CREATE INDEX queue_blob ON queue(blob);
    CREATE TABLE queue_rcpts (
        queue_id        TEXT NOT NULL REFERENCES queue(id) ON DELETE CASCADE,
        rcpt            TEXT NOT NULL,
        state           TEXT NOT NULL DEFAULT 'pending',
        last_reply      TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (queue_id, rcpt)
    );
    CREATE TABLE tombstones (
        hash            BYTEA PRIMARY KEY
    );
    CREATE TABLE mta_sts (
        domain          TEXT PRIMARY KEY,
        policy_id       TEXT NOT NULL,
        policy          TEXT NOT NULL,
        fetched_at      BIGINT NOT NULL,
        max_age         BIGINT NOT NULL
    );
    CREATE TABLE kv (
        key             TEXT PRIMARY KEY,
        value           TEXT NOT NULL
    );
    CREATE TABLE blob_data (
        id              TEXT PRIMARY KEY,
        data            BYTEA NOT NULL
    );
    "#,
    // 2: bodies in the object store (issue 27): the row stays, as a reference, with no data.
    r#"
    ALTER TABLE blob_data ADD COLUMN external BIGINT NOT NULL DEFAULT 0;
    "#,
    // 3: TLS and ACME shared by the nodes (issue 27): the ACME account per directory, the issued
    // certificate per name set (`generation` grows on every renewal; nodes poll it and adopt),
    // and the pending HTTP-01 answers any node's port 80 gives.
    r#"
    CREATE TABLE acme_accounts (
        directory       TEXT PRIMARY KEY,
        account_json    TEXT NOT NULL,
        uri             TEXT NOT NULL
    );
    CREATE TABLE tls_certificates (
        names           TEXT PRIMARY KEY,
        chain_pem       TEXT NOT NULL,
        key_pem         TEXT NOT NULL,
        not_after       BIGINT NOT NULL,
        issued_at       BIGINT NOT NULL,
        generation      BIGINT NOT NULL
    );
    CREATE TABLE acme_challenges (
        token           TEXT PRIMARY KEY,
        key_authorization TEXT NOT NULL,
        created_at      BIGINT NOT NULL
    );
    "#,
    // 4: registration invites shared by the nodes (SQLite's version 3), and the PUSH-14
    // coalescing window per token, so one decision holds for every node's notifier.
    r#"
    CREATE TABLE invites (
        id              BIGSERIAL PRIMARY KEY,
        token_hash      BYTEA NOT NULL UNIQUE,
        hint            TEXT NOT NULL,
        max_uses        BIGINT NOT NULL,
        used            BIGINT NOT NULL DEFAULT 0,
        created_at      BIGINT NOT NULL,
        expires_at      BIGINT,
        revoked         BIGINT NOT NULL DEFAULT 0
    );
    ALTER TABLE push_tokens ADD COLUMN quiet_until BIGINT NOT NULL DEFAULT 0;
    "#,
];

pub const LATEST: i64 = MIGRATIONS.len() as i64;

/// Bring the schema to `LATEST` (a no-op when it is there).
pub(super) async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATE]).await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS chatrelay_schema (version BIGINT NOT NULL)").await?;
    let version: i64 = match tx.query_opt("SELECT version FROM chatrelay_schema", &[]).await? {
        Some(r) => r.get(0),
        None => {
            tx.execute("INSERT INTO chatrelay_schema(version) VALUES(0)", &[]).await?;
            0
        }
    };
    if version > LATEST {
        return Err(StoreError::SchemaTooNew { found: version, known: LATEST });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        tx.batch_execute(sql).await?;
        tx.execute("UPDATE chatrelay_schema SET version = $1", &[&((i + 1) as i64)]).await?;
    }
    tx.commit().await?;
    Ok(())
}
