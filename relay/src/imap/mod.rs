//! IMAP (143 STARTTLS, 993 implicit TLS). Placeholder until the IMAP issue lands.

use tokio::io::AsyncWriteExt;

use crate::context::{ConnInfo, Ctx};
use crate::tls::MaybeTls;

pub async fn serve(_ctx: Ctx, mut stream: MaybeTls, _conn: ConnInfo) {
    let _ = stream.write_all(b"* BYE Service not yet available\r\n").await;
    let _ = stream.shutdown().await;
}
