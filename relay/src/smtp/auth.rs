//! AUTH PLAIN (with or without initial response) and AUTH LOGIN (SMTP-7, SMTP-8, SMTP-26,
//! SMTP-27). Logins go through `accounts` (create-on-first-login); a failure waits 1 s before
//! the 535, and the third failure closes the session.

use std::time::Duration;

use base64::prelude::{BASE64_STANDARD, Engine as _};
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};

use super::Kind;
use super::io::{AUTH_LINE_MAX, LineError};
use super::reply::{self, Reply};
use super::session::{COMMAND_TIMEOUT, Outcome, Session, State};
use crate::accounts::AuthError;

const FAILURE_DELAY: Duration = Duration::from_secs(1);
const MAX_FAILURES: u8 = 3;

/// What the client sent for a challenge.
enum Answer {
    Text(Vec<u8>),
    Cancelled,
    Undecodable,
    /// Over the 12288-octet AUTH line limit (SMTP-19): `500 5.5.2`, the exchange ends.
    TooLong,
    Closed,
}

impl Session {
    pub async fn auth(&mut self, mechanism: u64, initial: String) -> Outcome {
        if self.kind == Kind::Mx {
            return self.reply(reply::auth_not_enabled()).await;
        }
        if !self.conn.is_tls() {
            return self.reply(reply::auth_needs_tls()).await;
        }
        if self.auth.is_some() {
            return self.reply(reply::auth_already()).await;
        }
        if !matches!(self.state, State::Greeted) {
            return self.reply(reply::bad_sequence()).await;
        }
        let creds = match mechanism {
            AUTH_PLAIN => self.plain(initial).await,
            AUTH_LOGIN => self.login(initial).await,
            _ => return self.reply(reply::auth_mechanism()).await,
        };
        let (user, password) = match creds {
            Ok(Some(c)) => c,
            Ok(None) => return self.fail().await,
            Err(r) => return r,
        };
        match self.ctx.accounts.login_from(&user, &password, "smtp", self.conn_info.peer).await {
            Ok(acc) => {
                self.gone = Some(self.ctx.store.events().subscribe(acc.id));
                self.auth = Some(acc);
                self.reply(reply::auth_ok()).await
            }
            Err(AuthError::Store(e)) => {
                tracing::error!(error = %e, "store error during smtp login");
                self.reply(reply::auth_temp()).await
            }
            // `accounts.login` already waited the delay, equal for every failure.
            Err(_) => self.failed().await,
        }
    }

    /// 535 after the SMTP-27 delay, for credentials that never reached `accounts`.
    async fn fail(&mut self) -> Outcome {
        tokio::time::sleep(FAILURE_DELAY).await;
        self.failed().await
    }

    /// 535; the third failure closes the session.
    async fn failed(&mut self) -> Outcome {
        self.auth_failures += 1;
        if let Outcome::Close = self.reply(reply::auth_failed()).await {
            return Outcome::Close;
        }
        if self.auth_failures >= MAX_FAILURES {
            let _ = self.conn.send(&reply::auth_too_many()).await;
            return Outcome::Close;
        }
        Outcome::Continue
    }

    /// Send a 334 challenge and read the base64 answer (SMTP-19: at most 12288 octets).
    async fn challenge(&mut self, prompt: &str) -> Answer {
        if self.conn.send(&Reply::new(334, "", prompt)).await.is_err() {
            return Answer::Closed;
        }
        let line = match tokio::time::timeout(COMMAND_TIMEOUT, self.conn.read_line(AUTH_LINE_MAX)).await {
            Ok(Ok(l)) => l,
            Ok(Err(LineError::TooLong)) => return Answer::TooLong,
            _ => return Answer::Closed,
        };
        let text = line.trim_ascii();
        if text == b"*" {
            return Answer::Cancelled;
        }
        decode(text)
    }

    /// Ok(None): bad credentials shape (counts as a failure). Err: the session outcome.
    async fn plain(&mut self, initial: String) -> Result<Option<(String, String)>, Outcome> {
        let answer = if initial.is_empty() { self.challenge("").await } else { decode(initial.as_bytes()) };
        let raw = self.answer_bytes(answer).await?;
        let mut parts = raw.split(|&b| b == 0);
        let (Some(authz), Some(user), Some(pw), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Ok(None);
        };
        let (Ok(authz), Ok(user), Ok(pw)) =
            (std::str::from_utf8(authz), std::str::from_utf8(user), std::str::from_utf8(pw))
        else {
            return Ok(None);
        };
        if !authz.is_empty() && !authz.eq_ignore_ascii_case(user) {
            return Ok(None);
        }
        Ok(Some((user.to_string(), pw.to_string())))
    }

    async fn login(&mut self, initial: String) -> Result<Option<(String, String)>, Outcome> {
        let answer = if initial.is_empty() { self.challenge("VXNlcm5hbWU6").await } else { decode(initial.as_bytes()) };
        let user = self.answer_bytes(answer).await?;
        let answer = self.challenge("UGFzc3dvcmQ6").await;
        let pw = self.answer_bytes(answer).await?;
        match (String::from_utf8(user), String::from_utf8(pw)) {
            (Ok(u), Ok(p)) => Ok(Some((u, p))),
            _ => Ok(None),
        }
    }

    async fn answer_bytes(&mut self, a: Answer) -> Result<Vec<u8>, Outcome> {
        match a {
            Answer::Text(t) => Ok(t),
            Answer::Undecodable => Ok(Vec::new()),
            Answer::Cancelled => Err(self.reply(reply::auth_aborted()).await),
            Answer::TooLong => Err(self.reply(reply::line_too_long()).await),
            Answer::Closed => Err(Outcome::Close),
        }
    }
}

fn decode(text: &[u8]) -> Answer {
    if text == b"=" {
        return Answer::Text(Vec::new());
    }
    match BASE64_STANDARD.decode(text) {
        Ok(v) => Answer::Text(v),
        Err(_) => Answer::Undecodable,
    }
}
