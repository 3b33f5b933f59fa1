//! `chatrelay --version` names the git revision the binary was built from (issue 29), so an
//! operator's report says exactly which code runs. `RELAY_GIT_REV` set at build time wins (a
//! build from a source tarball without .git); otherwise `git rev-parse`, else "unknown". Not a
//! `CHATRELAY_` name: cargo also sets it when it runs the tests, and every `CHATRELAY_*` variable
//! is a config key to the relay.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=RELAY_GIT_REV");
    let rev = std::env::var("RELAY_GIT_REV")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    // Rebuild when HEAD moves: HEAD itself (branch switch) and the branch ref it points to.
    for path in ["HEAD", "packed-refs"] {
        // A missing path would make cargo rerun this on every build.
        if let Some(p) = git(&["rev-parse", "--git-path", path]).filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"])
        .and_then(|r| git(&["rev-parse", "--git-path", &r]))
        .filter(|p| std::path::Path::new(p).exists())
    {
        println!("cargo:rerun-if-changed={r}");
    }
    println!("cargo:rustc-env=RELAY_GIT_REV={rev}");
}
