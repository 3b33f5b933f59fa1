//! CAPABILITY, ID and the capability lists of IMAP-6..9.

use super::replies as r;
use super::session::{Reply, Session, ok};

/// The capability list for the session's current state (IMAP-3, IMAP-6, IMAP-7).
pub fn capabilities(s: &Session) -> String {
    let push = s.ctx.config.get().push_enabled();
    let mut caps: Vec<&str> = vec!["IMAP4rev1", "LITERAL+", "ID", "ENABLE"];
    if s.account.is_some() {
        caps.extend(["IDLE", "NAMESPACE", "UIDPLUS", "MOVE", "UNSELECT", "QUOTA", "METADATA"]);
        caps.push("COMPRESS=DEFLATE");
    } else if s.conn.stream.is_tls() {
        caps.extend(["SASL-IR", "AUTH=PLAIN"]);
    } else {
        caps.extend(["SASL-IR", "STARTTLS", "LOGINDISABLED"]);
    }
    caps.push("XCHATMAIL");
    if push {
        caps.push("XDELTAPUSH");
    }
    caps.join(" ")
}

pub fn capability(s: &mut Session) -> Reply {
    let line = format!("* CAPABILITY {}\r\n", capabilities(s));
    s.untagged(&line);
    ok(r::OK_CAPABILITY)
}

pub fn id(s: &mut Session) -> Reply {
    s.untagged("* ID (\"name\" \"chatrelay\")\r\n");
    ok(r::OK_ID)
}
