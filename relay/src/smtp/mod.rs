//! SMTP: MX ingress (25), submission (587 STARTTLS) and submissions (465 implicit TLS).
//! Placeholder until the SMTP issue lands: answers a protocol-correct "not available".

use tokio::io::AsyncWriteExt;

use crate::context::{ConnInfo, Ctx};
use crate::tls::MaybeTls;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mx,
    Submission,
    Submissions,
}

pub async fn serve(ctx: Ctx, mut stream: MaybeTls, _kind: Kind, _conn: ConnInfo) {
    let line = format!("554 5.3.2 {} Service not yet available\r\n", ctx.config.get().mail_domain);
    let _ = stream.write_all(line.as_bytes()).await;
    let _ = stream.shutdown().await;
}
