//! EHLO and HELO (SMTP-11, SMTP-12): any non-empty argument; the keyword list depends on the
//! listener and on TLS; a new greeting resets the transaction.

use super::Kind;
use super::reply::Reply;
use super::session::{Outcome, Session, State};

impl Session {
    /// The EHLO keywords in the order SMTP-12 fixes.
    pub fn ehlo_lines(&self) -> Vec<String> {
        let cfg = self.ctx.config.get();
        let mut lines = vec![
            cfg.mail_domain.clone(),
            "PIPELINING".into(),
            format!("SIZE {}", cfg.max_message_size.0),
            "ENHANCEDSTATUSCODES".into(),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
        ];
        let tls = self.conn.is_tls();
        if !tls {
            lines.push("STARTTLS".into());
        }
        if tls && self.kind != Kind::Mx {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        lines
    }

    pub async fn ehlo(&mut self, _host: &str, extended: bool) -> super::session::Outcome {
        // A repeated greeting aborts the transaction but keeps authentication (RFC 5321 4.1.4).
        self.state = State::Greeted;
        if !extended {
            return self.reply(Reply::new(250, "", self.domain())).await;
        }
        let lines = self.ehlo_lines();
        let mut out = String::new();
        for (i, l) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            out.push_str(&format!("250{sep}{l}\r\n"));
        }
        match self.conn.send_raw(out.as_bytes()).await {
            Ok(()) => Outcome::Continue,
            Err(_) => Outcome::Close,
        }
    }
}
