//! The per-connection state machine: framing of commands with literals and limits
//! (IMAP-43/44), timeouts (IMAP-45), dispatch to the command families, and the catch-up of the
//! selected mailbox before each tagged completion (IMAP-25/26).

use std::time::Duration;

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::{Command, CommandBody};

use super::io::{Conn, Line};
use super::pending::{Pending, next_event};
use super::replies as r;
use super::view::Selected;
use crate::context::{ConnInfo, Ctx};
use crate::store::{Account, Subscription};
use crate::tls::MaybeTls;

pub const LINE_MAX: usize = 64 * 1024;
pub const LITERAL_MAX: usize = 64 * 1024;
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How a command ended.
pub enum Reply {
    /// Tagged completion text, e.g. `OK Fetch completed.`.
    Done(String),
    /// Tagged completion, then close the connection (LOGOUT).
    DoneClose(String),
    /// Tagged completion, then a BYE, then close (too many failed logins).
    DoneCloseBye(String, &'static str),
    /// Everything was already written (IDLE, STARTTLS, COMPRESS).
    Handled,
    /// Close now; a BYE was already queued.
    Close,
}

pub fn ok(s: &str) -> Reply {
    Reply::Done(s.to_string())
}

pub struct Session {
    pub ctx: Ctx,
    pub conn: Conn,
    pub info: ConnInfo,
    pub account: Option<Account>,
    pub sub: Option<Subscription>,
    pub sel: Option<Selected>,
    /// Store events heard since the last catch-up.
    pub pending: Pending,
    pub auth_failures: u32,
    /// Connect time: the pre-login timeout counts from here, whatever is sent (issue 26).
    pub started: tokio::time::Instant,
}

type BufferPermit = tokio::sync::OwnedSemaphorePermit;

/// Room for `n` more buffered command bytes under `limits.imap_buffered_total` (fixed at the
/// first use; a reload does not resize it). None: it can never fit, or the deadline passed.
async fn buffer_permit(n: usize, total: usize, deadline: tokio::time::Instant) -> Option<BufferPermit> {
    use std::sync::{Arc, OnceLock};
    static ROOM: OnceLock<(Arc<tokio::sync::Semaphore>, usize)> = OnceLock::new();
    let total = total.min(tokio::sync::Semaphore::MAX_PERMITS);
    let (sem, total) = ROOM.get_or_init(|| (Arc::new(tokio::sync::Semaphore::new(total)), total));
    if n > *total {
        return None;
    }
    let n = u32::try_from(n).ok()?;
    tokio::time::timeout_at(deadline, sem.clone().acquire_many_owned(n)).await.ok()?.ok()
}

enum Wait {
    Input,
    Close,
}

fn literal_suffix(line: &[u8]) -> Option<(usize, bool)> {
    let l = line.strip_suffix(b"\r\n").or_else(|| line.strip_suffix(b"\n"))?;
    let l = l.strip_suffix(b"}")?;
    let open = l.iter().rposition(|b| *b == b'{')?;
    let mut inner = &l[open + 1..];
    let nonsync = inner.last() == Some(&b'+');
    if nonsync {
        inner = &inner[..inner.len() - 1];
    }
    if inner.is_empty() || inner.len() > 12 || !inner.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(inner).ok()?.parse().ok().map(|n| (n, nonsync))
}

/// The tag of a raw command line, for replies to commands that did not parse.
fn raw_tag(buf: &[u8]) -> String {
    let t: String = buf
        .iter()
        .take_while(|b| !b" \r\n".contains(b))
        .take(64)
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect();
    if t.is_empty() { "*".into() } else { t }
}

fn raw_word(buf: &[u8], n: usize) -> String {
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line).split_whitespace().nth(n).unwrap_or("").to_ascii_uppercase()
}

const KNOWN: &[&str] = &[
    "CAPABILITY",
    "NOOP",
    "LOGOUT",
    "STARTTLS",
    "AUTHENTICATE",
    "LOGIN",
    "SELECT",
    "EXAMINE",
    "CREATE",
    "DELETE",
    "RENAME",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "LIST",
    "LSUB",
    "STATUS",
    "APPEND",
    "CHECK",
    "CLOSE",
    "UNSELECT",
    "EXPUNGE",
    "SEARCH",
    "FETCH",
    "STORE",
    "COPY",
    "MOVE",
    "UID",
    "IDLE",
    "ENABLE",
    "COMPRESS",
    "GETQUOTA",
    "GETQUOTAROOT",
    "SETQUOTA",
    "ID",
    "NAMESPACE",
    "GETMETADATA",
    "SETMETADATA",
];

