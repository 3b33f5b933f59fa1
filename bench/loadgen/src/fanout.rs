//! `fanout`: mailbench's fanout_run. Opens C IDLE connections over TLS (LOGIN, SELECT, IDLE;
//! at most --connect-concurrency in flight), measures the server's RSS/PSS delta per connection
//! over its process tree, then the delivery latency to the first of them while all stay open.
//! Idle connections hold only the TLS session (their read buffers are freed); the client's own
//! RSS per connection is reported too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Result, bail};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::imap::Imap;
use crate::report::{mib, own_rss_kib, server_memory};
use crate::{Run, latency};

pub struct Opts {
    pub connections: usize,
    pub idle_base: u32,
    pub idle_fmt: String,
    pub concurrency: usize,
    pub source_ips: u32,
    pub settle: f64,
    pub hibernate_wait: f64,
    pub latency: latency::Opts,
    /// Login and password of connection i (line i of `--credentials`), instead of
    /// `idle_fmt` and the common password: relay-issued credentials, one per account.
    pub credentials: Option<Vec<(String, String)>>,
}

/// Lines `login password` (whitespace-separated), as `/new` handed them out.
pub fn read_credentials(path: &std::path::Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut it = line.split_whitespace();
        match (it.next(), it.next()) {
            (Some(l), Some(p)) => out.push((l.to_string(), p.to_string())),
            _ => bail!("{}:{}: expected `login password`", path.display(), n + 1),
        }
    }
    Ok(out)
}

/// Soft RLIMIT_NOFILE up to the hard limit; returns the soft limit now in force.
pub fn raise_nofile() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Client addresses 127.0.0.1, .2, … (`n` of them; connection i uses number i mod n), so that
/// a server's per-IP connection cap (chatrelay: a fifth of max_imap_connections) does not stop
/// the run: 10,000 real clients do not share one address. One address: the OS picks (as
/// mailbench). IPv4 loopback targets only.
fn source_ips(server: IpAddr, n: u32) -> Result<Vec<IpAddr>> {
    if n <= 1 {
        return Ok(Vec::new());
    }
    if !server.is_ipv4() || n > 250 {
        bail!("--source-ips {n} needs an IPv4 loopback server and at most 250 addresses");
    }
    Ok((1..=n).map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, k as u8))).collect())
}

pub async fn run(r: &Run, o: &Opts) -> Result<(Value, bool)> {
    let limit = raise_nofile();
    if (o.connections as u64) + 64 > limit {
        eprintln!("# fanout: RLIMIT_NOFILE is {limit}; {} connections will not all fit", o.connections);
    }
    if let Some(c) = &o.credentials
        && c.len() < o.connections
    {
        bail!("--credentials has {} lines for {} connections", c.len(), o.connections);
    }
    let base = server_memory(&r.roots);
    let client0 = own_rss_kib();
    let sem = Arc::new(Semaphore::new(o.concurrency.max(1)));
    let sources = source_ips(r.target.imap.ip(), o.source_ips)?;
    let mut tasks = Vec::with_capacity(o.connections);
    let t0 = Instant::now();
    for i in 0..o.connections {
        let (login, password) = match &o.credentials {
            Some(c) => c[i].clone(),
            None => (r.user_in(&o.idle_fmt, o.idle_base + i as u32), r.target.password.clone()),
        };
        let (t, sem) = (r.target.clone(), sem.clone());
        let src = sources.get(i % sources.len().max(1)).copied();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let mut c = Imap::open_as(&t, &login, &password, src).await?;
            c.select().await?;
            c.idle().await?;
            c.shrink();
            Ok::<_, anyhow::Error>((login, c))
        }));
    }
    let mut conns = Vec::with_capacity(o.connections);
    let mut failed = 0usize;
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Ok(c)) => conns.push(c),
            Ok(Err(e)) => {
                failed += 1;
                first_err.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                failed += 1;
                first_err.get_or_insert_with(|| format!("task: {e}"));
            }
        }
    }
    let t_open = t0.elapsed().as_secs_f64();
    if let Some(e) = &first_err {
        eprintln!("# fanout: {failed} connections failed, first: {e}");
    }
    tokio::time::sleep(Duration::from_secs_f64(o.settle)).await;
    let active = server_memory(&r.roots);
    let n = conns.len().max(1) as f64;
    let per = |now: &Value, key: &str| (mib(now, key) - mib(&base, key)) * 1024.0 / n;
    let mut out = json!({
        "connections": conns.len(), "failed": failed, "open_s": t_open, "source_ips": o.source_ips.max(1),
        "mem_at_rest": base, "mem_idle": active,
        "rss_kib_per_conn": per(&active, "rss_mib"), "pss_kib_per_conn": per(&active, "pss_mib"),
        "client_rss_kib_per_conn": (own_rss_kib() - client0) / n,
    });
    if let Some(e) = first_err {
        out["first_error"] = json!(e);
    }
    if o.hibernate_wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(o.hibernate_wait)).await;
        let hib = server_memory(&r.roots);
        out["rss_kib_per_conn_after_wait"] = json!(per(&hib, "rss_mib"));
        out["pss_kib_per_conn_after_wait"] = json!(per(&hib, "pss_mib"));
        out["mem_after_wait"] = hib;
    }
    let mut pipelining = false;
    if o.latency.samples > 0
        && let Some((login, c)) = conns.first_mut()
    {
        let sender = r.user(r.sender_base);
        let (lat, p) = latency::run(r, &o.latency, &sender, login, Some(c)).await?;
        out["latency_under_load"] = lat;
        pipelining = p;
    }
    drop(conns); // closed without LOGOUT, as mailbench does
    Ok((out, pipelining))
}
