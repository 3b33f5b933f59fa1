//! MAIL FROM: STARTTLS first on MX (SMTP-6), AUTH first on submission (SMTP-7), SIZE (SMTP-21).
//! On submission the sender check (SMTP-28) and the rate limit (SMTP-29) are decided here but,
//! as in the reference, answered at each RCPT.

use std::borrow::Cow;
use std::time::Instant;

use smtp_proto::MailFrom;

use super::Kind;
use super::ratelimit::RateLimiter;
use super::reply::{self, Reply};
use super::session::{Outcome, Session, State, Transaction};
use crate::address::Address;

impl Session {
    pub async fn mail(&mut self, from: MailFrom<Cow<'_, str>>) -> Outcome {
        if !matches!(self.state, State::Greeted) {
            return self.reply(reply::bad_sequence()).await;
        }
        if self.kind == Kind::Mx && !self.conn.is_tls() {
            return self.reply(reply::starttls_first()).await;
        }
        if self.kind != Kind::Mx && self.auth.is_none() {
            return self.reply(reply::auth_required()).await;
        }
        let cfg = self.ctx.config.get();
        if from.size as u64 > cfg.max_message_size.0 {
            return self.reply(reply::too_large()).await;
        }
        let mail_from = if from.address.is_empty() {
            String::new()
        } else {
            match Address::parse(&from.address) {
                Ok(a) => a.as_str().to_string(),
                Err(_) => return self.reply(reply::bad_sender_syntax()).await,
            }
        };
        let deferred = self.submission_refusal(&from.address, &mail_from, &cfg);
        tracing::debug!(conn = self.conn_info.id, from = %mail_from, "mail from");
        self.state = State::Mail(Transaction { mail_from, rcpts: Vec::new(), deferred });
        self.reply(reply::mail_ok()).await
    }

    fn submission_refusal(&self, given: &str, mail_from: &str, cfg: &crate::config::Config) -> Option<Reply> {
        let login = self.auth.as_ref()?;
        if self.kind == Kind::Mx {
            return None;
        }
        if mail_from.is_empty() || !mail_from.eq_ignore_ascii_case(&login.address) {
            return Some(reply::not_owned(given, &login.address));
        }
        let limiter = RateLimiter::global();
        match limiter.check(mail_from, cfg.max_user_send_per_minute, cfg.max_user_send_burst_size, Instant::now()) {
            Ok(()) => None,
            Err(secs) => Some(reply::rate_limited(mail_from, secs)),
        }
    }
}
