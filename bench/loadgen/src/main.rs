//! loadgen: the workloads of the shared yardstick mailbench.py (latency, throughput, fanout)
//! with the same semantics, users, messages and JSON keys, in Rust, so that the figures where
//! the Python client is the bottleneck (P2, P2', P3, P3', 10,000 idle connections) measure the
//! server. Loopback only; every network wait is bounded by --timeout.
//!
//! Differences from mailbench, on purpose: SMTP PIPELINING (MAIL/RCPT/DATA in one write) when
//! the server advertises it, as real clients do; one OS thread by default (--threads).

mod fanout;
mod imap;
mod latency;
mod message;
mod net;
mod report;
mod smtp;
mod throughput;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::message::Template;
use crate::net::Target;
use crate::report::show_dist;

#[derive(Parser)]
#[command(name = "loadgen", about = "mailbench's workloads without the Python client's overhead (loopback only)")]
struct Cli {
    /// Server address; must resolve to loopback.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Submission port.
    #[arg(long, default_value_t = 10587)]
    smtp_port: u16,
    #[arg(long, value_enum, default_value = "starttls")]
    smtp_tls: SmtpTls,
    /// IMAP port (implicit TLS).
    #[arg(long, default_value_t = 10993)]
    imap_port: u16,
    #[arg(long, default_value = "relay.test")]
    domain: String,
    /// Login/address format; {n} or {n:0Wd} is the user index, {domain} the domain.
    #[arg(long, default_value = "bench{n:04d}@{domain}")]
    user_fmt: String,
    #[arg(long, default_value = "bench-password")]
    password: String,
    /// Server root PID for memory figures (repeatable; descendants are included).
    #[arg(long)]
    server_pid: Vec<u32>,
    /// File holding a server root PID (repeatable).
    #[arg(long)]
    server_pidfile: Vec<PathBuf>,
    /// Message template size: <bench dir>/templates/pgp-SIZE.asc.
    #[arg(long, default_value = "4k")]
    msg_size: String,
    /// Armored OpenPGP message file to use instead.
    #[arg(long)]
    template: Option<PathBuf>,
    /// Folder holding mailbench.py and templates/ (without one, a synthetic body is used).
    #[arg(long, env = "BENCH_DIR")]
    bench_dir: Option<PathBuf>,
    /// Network timeout in seconds (every read, write, connect and handshake).
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Append the result as a JSON line (mailbench's format) to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    sender_base: u32,
    #[arg(long, default_value_t = 2)]
    rcpt_base: u32,
    /// Runtime worker threads (1: everything on one thread).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum SmtpTls {
    Starttls,
    Ssl,
}

#[derive(Subcommand)]
enum Cmd {
    /// End-to-end delivery latency via IMAP IDLE.
    Latency {
        #[arg(short = 'n', long = "samples", default_value_t = 50)]
        samples: usize,
        /// Pause between samples, seconds.
        #[arg(long, default_value_t = 0.05)]
        interval: f64,
        /// New TCP + TLS connection + AUTH for every message.
        #[arg(long, alias = "smtp-reconnect")]
        reconnect: bool,
    },
    /// K senders × M messages: accept rate and time until all are visible.
    Throughput {
        #[arg(short = 'k', long = "senders", default_value_t = 8)]
        senders: usize,
        #[arg(short = 'm', long = "messages", default_value_t = 50)]
        messages: usize,
    },
    /// C concurrent IDLE connections: server memory per connection, then delivery latency.
    Fanout {
        #[arg(short = 'c', long = "connections", default_value_t = 1000)]
        connections: usize,
        #[arg(long, default_value_t = 101)]
        idle_base: u32,
        /// Login format of the idle users (default: --user-fmt), e.g. idle{n:05d}@{domain}.
        #[arg(long)]
        idle_fmt: Option<String>,
        #[arg(long, default_value_t = 32)]
        connect_concurrency: usize,
        /// Spread the idle connections over 127.0.0.1..127.0.0.N (servers cap connections per IP).
        #[arg(long, default_value_t = 1)]
        source_ips: u32,
        #[arg(long, default_value_t = 5.0)]
        settle: f64,
        #[arg(long, default_value_t = 0.0)]
        hibernate_wait: f64,
        #[arg(short = 'n', long = "samples", default_value_t = 20)]
        samples: usize,
        #[arg(long, default_value_t = 0.05)]
        interval: f64,
        /// File of `login password` lines (e.g. from `/new`): connection i logs in with line i.
        #[arg(long)]
        credentials: Option<std::path::PathBuf>,
    },
}

/// What every workload needs.
pub struct Run {
    pub target: Arc<Target>,
    pub template: Arc<Template>,
    pub domain: String,
    user_fmt: String,
    pub sender_base: u32,
    pub rcpt_base: u32,
    pub roots: Vec<u32>,
}

impl Run {
    /// mailbench's `user_fmt.format(n=…, domain=…)` for the forms it uses.
    pub fn user(&self, n: u32) -> String {
        self.user_in(&self.user_fmt, n)
    }

