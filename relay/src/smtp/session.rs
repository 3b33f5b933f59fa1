//! The session state machine: one loop reading commands, each verb handled in its own file, every
//! way a session ends an `Outcome` value. The loop also listens for shutdown (OPS-16) and, once
//! authenticated, for the account's deletion or blocking (ACC-28).

use std::borrow::Cow;
use std::time::Duration;

use smtp_proto::Request;

use super::Kind;
use super::io::{COMMAND_LINE_MAX, Conn, LineError};
use super::literal;
use super::reply::{self, Reply};
use crate::context::{ConnInfo, Ctx};
use crate::store::{Account, MailboxEvent, Subscription};

/// Waiting for a command (SMTP-23).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// Rejected or unknown commands before the session is closed (SMTP-24).
pub const MAX_ERRORS: u32 = 20;

/// One recipient accepted by RCPT.
#[derive(Debug, Clone)]
pub struct Rcpt {
    pub address: String,
    /// The local account, when the address is local.
    pub local: Option<super::ingress::Recipient>,
}

/// The mail transaction between MAIL and the end of DATA.
#[derive(Debug, Default)]
pub struct Transaction {
    /// Lowercased reverse path; empty for `<>`.
    pub mail_from: String,
    pub rcpts: Vec<Rcpt>,
    /// Submission refusals that Postfix delays to RCPT (SMTP-28, SMTP-29).
    pub deferred: Option<Reply>,
}

#[derive(Debug)]
pub enum State {
    /// Connected (or TLS just started); no EHLO/HELO yet.
    Fresh,
    Greeted,
    Mail(Transaction),
}

/// How the session continues after a command.
#[derive(Debug)]
pub enum Outcome {
    Continue,
    /// Send nothing more and close: QUIT, auth failures, I/O errors (reply already sent).
    Close,
}

pub struct Session {
    pub ctx: Ctx,
    pub kind: Kind,
    pub conn_info: ConnInfo,
    pub conn: Conn,
    pub state: State,
    pub auth: Option<Account>,
    pub auth_failures: u8,
    pub errors: u32,
    pub gone: Option<Subscription>,
    /// Setup budget (issue 26): commands left and the deadline before AUTH or MAIL succeeds;
    /// `None` once one has.
    setup: Option<(u32, tokio::time::Instant)>,
}

enum Event {
    Line(Result<Vec<u8>, LineError>),
    Timeout,
    Shutdown,
    AccountGone,
}

impl Session {
    pub fn new(ctx: Ctx, kind: Kind, conn_info: ConnInfo, conn: Conn) -> Self {
        let setup = {
            let l = &ctx.config.get().limits;
            Some((l.smtp_setup_commands, tokio::time::Instant::now() + l.smtp_setup_timeout.get()))
        };
        Self {
            ctx,
            kind,
            conn_info,
            conn,
            state: State::Fresh,
            auth: None,
            auth_failures: 0,
            errors: 0,
            gone: None,
            setup,
        }
    }

