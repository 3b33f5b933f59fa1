//! COMPRESS DEFLATE (RFC 4978, IMAP-41): raw DEFLATE both ways after the tagged OK.

use super::replies as r;
use super::session::{Reply, Session};

pub async fn compress(s: &mut Session, tag: &str) -> Reply {
    if s.conn.compressed() {
        return Reply::Done(r::COMPRESSION_ACTIVE.into());
    }
    s.untagged(&format!("{tag} OK DEFLATE active\r\n"));
    if s.conn.flush().await.is_err() || s.conn.start_compression().is_err() {
        return Reply::Close;
    }
    Reply::Handled
}
