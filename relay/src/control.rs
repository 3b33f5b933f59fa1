//! The control socket (operations.md OPS-15): `serve` listens on `data_dir/control.sock` (mode
//! 0600) so state-changing CLI subcommands run inside the serving process and live sessions are
//! told at once (RET-15).
//!
//! Protocol: the client sends one request line and reads the reply to EOF. The reply's first line
//! is `ok` or `error: <text>`; the rest is the command's output. Verbs live in `dispatch`; other
//! subcommands (accounts, queue) add theirs there.
//! Rules: one request per connection; a request line is at most 1 KiB; nothing sensitive is logged.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::context::Ctx;

pub const SOCKET: &str = "control.sock";
const MAX_LINE: u64 = 1024;
/// A pass on a large store can take a while; the CLI waits this long for the reply.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3600);

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// Serve the control socket until shutdown. A stale socket file from a crash is replaced (the
/// data_dir lock guarantees no other `serve` owns it).
pub async fn run(ctx: Ctx) {
    let path = socket_path(&ctx.config.get().data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = match bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "control socket unavailable; CLI commands will work on the database directly");
            return ctx.shutdown.cancelled().await;
        }
    };
    loop {
        let conn = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            c = listener.accept() => c,
        };
        match conn {
            Ok((stream, _)) => {
                let ctx2 = ctx.clone();
                ctx.tasks.spawn(async move {
                    if let Err(e) = handle(&ctx2, stream).await {
                        tracing::warn!(error = %e, "control request failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "control accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let l = UnixListener::bind(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(l)
}

async fn handle(ctx: &Ctx, stream: UnixStream) -> std::io::Result<()> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    (&mut r).take(MAX_LINE).read_line(&mut line).await?;
    let reply = match dispatch(ctx, line.trim()).await {
        Ok(out) => format!("ok\n{out}"),
        Err(e) => format!("error: {e}\n"),
    };
    let mut s = r.into_inner();
    s.write_all(reply.as_bytes()).await?;
    s.shutdown().await
}

/// The verbs. Each returns the text the CLI prints.
async fn dispatch(ctx: &Ctx, line: &str) -> Result<String, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["expire"] => crate::expiry::control_pass(ctx, false).await,
        ["expire", "--dry-run"] => crate::expiry::control_pass(ctx, true).await,
        [] => Err("empty request".into()),
        [verb, ..] => Err(format!("unknown control command {verb:?}")),
    }
}

/// CLI side: send `request` to a running `serve`. `None` when no `serve` listens (no socket, or a
/// stale one), so the caller works on the database directly.
pub async fn request(data_dir: &Path, request: &str) -> Option<Result<String, String>> {
    let mut s = UnixStream::connect(socket_path(data_dir)).await.ok()?;
    let exchange = async {
        s.write_all(format!("{request}\n").as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = match tokio::time::timeout(CLIENT_TIMEOUT, exchange).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Some(Err(format!("control socket: {e}"))),
        Err(_) => return Some(Err("control socket: no reply".into())),
    };
    Some(match out.split_once('\n') {
        Some(("ok", rest)) => Ok(rest.to_string()),
        Some((err, _)) => Err(err.strip_prefix("error: ").unwrap_or(err).to_string()),
        None => Err("control socket: malformed reply".into()),
    })
}
