//! The DATA verb: 354, stream the body (data.rs), then hand it to the ingress or submission
//! pipeline and answer with its reply. A transaction in DATA is finished even during shutdown.

use super::Kind;
use super::data::{self, Body, DataError};
use super::reply::{self, Reply};
use super::session::{Outcome, Session, State};
use super::{ingress, submit};

impl Session {
    pub async fn data(&mut self) -> Outcome {
        let State::Mail(tx) = &self.state else {
            return self.reply(reply::bad_sequence()).await;
        };
        if tx.rcpts.is_empty() {
            return self.reply(Reply::new(554, "5.5.1", "Error: no valid recipients")).await;
        }
        if let Outcome::Close = self.reply(reply::data_go()).await {
            return Outcome::Close;
        }
        let (limit, budget) = {
            let c = self.ctx.config.get();
            (c.max_message_size.0, c.inflight_budget())
        };
        let mut held = crate::inflight::Reservation::new(budget);
        let body = data::read(&mut self.conn, limit, &mut held).await;
        let State::Mail(tx) = std::mem::replace(&mut self.state, State::Greeted) else {
            return Outcome::Close;
        };
        let bytes = match body {
            Ok(Body::Complete(b)) => bytes::Bytes::from(b),
            Ok(Body::TooLarge) => {
                self.ctx.metrics.smtp_message(self.metric_listener(), "rejected", "size");
                return self.reply(reply::too_large()).await;
            }
            Ok(Body::OverBudget) => {
                self.ctx.metrics.limit_hit("inflight_bytes");
                return self.reply(reply::over_budget()).await;
            }
            Err(DataError::Timeout) => {
                let _ = self.conn.send(&reply::timeout(&self.domain())).await;
                return Outcome::Close;
            }
            Err(DataError::Conn(_)) => return Outcome::Close,
        };
        let result = match (&self.kind, &self.auth) {
            (Kind::Mx, _) => {
                let rcpts: Vec<_> = tx.rcpts.iter().filter_map(|r| r.local.clone()).collect();
                ingress::accept(&self.ctx, &tx.mail_from, &rcpts, bytes.clone(), self.conn_info.peer).await
            }
            (_, Some(login)) => submit::accept(&self.ctx, login, &tx, bytes.clone()).await,
            (_, None) => Err(reply::auth_required()),
        };
        match result {
            Ok(id) => {
                self.ctx.metrics.smtp_message(self.metric_listener(), "accepted", "");
                tracing::debug!(conn = self.conn_info.id, queue_id = %id, size = bytes.len(), "message accepted");
                self.reply(reply::queued(&id)).await
            }
            Err(r) => {
                self.ctx.metrics.smtp_message(self.metric_listener(), "rejected", reply::metric_reason(&r));
                self.reply(r).await
            }
        }
    }
}