impl Session {
    pub fn new(ctx: Ctx, stream: MaybeTls, info: ConnInfo) -> Self {
        Self {
            ctx,
            conn: Conn::new(stream),
            info,
            account: None,
            sub: None,
            sel: None,
            pending: Pending::default(),
            auth_failures: 0,
            started: tokio::time::Instant::now(),
        }
    }

    pub fn untagged(&mut self, s: &str) {
        self.conn.push(s.as_bytes());
    }

    pub async fn run(&mut self) {
        let cfg = self.ctx.config.get();
        let greeting = format!("* OK [CAPABILITY {}] {} ready.\r\n", super::misc::capabilities(self), cfg.mail_domain);
        drop(cfg);
        self.untagged(&greeting);
        tracing::debug!(conn = self.info.id, "imap session start");
        loop {
            if self.conn.flush().await.is_err() {
                break;
            }
            self.conn.shrink();
            match self.wait_input().await {
                Wait::Close => break,
                Wait::Input => {}
            }
            match self.read_command().await {
                Ok(Some((buf, _permit))) => {
                    if !self.handle(&buf).await {
                        break;
                    }
                }
                Ok(None) => {}
                Err(()) => break,
            }
        }
        self.conn.close().await;
        tracing::debug!(conn = self.info.id, "imap session end");
    }

    /// When waiting for the client ends: 30 minutes of inactivity after login, a fixed time from
    /// connect before it (IMAP-45; NOOPs do not extend it).
    pub(super) fn deadline(&self) -> tokio::time::Instant {
        if self.account.is_some() {
            tokio::time::Instant::now() + AUTH_TIMEOUT
        } else {
            self.started + self.ctx.config.get().limits.imap_prelogin_timeout.get()
        }
    }

    fn autologout(&mut self) {
        if self.account.is_none() {
            self.ctx.metrics.limit_hit("imap_prelogin_timeout");
        }
        self.untagged(r::BYE_AUTOLOGOUT);
    }

    /// Wait for client bytes while watching shutdown, the inactivity timeout and account events.
    async fn wait_input(&mut self) -> Wait {
        if !self.account_alive() {
            return Wait::Close;
        }
        if self.conn.buffered() > 0 {
            return Wait::Input;
        }
        let deadline = self.deadline();
        loop {
            tokio::select! {
                r = self.conn.fill() => return match r { Ok(n) if n > 0 => Wait::Input, _ => Wait::Close },
                _ = self.ctx.shutdown.cancelled() => { self.untagged(r::BYE_SHUTDOWN); return Wait::Close }
                _ = tokio::time::sleep_until(deadline) => { self.autologout(); return Wait::Close }
                ev = next_event(&mut self.sub) => if !self.hear(ev) { return Wait::Close },
            }
        }
    }

