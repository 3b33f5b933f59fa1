//! Registration gates (ACC-15, ACC-16): refuse NEW accounts while registration is closed (or by
//! invite only, issue 28: then only `/new` with an invite creates accounts), the
//! 1-minute load is high, available memory is low or the data disk is nearly full. Samples are
//! cached for a second (ACC-17) so a login storm does not read /proc for every attempt.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{Config, Registration};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateClosed {
    Closed,
    /// `registration = "invite"`: no account by first login.
    Invite,
    Load,
    Memory,
    Disk,
}

impl GateClosed {
    pub fn label(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Invite => "invite",
            Self::Load => "load",
            Self::Memory => "memory",
            Self::Disk => "disk",
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    load_1m: f64,
    mem_available: Option<u64>,
    disk_free: Option<u64>,
}

pub struct Gates {
    data_dir: PathBuf,
    cached: Mutex<Option<(Instant, Sample)>>,
}

impl Gates {
    pub fn new(data_dir: PathBuf) -> Self {
        Self { data_dir, cached: Mutex::new(None) }
    }

    /// `Ok` when a new account may be created now.
    pub fn check(&self, cfg: &Config) -> Result<(), GateClosed> {
        match cfg.registration {
            Registration::Open => {}
            Registration::Closed => return Err(GateClosed::Closed),
            Registration::Invite => return Err(GateClosed::Invite),
        }
        self.check_resources(cfg)
    }

    /// The resource gates alone (ACC-16), which invites do not bypass.
    pub fn check_resources(&self, cfg: &Config) -> Result<(), GateClosed> {
        let s = self.sample();
        if s.load_1m > cfg.max_load_1m {
            return Err(GateClosed::Load);
        }
        if s.mem_available.is_some_and(|m| m < cfg.min_available_memory.bytes()) {
            return Err(GateClosed::Memory);
        }
        if s.disk_free.is_some_and(|d| d < cfg.min_free_disk_space.bytes()) {
            return Err(GateClosed::Disk);
        }
        Ok(())
    }

    fn sample(&self) -> Sample {
        let mut guard = match self.cached.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some((at, s)) = *guard
            && at.elapsed() < Duration::from_secs(1)
        {
            return s;
        }
        let s = Sample { load_1m: load_1m(), mem_available: mem_available(), disk_free: disk_free(&self.data_dir) };
        *guard = Some((Instant::now(), s));
        s
    }
}

fn load_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn mem_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Free bytes on the file system holding `dir`, available to unprivileged users.
pub fn disk_free(dir: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}
