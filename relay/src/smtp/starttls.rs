//! STARTTLS (SMTP-1, SMTP-2, SMTP-9): MX accepts TLS 1.2 and 1.3, submission TLS 1.3 only; after
//! the handshake every earlier state is gone and the client must greet again.

use std::time::Duration;

use super::Kind;
use super::reply;
use super::session::{Outcome, Session, State};
use crate::tls::Profile;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

impl Session {
    pub async fn starttls(&mut self) -> Outcome {
        if self.conn.is_tls() {
            return self.reply(reply::tls_active()).await;
        }
        if let Outcome::Close = self.reply(reply::ready_tls()).await {
            return Outcome::Close;
        }
        let profile = if self.kind == Kind::Mx { Profile::Mx } else { Profile::Strict };
        let acceptor = self.ctx.tls.acceptor(profile).clone();
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.conn.upgrade(&acceptor)).await {
            Ok(Ok(())) => {
                self.state = State::Fresh;
                self.auth = None;
                self.gone = None;
                Outcome::Continue
            }
            // A failed handshake leaves no usable channel for a reply.
            _ => Outcome::Close,
        }
    }
}
