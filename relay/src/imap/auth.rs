//! STARTTLS, LOGIN and AUTHENTICATE PLAIN (IMAP-3, IMAP-46, ACC-8..13). Logins go through
//! `accounts.login`, which creates the account on a valid first login.

use std::time::Duration;

use base64::Engine;

use super::io::Line;
use super::replies as r;
use super::session::{Reply, Session};
use crate::tls::{MaybeTls, Profile};

const FAIL_DELAY: Duration = Duration::from_secs(1);
const MAX_FAILURES: u32 = 3;

pub async fn starttls(s: &mut Session, tag: &str) -> Reply {
    if s.conn.stream.is_tls() {
        return Reply::Done(r::NO_STARTTLS.into());
    }
    s.untagged(&format!("{tag} OK Begin TLS negotiation now.\r\n"));
    if s.conn.flush().await.is_err() || s.conn.buffered() > 0 {
        // Plaintext pipelined after STARTTLS could be injected by an attacker: refuse it.
        return Reply::Close;
    }
    let plain = std::mem::replace(&mut s.conn.stream, MaybeTls::Upgrading);
    let acceptor = s.ctx.tls.acceptor(Profile::Strict).clone();
    let until = s.deadline().min(tokio::time::Instant::now() + Duration::from_secs(30));
    match tokio::time::timeout_at(until, plain.upgrade(&acceptor)).await {
        Ok(Ok(tls)) => {
            s.conn.stream = tls;
            Reply::Handled
        }
        _ => Reply::Close,
    }
}

pub async fn login(s: &mut Session, user: &[u8], password: &[u8]) -> Reply {
    if !s.conn.stream.is_tls() {
        return Reply::Done(r::PRIVACY_REQUIRED.into());
    }
    let (Ok(user), Ok(pw)) = (std::str::from_utf8(user), std::str::from_utf8(password)) else {
        return fail(s).await;
    };
    finish(s, user, pw).await
}

pub async fn authenticate(s: &mut Session, mechanism: &str, ir: Option<Vec<u8>>) -> Reply {
    if !s.conn.stream.is_tls() {
        return Reply::Done(r::PRIVACY_REQUIRED.into());
    }
    if !mechanism.eq_ignore_ascii_case("PLAIN") {
        return Reply::Done(r::NO_AUTH_MECH.into());
    }
    let raw = match ir {
        Some(v) => v,
        None => {
            s.untagged("+ \r\n");
            if s.conn.flush().await.is_err() {
                return Reply::Close;
            }
            // The continuation is part of the pre-login time from connect (issue 26), not a fresh 60 s.
            let line = match tokio::time::timeout_at(s.deadline(), s.conn.read_line(8192)).await {
                Ok(Ok(Line::Ok(l))) => l,
                Ok(Ok(Line::TooLong)) => return Reply::Done(r::AUTH_ABORTED.into()),
                _ => return Reply::Close,
            };
            let text = line.trim_ascii();
            if text == b"*" {
                return Reply::Done(r::AUTH_ABORTED.into());
            }
            match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(v) => v,
                Err(_) => return fail(s).await,
            }
        }
    };
    let mut parts = raw.split(|b| *b == 0);
    let (Some(authz), Some(user), Some(pw), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return fail(s).await;
    };
    if !authz.is_empty() && authz != user {
        return fail(s).await;
    }
    let (Ok(user), Ok(pw)) = (std::str::from_utf8(user), std::str::from_utf8(pw)) else {
        return fail(s).await;
    };
    finish(s, user, pw).await
}

async fn finish(s: &mut Session, user: &str, pw: &str) -> Reply {
    match s.ctx.accounts.login_from(user, pw, "imap", s.info.peer).await {
        Ok(acc) => {
            s.sub = Some(s.ctx.store.events().subscribe(acc.id));
            s.account = Some(acc);
            Reply::Done(format!("OK [CAPABILITY {}] Logged in", super::misc::capabilities(s)))
        }
        // `accounts.login` already waited the IMAP-46 delay, equal for every failure.
        Err(_) => failed(s),
    }
}

/// ACC-13 reply after the IMAP-46 delay, for credentials that never reached `accounts`.
async fn fail(s: &mut Session) -> Reply {
    tokio::time::sleep(FAIL_DELAY).await;
    failed(s)
}

/// ACC-13 reply; the third failure ends the connection.
fn failed(s: &mut Session) -> Reply {
    s.auth_failures += 1;
    if s.auth_failures >= MAX_FAILURES {
        return Reply::DoneCloseBye(r::AUTH_FAILED.into(), r::TOO_MANY_AUTH);
    }
    Reply::Done(r::AUTH_FAILED.into())
}
