//! Figures as mailbench reports them: latency distributions (nearest-rank percentiles, the
//! statistics.median of the samples), server memory over a process tree from /proc, and the
//! JSON line (`bench`, `time`, `argv`, `runs`, `median`) that bench/compare.py reads.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value, json};

fn pct(sorted: &[f64], p: f64) -> f64 {
    let k = ((p / 100.0 * sorted.len() as f64).ceil() as usize).max(1);
    sorted[k.min(sorted.len()) - 1]
}

/// n/min/median/p90/p99/max of `values` (empty: n = 0 only).
pub fn dist(values: &[f64]) -> Value {
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return json!({"n": 0});
    }
    let n = s.len();
    let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
    json!({"n": n, "min": s[0], "median": median, "p90": pct(&s, 90.0), "p99": pct(&s, 99.0), "max": s[n - 1]})
}

pub fn show_dist(name: &str, d: &Value) {
    let f = |k: &str| d.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    println!(
        "  {name:18} n={} min={:.2} median={:.2} p90={:.2} p99={:.2} max={:.2} (ms)",
        d.get("n").and_then(Value::as_u64).unwrap_or(0),
        f("min"),
        f("median"),
        f("p90"),
        f("p99"),
        f("max")
    );
}

/// Root pids of the server (--server-pid, --server-pidfile).
pub fn roots(pids: &[u32], pidfiles: &[PathBuf]) -> Result<Vec<u32>> {
    let mut out = pids.to_vec();
    for f in pidfiles {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading pid file {}", f.display()))?;
        let pid = text.split_whitespace().next().and_then(|p| p.parse().ok());
        out.push(pid.with_context(|| format!("no pid in {}", f.display()))?);
    }
    Ok(out)
}

fn ppid(pid: &str) -> Option<u32> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = st.get(st.rfind(')')? + 2..)?;
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The roots and all their descendants.
fn tree(roots: &[u32]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(pid) = name.parse::<u32>() else { continue };
            if let Some(pp) = ppid(name) {
                children.entry(pp).or_default().push(pid);
            }
        }
    }
    let (mut seen, mut todo) = (HashSet::new(), roots.to_vec());
    while let Some(p) = todo.pop() {
        if seen.insert(p) {
            todo.extend(children.get(&p).into_iter().flatten());
        }
    }
    let mut v: Vec<u32> = seen.into_iter().collect();
    v.sort_unstable();
    v
}

fn kib_field(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// {procs, rss_mib, pss_mib} summed over the server tree (mailbench's `server_memory`).
pub fn server_memory(roots: &[u32]) -> Value {
    let (mut rss, mut pss, mut n) = (0u64, 0u64, 0u64);
    for p in tree(roots) {
        let Some(r) = kib_field(Path::new(&format!("/proc/{p}/status")), "VmRSS:") else { continue };
        let Some(s) = kib_field(Path::new(&format!("/proc/{p}/smaps_rollup")), "Pss:") else { continue };
        rss += r;
        pss += s;
        n += 1;
    }
    json!({"procs": n, "rss_mib": rss as f64 / 1024.0, "pss_mib": pss as f64 / 1024.0})
}

/// This process's RSS, KiB.
pub fn own_rss_kib() -> f64 {
    kib_field(Path::new("/proc/self/status"), "VmRSS:").unwrap_or(0) as f64
}

pub fn mib(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// Appends mailbench's JSON line (one run: `median` is that run) plus loadgen's notes.
pub fn write_json(path: Option<&Path>, bench: &str, result: &Value, notes: Value) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let time =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let line = json!({
        "bench": bench, "client": "rust-loadgen", "time": time,
        "argv": std::env::args().skip(1).collect::<Vec<_>>(),
        "notes": notes, "runs": [result], "median": result,
    });
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_like_mailbench() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let d = dist(&v);
        assert_eq!(d["median"], 50.5);
        assert_eq!(d["p90"], 90.0);
        assert_eq!(d["p99"], 99.0);
        assert_eq!(dist(&[3.0])["p99"], 3.0);
        assert_eq!(dist(&[])["n"], 0);
    }
}
