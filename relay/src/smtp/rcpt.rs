//! RCPT TO: the recipient limit (SMTP-22); on MX only local recipients (SMTP-37, SMTP-38,
//! SMTP-39); on submission any domain, with local recipients checked the same way (SMTP-30).

use super::Kind;
use super::ingress;
use super::reply;
use super::session::{Outcome, Rcpt, Session, State};
use crate::address::Address;

impl Session {
    pub async fn rcpt(&mut self, to: &str) -> Outcome {
        let State::Mail(tx) = &self.state else {
            return self.reply(reply::bad_sequence()).await;
        };
        if let Some(r) = tx.deferred.clone() {
            return self.refuse(r).await;
        }
        let cfg = self.ctx.config.get();
        if tx.rcpts.len() >= cfg.max_smtp_recipients {
            return self.reply(reply::too_many_rcpts()).await;
        }
        let Ok(addr) = Address::parse(to) else {
            return self.reply(reply::bad_rcpt_syntax()).await;
        };
        let local = addr.is_local(&cfg.mail_domain);
        if !local && self.kind == Kind::Mx {
            return self.refuse(reply::relay_denied(addr.as_str())).await;
        }
        let rcpt = if local {
            match ingress::check_recipient(&self.ctx, addr.as_str()).await {
                Ok(r) => Rcpt { address: addr.as_str().to_string(), local: Some(r) },
                Err(r) => return self.refuse(r).await,
            }
        } else {
            Rcpt { address: addr.as_str().to_string(), local: None }
        };
        tracing::debug!(conn = self.conn_info.id, rcpt = %rcpt.address, "rcpt to");
        if let State::Mail(tx) = &mut self.state
            && !tx.rcpts.iter().any(|r| r.address == rcpt.address)
        {
            tx.rcpts.push(rcpt);
        }
        self.reply(reply::rcpt_ok()).await
    }

    /// A recipient refused for a reason `chatrelay_smtp_messages_total` names (rate limit,
    /// relay denied, unknown user, quota, local error): counted here, since no DATA follows.
    async fn refuse(&mut self, r: reply::Reply) -> Outcome {
        self.ctx.metrics.smtp_message(self.metric_listener(), "rejected", reply::metric_reason(&r));
        self.reply(r).await
    }
}
