//! The control socket (OPS-15): `serve` listens on `data_dir/control.sock` (mode 0600, removed on
//! shutdown) so state-changing CLI subcommands act inside the running relay, where live sessions
//! are told at once (an account deleted here closes its IMAP/SMTP sessions, ACC-28).
//!
//! Protocol: one JSON request per line, one JSON reply per line, any number per connection.
//! Request: `{"op":"account_delete","address":"a@b"}`; reply: `{"ok":true,"message":"deleted a@b"}`.
//! Ops: `ping`, `account_delete|account_block|account_allow_cleartext|account_deny_cleartext`
//! (`address`), `queue_retry|queue_drop` (`id`), `expire` (`dry_run`, RET-15: the pass runs in
//! `expiry::control_pass` so live sessions see the expunges).
//!
//! Client: `request(data_dir, req)` returns `None` when no `serve` listens, so the caller falls
//! back to working on the database directly.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::cli::accounts::{Change, apply_change};
use crate::context::Ctx;

/// A request line. The `op` tag names the subcommand it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Ping,
    AccountDelete {
        address: String,
    },
    AccountBlock {
        address: String,
    },
    AccountAllowCleartext {
        address: String,
    },
    AccountDenyCleartext {
        address: String,
    },
    /// Hook for `chatrelay expire` (retention): one expiry pass inside serve.
    Expire {
        dry_run: bool,
    },
    /// `chatrelay queue retry ID`: make the entry due now; the scheduler wakes at once.
    QueueRetry {
        id: String,
    },
    /// `chatrelay queue drop ID`: remove the entry without a bounce.
    QueueDrop {
        id: String,
    },
}

impl Request {
    fn op(&self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::AccountDelete { .. } => "account_delete",
            Self::AccountBlock { .. } => "account_block",
            Self::AccountAllowCleartext { .. } => "account_allow_cleartext",
            Self::AccountDenyCleartext { .. } => "account_deny_cleartext",
            Self::Expire { .. } => "expire",
            Self::QueueRetry { .. } => "queue_retry",
            Self::QueueDrop { .. } => "queue_drop",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    /// What happened (printed by the CLI on stdout) or why not (stderr).
    pub message: String,
}

impl Reply {
    fn ok(message: impl Into<String>) -> Self {
        Self { ok: true, message: message.into() }
    }
    fn err(message: impl Into<String>) -> Self {
        Self { ok: false, message: message.into() }
    }
}

/// Longest request line accepted; a request is a few short fields.
const MAX_LINE: usize = 4096;
/// An idle control connection is closed after this.
const IDLE: Duration = Duration::from_secs(60);
/// How long the CLI waits for a reply (a deletion removes files, so allow for a slow disk).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// Bind the socket and spawn its accept loop on the context's task tracker. `serve` holds the
/// data_dir lock, so a socket file left by a killed process is stale and is replaced.
pub fn spawn(ctx: &Ctx) {
    let path = socket_path(&ctx.config.get().data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "cannot open the control socket; CLI commands will work on the database directly");
            return;
        }
    };
    // data_dir is 0700 already; 0600 on the socket as well so only the service user connects.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(error = %e, "cannot set control socket permissions");
        }
    }
    ctx.tasks.spawn(accept_loop(ctx.clone(), listener, path));
}

async fn accept_loop(ctx: Ctx, listener: UnixListener, path: PathBuf) {
    loop {
        let stream = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        ctx.tasks.spawn(session(ctx.clone(), stream));
    }
    drop(listener);
    let _ = std::fs::remove_file(&path);
}

async fn session(ctx: Ctx, stream: UnixStream) {
    let (r, mut w) = stream.into_split();
    let mut r = tokio::io::BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let mut limited = (&mut r).take(MAX_LINE as u64 + 1);
        let read = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            r = tokio::time::timeout(IDLE, limited.read_until(b'\n', &mut buf)) => r,
        };
        match read {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
        let reply = if buf.len() > MAX_LINE {
            Reply::err("request line too long")
        } else {
            match serde_json::from_slice::<Request>(&buf) {
                Ok(req) => handle(&ctx, req).await,
                Err(e) => Reply::err(format!("bad request: {e}")),
            }
        };
        let mut line =
            serde_json::to_vec(&reply).unwrap_or_else(|_| b"{\"ok\":false,\"message\":\"internal\"}".to_vec());
        line.push(b'\n');
        if w.write_all(&line).await.is_err() || buf.len() > MAX_LINE {
            return;
        }
    }
}

async fn handle(ctx: &Ctx, req: Request) -> Reply {
    use crate::cli::queue::{self, Change as Queue};
    tracing::info!(op = req.op(), "control request");
    let (store, accounts) = (&ctx.store, &ctx.accounts);
    let done = match req {
        Request::Ping => return Reply::ok("pong"),
        Request::Expire { dry_run } => {
            return match crate::expiry::control_pass(ctx, dry_run).await {
                Ok(summary) => Reply::ok(summary),
                Err(e) => Reply::err(e),
            };
        }
        Request::AccountDelete { address } => apply_change(store, accounts, Change::Delete(address)).await,
        Request::AccountBlock { address } => apply_change(store, accounts, Change::Block(address)).await,
        Request::AccountAllowCleartext { address } => {
            apply_change(store, accounts, Change::AllowCleartext(address)).await
        }
        Request::AccountDenyCleartext { address } => {
            apply_change(store, accounts, Change::DenyCleartext(address)).await
        }
        Request::QueueRetry { id } => queue::apply(store, Queue::Retry(id)).await,
        Request::QueueDrop { id } => queue::apply(store, Queue::Drop(id)).await,
    };
    match done {
        Ok(msg) => Reply::ok(msg),
        Err(e) => Reply::err(e.message()),
    }
}

/// Send one request to the running `serve` of `data_dir`. `None` when nothing listens there (no
/// socket, or a stale one), so the caller works on the database directly; a failure after
/// connecting is an error reply, never a silent fallback (the request may have been applied).
pub fn request(data_dir: &Path, req: &Request) -> Option<Reply> {
    let stream = std::os::unix::net::UnixStream::connect(socket_path(data_dir)).ok()?;
    Some(exchange(stream, req).unwrap_or_else(|e| Reply::err(format!("control socket: {e}"))))
}

fn exchange(mut stream: std::os::unix::net::UnixStream, req: &Request) -> std::io::Result<Reply> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(stream.take(64 * 1024)).read_line(&mut reply)?;
    serde_json::from_str(&reply).map_err(|e| std::io::Error::other(format!("bad reply: {e}")))
}

#[cfg(test)]
mod tests {
    use super::Request;

    #[test]
    fn wire_format() {
        let r: Request = serde_json::from_str(r#"{"op":"account_delete","address":"a@b"}"#).expect("parse");
        assert_eq!(r, Request::AccountDelete { address: "a@b".into() });
        let q: Request = serde_json::from_str(r#"{"op":"queue_retry","id":"q7"}"#).expect("parse");
        assert_eq!(q, Request::QueueRetry { id: "q7".into() });
        assert!(serde_json::from_str::<Request>(r#"{"op":"rm_rf"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&Request::Expire { dry_run: true }).ok().as_deref(),
            Some(r#"{"op":"expire","dry_run":true}"#)
        );
    }
}