    pub fn listener(&self) -> &'static str {
        match self.kind {
            Kind::Mx => "smtp",
            Kind::Submission => "submission",
            Kind::Submissions => "submissions",
        }
    }

    /// The `listener` label of `chatrelay_smtp_messages_total` (operations.md section 7).
    pub fn metric_listener(&self) -> &'static str {
        match self.kind {
            Kind::Mx => "smtp",
            Kind::Submission | Kind::Submissions => "submission",
        }
    }

    pub fn domain(&self) -> String {
        self.ctx.config.get().mail_domain.clone()
    }

    /// Send a reply and count it against the error limit. `Close` when the limit is reached.
    pub async fn reply(&mut self, r: Reply) -> Outcome {
        if self.conn.send(&r).await.is_err() {
            return Outcome::Close;
        }
        if r.is_error() {
            self.errors += 1;
            if self.errors >= MAX_ERRORS {
                let _ = self.conn.send(&reply::too_many_errors()).await;
                return Outcome::Close;
            }
        }
        Outcome::Continue
    }

    async fn next_event(&mut self) -> Event {
        let gone = async {
            match self.gone.as_mut() {
                Some(sub) => loop {
                    match sub.rx.recv().await {
                        Ok(MailboxEvent::AccountGone) => return,
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            continue;
                        }
                        Err(_) => std::future::pending::<()>().await,
                    }
                },
                None => std::future::pending().await,
            }
        };
        let mut deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
        if let Some((_, setup_end)) = self.setup {
            deadline = deadline.min(setup_end);
        }
        tokio::select! {
            biased;
            _ = self.ctx.shutdown.cancelled() => Event::Shutdown,
            _ = gone => Event::AccountGone,
            r = tokio::time::timeout_at(deadline, self.conn.read_line(COMMAND_LINE_MAX)) => match r {
                Ok(line) => Event::Line(line),
                Err(_) => Event::Timeout,
            },
        }
    }

    pub async fn run(mut self) {
        let greeting = reply::greeting(&self.domain());
        if self.conn.send(&greeting).await.is_err() {
            return;
        }
        loop {
            let line = match self.next_event().await {
                Event::Line(Ok(l)) => l,
                Event::Line(Err(LineError::TooLong)) => match self.reply(reply::line_too_long()).await {
                    Outcome::Continue => continue,
                    Outcome::Close => break,
                },
                Event::Line(Err(_)) => break,
                Event::Timeout => {
                    if self.setup.is_some() {
                        self.ctx.metrics.limit_hit("smtp_setup");
                    }
                    let _ = self.conn.send(&reply::timeout(&self.domain())).await;
                    break;
                }
                Event::Shutdown => {
                    let _ = self.conn.send(&reply::shutting_down()).await;
                    break;
                }
                Event::AccountGone => {
                    let _ = self.conn.send(&reply::account_deleted()).await;
                    break;
                }
            };
            if let Outcome::Close = self.command(&line).await {
                break;
            }
            if let Outcome::Close = self.count_setup().await {
                break;
            }
        }
        self.conn.close().await;
    }

    /// Commands before AUTH or MAIL share a short budget, so an idle or looping client cannot
    /// hold a slot for COMMAND_TIMEOUT after COMMAND_TIMEOUT (issue 26).
    async fn count_setup(&mut self) -> Outcome {
        let Some((left, _)) = &mut self.setup else { return Outcome::Continue };
        if self.auth.is_some() || matches!(self.state, State::Mail(_)) {
            self.setup = None;
            return Outcome::Continue;
        }
        *left = left.saturating_sub(1);
        if *left > 0 {
            return Outcome::Continue;
        }
        self.ctx.metrics.limit_hit("smtp_setup");
        let _ = self.conn.send(&reply::too_many_commands()).await;
        Outcome::Close
    }

    async fn command(&mut self, line: &[u8]) -> Outcome {
        let swapped = literal::swap(line);
        let req = match parse_request(line, swapped.as_ref()) {
            Ok(r) => r,
            Err(e) => return self.reply(parse_error(e)).await,
        };
        tracing::debug!(conn = self.conn_info.id, verb = req.name(), "smtp command");
        match req {
            Request::Ehlo { host } => self.ehlo(&host, true).await,
            Request::Helo { host } => self.ehlo(&host, false).await,
            Request::StartTls => self.starttls().await,
            Request::Auth { mechanism, initial_response } => self.auth(mechanism, initial_response.into_owned()).await,
            Request::Mail { from } => self.mail(from).await,
            Request::Rcpt { to } => self.rcpt(&to.address).await,
            Request::Data => self.data().await,
            Request::Rset => self.rset().await,
            Request::Noop { .. } => self.reply(reply::ok()).await,
            Request::Vrfy { value } => self.reply(reply::vrfy(&value)).await,
            Request::Expn { .. } => self.reply(reply::expn_disabled()).await,
            Request::Help { .. } => self.reply(reply::help()).await,
            Request::Quit => {
                let _ = self.conn.send(&reply::bye()).await;
                Outcome::Close
            }
            // SMTP-13: not offered, not accepted.
            Request::Lhlo { .. }
            | Request::Bdat { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.reply(reply::unknown_command()).await,
        }
    }
}

/// Pure entry point for fuzzing (issue 12): parse one command line as `command` does and return
/// the verb, or the exact refusal the session would send.
pub fn parse_command(line: &[u8]) -> Result<&'static str, Reply> {
    let swapped = literal::swap(line);
    parse_request(line, swapped.as_ref()).map(|r| r.name()).map_err(parse_error)
}

/// smtp-proto's parse, with an address literal swapped out and back in (see `literal`).
fn parse_request<'x>(
    line: &'x [u8],
    swapped: Option<&'x literal::Swapped>,
) -> Result<Request<Cow<'x, str>>, smtp_proto::Error> {
    let Some(sw) = swapped else { return Request::parse(&mut line.iter()) };
    let mut req = Request::parse(&mut sw.line.iter())?;
    match &mut req {
        Request::Mail { from } => from.address = Cow::Borrowed(sw.address.as_str()),
        Request::Rcpt { to } => to.address = Cow::Borrowed(sw.address.as_str()),
        _ => {}
    }
    Ok(req)
}

fn parse_error(e: smtp_proto::Error) -> Reply {
    use smtp_proto::Error as E;
    match e {
        E::UnknownCommand => reply::unknown_command(),
        E::InvalidSenderAddress => reply::bad_sender_syntax(),
        E::InvalidRecipientAddress => reply::bad_rcpt_syntax(),
        E::SyntaxError { syntax } => reply::syntax(syntax),
        E::InvalidParameter { param } => Reply::new(501, "5.5.4", format!("Invalid parameter {param}")),
        E::UnsupportedParameter { .. } => Reply::new(555, "5.5.4", "Unsupported parameter"),
        E::ResponseTooLong => reply::line_too_long(),
        E::NeedsMoreData { .. } | E::InvalidResponse { .. } => reply::syntax("command line"),
    }
}