    pub fn user_in(&self, fmt: &str, n: u32) -> String {
        let mut s = fmt.replace("{domain}", &self.domain).replace("{n}", &n.to_string());
        while let Some(start) = s.find("{n:0") {
            let Some(len) = s[start..].find("d}") else { break };
            let width: usize = s[start + 4..start + len].parse().unwrap_or(0);
            s.replace_range(start..start + len + 2, &format!("{n:0width$}"));
        }
        s
    }
}

fn main() {
    let cli = Cli::parse();
    let rt = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(cli.threads).enable_all().build()
    };
    let res = rt.context("tokio runtime").and_then(|rt| rt.block_on(run(cli)));
    if let Err(e) = res {
        eprintln!("loadgen: error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    if !(cli.timeout > 0.0 && cli.timeout.is_finite()) {
        bail!("--timeout must be a positive number of seconds");
    }
    let target = Target::new(
        &cli.host,
        cli.smtp_port,
        matches!(cli.smtp_tls, SmtpTls::Ssl),
        cli.imap_port,
        Duration::from_secs_f64(cli.timeout),
        cli.password.clone(),
    )
    .await?;
    let dir = cli.bench_dir.as_ref().map(|d| d.join("templates"));
    let template = message::load(cli.template.as_deref(), dir.as_deref(), &cli.msg_size)?;
    println!("# loadgen: template {}", template.source);
    let r = Run {
        target: Arc::new(target),
        template: Arc::new(template),
        domain: cli.domain.clone(),
        user_fmt: cli.user_fmt.clone(),
        sender_base: cli.sender_base,
        rcpt_base: cli.rcpt_base,
        roots: report::roots(&cli.server_pid, &cli.server_pidfile)?,
    };
    let (bench, result, pipelining) = match cli.cmd {
        Cmd::Latency { samples, interval, reconnect } => {
            let o = latency::Opts { samples, interval, reconnect };
            let (v, p) = latency::run(&r, &o, &r.user(r.sender_base), &r.user(r.rcpt_base), None).await?;
            show_latency(&v);
            ("latency", v, p)
        }
        Cmd::Throughput { senders, messages } => {
            let (v, p) = throughput::run(&r, senders, messages).await?;
            let f = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
            println!(
                "  {} msgs of {}: accepted in {:.2}s = {:.1} msg/s ({:.1} MiB/s); all visible via IMAP after {:.2}s = {:.1} msg/s",
                senders * messages,
                cli.msg_size,
                f("accept_s"),
                f("accepted_msgs_per_s"),
                f("accepted_mib_per_s"),
                f("all_visible_s"),
                f("delivered_msgs_per_s")
            );
            ("throughput", v, p)
        }
        Cmd::Fanout {
            connections,
            idle_base,
            idle_fmt,
            connect_concurrency,
            source_ips,
            settle,
            hibernate_wait,
            samples,
            interval,
            credentials,
        } => {
            let o = fanout::Opts {
                connections,
                idle_base,
                idle_fmt: idle_fmt.unwrap_or_else(|| cli.user_fmt.clone()),
                concurrency: connect_concurrency,
                source_ips,
                settle,
                hibernate_wait,
                latency: latency::Opts { samples, interval, reconnect: false },
                credentials: credentials.as_deref().map(fanout::read_credentials).transpose()?,
            };
            let (v, p) = fanout::run(&r, &o).await?;
            show_fanout(&v);
            ("fanout", v, p)
        }
    };
    let bench = if bench == "throughput" { format!("throughput-{}", cli.msg_size) } else { bench.to_string() };
    let smtp_note = if pipelining {
        "SMTP PIPELINING used: MAIL, RCPT and DATA in one write"
    } else {
        "no SMTP PIPELINING (not advertised, or no message sent): one command per round trip"
    };
    println!("# loadgen: {smtp_note}");
    let notes = json!({"smtp_pipelining": pipelining, "template": r.template.source, "tls_resumption": false});
    report::write_json(cli.json_out.as_deref(), &bench, &result, notes)
}

fn show_latency(v: &Value) {
    for k in ["smtp_accepted_ms", "idle_exists_ms", "fetched_ms"] {
        if let Some(d) = v.get(k) {
            show_dist(k, d);
        }
    }
}

fn show_fanout(v: &Value) {
    let f = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    println!("  {} IDLE connections ({} failed), opened in {:.1}s", v["connections"], v["failed"], f("open_s"));
    for (label, key) in [("at rest", "mem_at_rest"), ("idle", "mem_idle"), ("after wait", "mem_after_wait")] {
        if let Some(m) = v.get(key) {
            println!(
                "  {label:10} procs={} rss={:.1} MiB pss={:.1} MiB",
                m["procs"],
                report::mib(m, "rss_mib"),
                report::mib(m, "pss_mib")
            );
        }
    }
    println!(
        "  per connection: server RSS {:.1} KiB, PSS {:.1} KiB; client RSS {:.1} KiB",
        f("rss_kib_per_conn"),
        f("pss_kib_per_conn"),
        f("client_rss_kib_per_conn")
    );
    if let Some(l) = v.get("latency_under_load") {
        show_latency(l);
    }
}
