//! Heap tuning for `serve` (issue 11, P4/P5). glibc's malloc raises its mmap threshold after the
//! first large free (up to 32 MiB) and keeps up to 8 arenas per core, so argon2id's 19 MiB work
//! areas (one per concurrent first login, on blocking threads) and 1 MB message buffers stay
//! resident long after the load is gone. A fixed 4 MiB threshold (argon2id's areas are mapped and
//! unmapped, never cached; message buffers of 1 MB are reused from the heap, which
//! `memory.rs` trims after load) and two arenas give that memory back. glibc reads tunables only at
//! process start, so `serve` re-executes itself once with `GLIBC_TUNABLES` set: same pid, same
//! arguments. An operator's own `GLIBC_TUNABLES` is left alone.

use std::os::unix::process::CommandExt;

const VAR: &str = "GLIBC_TUNABLES";
/// tcache 2 per size (not 7): a worker's cached free blocks are scattered over the pages the heap
/// grew to during a burst and pinned ≈ 1 MiB after load (P5 1.21–1.22× → 1.15–1.19×; P3 ≈ 10 %
/// slower, still > 2× its target). No thread-stack cache: each exited blocking thread's stack
/// otherwise stays mapped with ≈ 16 KiB resident (−0.25 MiB after load). docs/decisions.md.
const TUNABLES: &str = "glibc.malloc.mmap_threshold=4194304:glibc.malloc.arena_max=2:glibc.malloc.tcache_count=2:glibc.pthread.stack_cache_size=0";

/// Replace this process with itself plus the tunables; returns only if that is not possible.
pub fn reexec_with_tunables() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) || std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let err = std::process::Command::new(exe).args(std::env::args_os().skip(1)).env(VAR, TUNABLES).exec();
    tracing::warn!(error = %err, "could not re-execute with malloc tunables; continuing without");
}

#[cfg(test)]
mod tests {
    /// The systemd unit sets the variable itself (so `serve` does not re-execute); it must carry
    /// the same value.
    #[test]
    fn unit_carries_the_same_tunables() {
        let unit = include_str!("../../../deploy/chatrelay.service");
        assert!(unit.contains(&format!("Environment=GLIBC_TUNABLES={}\n", super::TUNABLES)), "unit differs");
    }
}
