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
const TUNABLES: &str = "glibc.malloc.mmap_threshold=4194304:glibc.malloc.arena_max=2";

/// Replace this process with itself plus the tunables; returns only if that is not possible.
pub fn reexec_with_tunables() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) || std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let err = std::process::Command::new(exe).args(std::env::args_os().skip(1)).env(VAR, TUNABLES).exec();
    tracing::warn!(error = %err, "could not re-execute with malloc tunables; continuing without");
}
