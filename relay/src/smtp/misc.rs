//! RSET and the transaction helpers shared by the verbs. VRFY, EXPN, HELP, NOOP and QUIT are
//! one-line answers in `session.rs` (SMTP-15, SMTP-16).

use super::reply;
use super::session::{Outcome, Session, State};

impl Session {
    pub async fn rset(&mut self) -> Outcome {
        if !matches!(self.state, State::Fresh) {
            self.state = State::Greeted;
        }
        self.reply(reply::ok()).await
    }

    /// End the transaction after DATA, whatever its result.
    pub fn end_transaction(&mut self) {
        self.state = State::Greeted;
    }
}
