//! `latency`: mailbench's latency_run. Recipient in IDLE on one IMAP connection, sender on a
//! persistent submission connection (or a new TLS connection + AUTH per message with
//! `--reconnect`); per sample: t0 once IDLE is confirmed, t_accepted at the 250 after DATA,
//! t_exists at the untagged EXISTS, then DONE + FETCH and the Message-ID must be in the bytes.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::Run;
use crate::imap::Imap;
use crate::message;
use crate::net::bounded;
use crate::report::dist;
use crate::smtp::Smtp;

pub struct Opts {
    pub samples: usize,
    pub interval: f64,
    pub reconnect: bool,
}

/// N samples from `sender` to `rcpt`; `imap` is an already logged-in connection of `rcpt`
/// (fanout), else one is opened. Returns the distributions and whether PIPELINING was used.
pub async fn run(r: &Run, o: &Opts, sender: &str, rcpt: &str, imap: Option<&mut Imap>) -> Result<(Value, bool)> {
    match imap {
        Some(i) => {
            i.done().await?;
            samples(r, o, sender, rcpt, i).await
        }
        None => {
            let mut own = Imap::open(&r.target, rcpt).await?;
            own.select().await?;
            let out = samples(r, o, sender, rcpt, &mut own).await;
            own.close().await;
            out
        }
    }
}

async fn samples(r: &Run, o: &Opts, sender: &str, rcpt: &str, imap: &mut Imap) -> Result<(Value, bool)> {
    let t = &*r.target;
    let mut smtp = if o.reconnect { None } else { Some(Smtp::open(t, sender).await?) };
    let mut pipelining = smtp.as_ref().is_some_and(|s| s.pipelining);
    let (mut acc, mut ex, mut fe) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..o.samples {
        let msgid = message::new_msgid(&r.domain);
        let msg = message::build(&r.template.armored, sender, rcpt, &msgid);
        let target = imap.exists + 1;
        imap.idle().await?;
        let t0 = Instant::now();
        let send = async {
            match smtp.as_mut() {
                Some(s) => {
                    s.send(sender, rcpt, &msg).await?;
                    Ok::<_, anyhow::Error>((Instant::now(), s.pipelining))
                }
                None => {
                    let mut s = Smtp::open(t, sender).await?;
                    s.send(sender, rcpt, &msg).await?;
                    let at = Instant::now();
                    let p = s.pipelining;
                    s.quit().await;
                    Ok((at, p))
                }
            }
        };
        let (sent, seen) = tokio::join!(send, bounded(t.timeout, imap.wait_exists(target)));
        let (t_acc, p) = sent.map_err(|e| e.context(format!("sample {}: submission", i + 1)))?;
        pipelining = p;
        let t_ex = seen.and_then(|x| x).map_err(|e| e.context(format!("sample {}: waiting for EXISTS", i + 1)))?;
        imap.done().await?;
        let data = imap.fetch(imap.exists).await?;
        let t_fe = Instant::now();
        if !contains(&data, msgid.as_bytes()) {
            bail!("sample {}: fetched message {} is not <{msgid}> (wrong or missing message)", i + 1, imap.exists);
        }
        let ms = |at: Instant| at.duration_since(t0).as_secs_f64() * 1e3;
        acc.push(ms(t_acc));
        ex.push(ms(t_ex));
        fe.push(ms(t_fe));
        if o.interval > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(o.interval)).await;
        }
    }
    if let Some(s) = smtp {
        s.quit().await;
    }
    Ok((json!({"smtp_accepted_ms": dist(&acc), "idle_exists_ms": dist(&ex), "fetched_ms": dist(&fe)}), pipelining))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