    /// Frame one command with its literals, within the command's byte budget (issue 26): line
    /// plus literals at most `limits.imap_command_prelogin` before login and
    /// `limits.imap_command` after it, each line at most LINE_MAX and each literal at most
    /// LITERAL_MAX, except APPEND's message literal (after login only), which may be up to
    /// `max_message_size`. Literal bytes are also charged to the relay-wide buffer cap.
    /// `Ok(None)`: answered already, read the next one.
    async fn read_command(&mut self) -> Result<Option<(Vec<u8>, Option<BufferPermit>)>, ()> {
        let authed = self.account.is_some();
        let (budget, max_message, total) = {
            let cfg = self.ctx.config.get();
            let l = &cfg.limits;
            let budget = if authed { l.imap_command.0 } else { l.imap_command_prelogin.0 };
            (budget as usize, cfg.max_message_size.0 as usize, l.imap_buffered_total.0 as usize)
        };
        let mut buf = Vec::new();
        let mut permit: Option<BufferPermit> = None;
        let mut used = 0;
        let mut append_literal = false;
        let deadline = self.deadline();
        // A client that always has input ready would never see the timer fire.
        if tokio::time::Instant::now() >= deadline {
            self.autologout();
            return Err(());
        }
        loop {
            let line_max = LINE_MAX.min(budget - used);
            let line = match tokio::time::timeout_at(deadline, self.conn.read_line(line_max)).await {
                Err(_) => {
                    self.autologout();
                    return Err(());
                }
                Ok(Err(_)) | Ok(Ok(Line::Eof)) => return Err(()),
                Ok(Ok(Line::TooLong)) => {
                    self.ctx.metrics.limit_hit("imap_command_bytes");
                    self.untagged(r::LINE_TOO_LONG);
                    return Ok(None);
                }
                Ok(Ok(Line::Ok(l))) => l,
            };
            used += line.len();
            buf.extend_from_slice(&line);
            let Some((n, nonsync)) = literal_suffix(&line) else {
                return Ok(Some((buf, permit)));
            };
            let is_append = raw_word(&buf, 1) == "APPEND";
            let tag = raw_tag(&buf);
            if is_append && !authed && !nonsync {
                // APPEND only after login: refused before the `+`, nothing is buffered.
                self.ctx.metrics.limit_hit("imap_command_bytes");
                self.untagged(&format!("{tag} {}\r\n", r::BAD_STATE_AUTH));
                return Ok(None);
            }
            // Literals count against the budget; one literal of an authenticated APPEND that
            // does not fit there is its message, bounded by max_message_size instead.
            let regular = n <= LITERAL_MAX && n <= budget - used;
            let message = !regular && is_append && authed && !append_literal;
            append_literal |= message;
            // No literal of an APPEND may exceed max_message_size (IMAP-44).
            let fits = (regular || message) && !(is_append && n > max_message);
            if !fits {
                self.ctx.metrics.limit_hit("imap_command_bytes");
                if nonsync {
                    self.untagged(r::BYE_LITERAL);
                    return Err(());
                }
                self.untagged(&format!("{tag} {}\r\n", r::LITERAL_TOO_BIG));
                return Ok(None);
            }
            // Relay-wide cap on buffered command bytes: wait for room (backpressure).
            let Some(more) = buffer_permit(n, total, deadline).await else {
                self.ctx.metrics.limit_hit("imap_buffered_total");
                if nonsync {
                    self.untagged(r::BYE_LITERAL);
                    return Err(());
                }
                self.untagged(&format!("{tag} {}\r\n", r::LITERAL_TOO_BIG));
                return Ok(None);
            };
            match &mut permit {
                Some(p) => p.merge(more),
                None => permit = Some(more),
            }
            if !message {
                used += n;
            }
            if !nonsync {
                self.untagged(r::CONTINUE);
                self.conn.flush().await.map_err(|_| ())?;
            }
            buf.try_reserve(n).map_err(|_| ())?;
            match tokio::time::timeout_at(deadline, self.conn.read_exact_into(n, &mut buf)).await {
                Ok(Ok(())) => {}
                Err(_) => {
                    self.autologout();
                    return Err(());
                }
                Ok(Err(_)) => return Err(()),
            }
        }
    }

    /// Parse and run one command. Returns false when the connection must close.
    async fn handle(&mut self, buf: &[u8]) -> bool {
        let retry: Vec<u8>;
        let mut decoded = CommandCodec::default().decode(buf);
        // Be as lenient as Dovecot with the blanks real clients put in METADATA lists.
        if decoded.is_err()
            && let Some(fixed) = super::metadata::lenient(buf)
        {
            retry = fixed;
            decoded = CommandCodec::default().decode(&retry);
        }
        let cmd = match decoded {
            Ok((_, cmd)) => cmd,
            Err(_) => {
                let tag = raw_tag(buf);
                let word = raw_word(buf, 1);
                let text =
                    if word.is_empty() || !KNOWN.contains(&word.as_str()) { r::BAD_UNKNOWN } else { r::BAD_SYNTAX };
                self.untagged(&format!("{tag} {text}\r\n"));
                return true;
            }
        };
        let tag = cmd.tag.as_ref().to_string();
        let allow_expunge =
            !matches!(cmd.body, CommandBody::Fetch { .. } | CommandBody::Store { .. } | CommandBody::Search { .. });
        // SELECT/EXAMINE answer with their snapshot alone: a message committed after it is
        // announced later (next command, or after `+ idling`), never inside the SELECT response
        // after its UIDNEXT, where Delta Chat (async-imap folds it into the mailbox) would take
        // it as already known and not fetch it (IMAP-28a).
        let fresh_view = matches!(cmd.body, CommandBody::Select { .. } | CommandBody::Examine { .. });
        let reply = self.dispatch(&tag, cmd).await;
        match reply {
            Reply::Done(text) => {
                if !fresh_view {
                    self.catch_up(allow_expunge).await;
                }
                self.untagged(&format!("{tag} {text}\r\n"));
                true
            }
            Reply::DoneClose(text) => {
                self.untagged(&format!("{tag} {text}\r\n"));
                false
            }
            Reply::DoneCloseBye(text, bye) => {
                self.untagged(&format!("{tag} {text}\r\n"));
                self.untagged(bye);
                false
            }
            Reply::Handled => true,
            Reply::Close => false,
        }
    }

