//! ACME on several nodes (issue 27, `[store] backend = "postgres"`): the account, the certificate
//! and the HTTP-01 answers are in the database (`store/postgres/tls_material.rs`).
//!
//! Every node polls the stored certificate's generation every `POLL` and installs a new one in
//! its live `CertStore` (no restart). When the certificate is missing or within 30 days of expiry
//! a node tries the cluster lock: the holder reads the generation again under the lock — another
//! node may have just renewed, then it adopts that one — and otherwise orders, stores the result
//! and releases the lock. A node that finds the lock taken skips and looks again after
//! `BUSY_RETRY`, adopting the holder's certificate meanwhile. A certificate adopted while running
//! counts as a fresh check (the cluster just renewed), so nodes never renew in turn.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{AcmeError, CHECK_EVERY, FIRST_RETRY, MAX_RETRY, RENEW_BEFORE, Settings, issue, not_after, update_gauge};
use crate::context::Ctx;

/// How often a node looks for a certificate another node stored.
const POLL: Duration = Duration::from_secs(5);
/// How soon a node that found the lock taken looks again (if nothing was adopted meanwhile).
const BUSY_RETRY: Duration = Duration::from_secs(60);

enum Turn {
    /// This node ordered: the stored generation and the expiry.
    Issued(i64, SystemTime),
    /// Another node holds the lock.
    Busy,
    /// Another node stored a certificate since this node last looked: adopt it.
    Changed,
}

pub(super) async fn run(ctx: Ctx, s: Settings) {
    let names = s.names.join("\n");
    let mut have: Option<i64> = None;
    let mut expiry: Option<SystemTime> = None;
    let mut backoff = super::FIRST_RETRY;
    let mut next_check = SystemTime::now();
    let mut started = false;
    loop {
        match adopt(&ctx, &names, have).await {
            Ok(Some((generation, t))) => {
                tracing::info!(generation, "acme certificate adopted from the cluster");
                have = Some(generation);
                expiry = Some(t);
                if started {
                    next_check = SystemTime::now() + CHECK_EVERY;
                    backoff = FIRST_RETRY;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "acme: reading the shared certificate failed"),
        }
        started = true;
        update_gauge(&ctx, expiry);
        let now = SystemTime::now();
        if now >= next_check {
            if expiry.is_some_and(|t| t > now + RENEW_BEFORE) {
                next_check = now + CHECK_EVERY;
            } else {
                let attempt = tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    r = turn(&ctx, &s, &names, have) => r,
                };
                match attempt {
                    Ok(Turn::Issued(generation, t)) => {
                        tracing::info!(names = s.names.len(), generation, "acme certificate installed");
                        have = Some(generation);
                        expiry = Some(t);
                        backoff = FIRST_RETRY;
                        next_check = SystemTime::now() + CHECK_EVERY;
                        update_gauge(&ctx, expiry);
                    }
                    Ok(Turn::Busy) => {
                        tracing::info!("acme: another node holds the cluster lock; adopting its certificate");
                        next_check = SystemTime::now() + BUSY_RETRY;
                    }
                    Ok(Turn::Changed) => continue, // adopt at once, then decide again
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_secs = backoff.as_secs(), "acme certificate request failed");
                        next_check = SystemTime::now() + backoff;
                        backoff = (backoff * 2).min(MAX_RETRY);
                    }
                }
            }
        }
        let wait = next_check.duration_since(SystemTime::now()).unwrap_or_default().min(POLL);
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Install the stored certificate when its generation is not the one served.
async fn adopt(ctx: &Ctx, names: &str, have: Option<i64>) -> Result<Option<(i64, SystemTime)>, AcmeError> {
    let Some(pg) = ctx.store.pg() else { return Ok(None) };
    let Some(c) = pg.shared_certificate(names, have).await? else { return Ok(None) };
    let ck = crate::tls::pem_pair(c.chain_pem.as_bytes(), c.key_pem.as_bytes(), "shared chain", "shared key")
        .map_err(|e| AcmeError::Cert(e.to_string()))?;
    let t = ck.cert.first().and_then(|d| not_after(d.as_ref())).ok_or_else(|| AcmeError::Cert("no validity".into()))?;
    ctx.tls.certs().set(ck);
    Ok(Some((c.generation, t)))
}

/// Order under the cluster lock, unless another node holds it or has just stored a certificate.
async fn turn(ctx: &Ctx, s: &Settings, names: &str, have: Option<i64>) -> Result<Turn, AcmeError> {
    let Some(pg) = ctx.store.pg() else { return Ok(Turn::Busy) };
    let Some(lock) = pg.acme_turn().await? else { return Ok(Turn::Busy) };
    if lock.generation(names).await? != have {
        return Ok(Turn::Changed);
    }
    tracing::info!("acme ordering under the cluster lock");
    let issued = tokio::time::timeout(super::ATTEMPT_LIMIT, issue(ctx, s)).await.unwrap_or(Err(AcmeError::Timeout))?;
    let secs = issued.expiry.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let generation =
        lock.store(names, &issued.chain_pem, &issued.key_pem, i64::try_from(secs).unwrap_or(i64::MAX)).await?;
    ctx.tls.certs().set(issued.ck);
    Ok(Turn::Issued(generation, issued.expiry))
}
