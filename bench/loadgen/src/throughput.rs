//! `throughput`: mailbench's throughput_run. K recipients watched in IDLE, K senders each
//! submitting M messages back to back on one authenticated connection (all connections are
//! open before the clock starts). accepted = last sender's final 250; all visible = last
//! recipient's EXISTS reaching its target.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::Run;
use crate::imap::Imap;
use crate::message;
use crate::net::bounded;
use crate::smtp::Smtp;

/// Awaits every task in order; the first failure wins.
async fn all<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<Result<T>>>, what: &str) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(tasks.len());
    for (i, t) in tasks.into_iter().enumerate() {
        out.push(t.await.with_context(|| format!("{what} {i} panicked"))?.with_context(|| format!("{what} {i}"))?);
    }
    Ok(out)
}

pub async fn run(r: &Run, k: usize, m: usize) -> Result<(Value, bool)> {
    let senders: Vec<String> = (0..k).map(|i| r.user(r.sender_base + i as u32)).collect();
    let rcpts: Vec<String> = (0..k).map(|i| r.user(r.rcpt_base + i as u32)).collect();
    let mut opening = Vec::new();
    for rc in &rcpts {
        let (t, rc) = (r.target.clone(), rc.clone());
        opening.push(tokio::spawn(async move {
            let mut c = Imap::open(&t, &rc).await?;
            let target = c.select().await? + m as u32;
            c.idle().await?;
            Ok((c, target))
        }));
    }
    let imaps = all(opening, "recipient IMAP connection").await?;
    let mut opening = Vec::new();
    for s in &senders {
        let (t, s) = (r.target.clone(), s.clone());
        opening.push(tokio::spawn(async move { Smtp::open(&t, &s).await }));
    }
    let smtps = all(opening, "sender SMTP connection").await?;
    let pipelining = smtps.iter().all(|s| s.pipelining);
    let armored = Arc::new(r.template.armored.clone());

    let t0 = Instant::now();
    let mut sending = Vec::new();
    for (i, mut s) in smtps.into_iter().enumerate() {
        let (from, to, armored, domain) = (senders[i].clone(), rcpts[i].clone(), armored.clone(), r.domain.clone());
        sending.push(tokio::spawn(async move {
            for j in 0..m {
                let msg = message::build(&armored, &from, &to, &message::new_msgid(&domain));
                s.send(&from, &to, &msg).await.with_context(|| format!("message {} of {from}", j + 1))?;
            }
            let done = Instant::now();
            s.quit().await;
            Ok(done)
        }));
    }
    let limit = r.target.timeout + Duration::from_secs_f64(k as f64 * m as f64 * 0.5);
    let mut watching = Vec::new();
    for (mut c, target) in imaps {
        watching.push(tokio::spawn(async move {
            let at = bounded(limit, c.wait_exists(target)).await?;
            let at = at.with_context(|| format!("waiting for EXISTS {target}"))?;
            Ok((at, c))
        }));
    }
    let done = all(sending, "sender").await?;
    let seen = all(watching, "recipient").await?;
    let t_acc = done.iter().map(|d| d.duration_since(t0)).max().unwrap_or_default().as_secs_f64();
    let t_all = seen.iter().map(|(at, _)| at.duration_since(t0)).max().unwrap_or_default().as_secs_f64();
    for (_, c) in seen {
        c.close().await;
    }
    if t_acc <= 0.0 || t_all <= 0.0 {
        bail!("no time elapsed: nothing was sent");
    }
    let total = (k * m) as f64;
    let size = message::build(&r.template.armored, "a", "b", "c").len() as f64;
    Ok((
        json!({"messages": k * m, "accept_s": t_acc, "accepted_msgs_per_s": total / t_acc,
               "all_visible_s": t_all, "delivered_msgs_per_s": total / t_all,
               "accepted_mib_per_s": total * size / t_acc / (1u64 << 20) as f64}),
        pipelining,
    ))
}