    async fn dispatch(&mut self, tag: &str, cmd: Command<'_>) -> Reply {
        use CommandBody as B;
        let authed = self.account.is_some();
        match cmd.body {
            B::Capability => super::misc::capability(self),
            B::Noop | B::Check => ok(r::OK_NOOP),
            B::Logout => {
                self.untagged(r::BYE_LOGOUT);
                Reply::DoneClose(r::OK_LOGOUT.into())
            }
            B::Id { .. } => super::misc::id(self),
            B::StartTLS => super::auth::starttls(self, tag).await,
            B::Login { username, password } if !authed => {
                super::auth::login(self, username.as_ref(), password.declassify().as_ref()).await
            }
            B::Authenticate { mechanism, initial_response } if !authed => {
                let ir = initial_response.map(|s| s.declassify().to_vec());
                super::auth::authenticate(self, mechanism.as_ref(), ir).await
            }
            B::Login { .. } | B::Authenticate { .. } => Reply::Done(r::BAD_STATE_LOGGED_IN.into()),
            _ if !authed => Reply::Done(r::BAD_STATE_AUTH.into()),
            B::Enable { .. } => {
                self.untagged("* ENABLED\r\n");
                ok(r::OK_ENABLE)
            }
            B::Namespace => {
                self.untagged("* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
                ok(r::OK_NAMESPACE)
            }
            B::Compress { .. } => super::compress::compress(self, tag).await,
            B::Idle => super::idle::idle(self, tag).await,
            B::Select { mailbox, .. } => super::select::select(self, &mailbox, false).await,
            B::Examine { mailbox, .. } => super::select::select(self, &mailbox, true).await,
            B::Create { mailbox } => super::mailboxes::create(self, &mailbox).await,
            B::Delete { mailbox } => super::mailboxes::delete(self, &mailbox).await,
            B::Rename { from, to } => super::mailboxes::rename(self, &from, &to).await,
            B::Subscribe { mailbox } => super::mailboxes::subscribe(self, &mailbox, true).await,
            B::Unsubscribe { mailbox } => super::mailboxes::subscribe(self, &mailbox, false).await,
            B::List { reference, mailbox_wildcard } => {
                super::mailboxes::list(self, &reference, &mailbox_wildcard, false).await
            }
            B::Lsub { reference, mailbox_wildcard } => {
                super::mailboxes::list(self, &reference, &mailbox_wildcard, true).await
            }
            B::Status { mailbox, item_names } => super::mailboxes::status(self, &mailbox, &item_names).await,
            B::Append { mailbox, flags, date, message } => {
                super::mailboxes::append(self, &mailbox, &flags, date, message).await
            }
            B::GetQuota { root } => super::quota::get_quota(self, root.as_ref()).await,
            B::GetQuotaRoot { mailbox } => super::quota::get_quota_root(self, &mailbox).await,
            B::SetQuota { .. } => Reply::Done(r::NO_SETQUOTA.into()),
            B::GetMetadata { options, mailbox, entries } => {
                super::metadata::get(self, &options, &mailbox, entries.as_ref()).await
            }
            B::SetMetadata { mailbox, entry_values } => {
                super::metadata::set(self, &mailbox, entry_values.as_ref()).await
            }
            _ if self.sel.is_none() => Reply::Done(r::BAD_STATE_SELECTED.into()),
            B::Close => super::select::close(self, true).await,
            B::Unselect => super::select::close(self, false).await,
            B::Expunge => super::select::expunge(self, None).await,
            B::ExpungeUid { sequence_set } => super::select::expunge(self, Some(&sequence_set)).await,
            B::Fetch { sequence_set, macro_or_item_names, uid, .. } => {
                super::fetch::fetch(self, &sequence_set, macro_or_item_names, uid).await
            }
            B::Store { sequence_set, kind, response, flags, uid, .. } => {
                super::store::store(self, &sequence_set, kind, response, &flags, uid).await
            }
            B::Search { charset, criteria, uid } => {
                super::search::search(self, charset.as_ref(), criteria.as_ref(), uid).await
            }
            B::Copy { sequence_set, mailbox, uid } => {
                super::copy_move::copy_move(self, &sequence_set, &mailbox, uid, false).await
            }
            B::Move { sequence_set, mailbox, uid } => {
                super::copy_move::copy_move(self, &sequence_set, &mailbox, uid, true).await
            }
            _ => Reply::Done(r::BAD_UNKNOWN.into()),
        }
    }
}
