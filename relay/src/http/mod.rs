//! HTTP (80), HTTPS (443) and the metrics listener. Placeholder until the web issue lands.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::context::{ConnInfo, Ctx};

const UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

pub async fn serve_http(_ctx: Ctx, mut tcp: TcpStream, _conn: ConnInfo) {
    let _ = tcp.write_all(UNAVAILABLE).await;
}

pub async fn serve_https(_ctx: Ctx, tcp: TcpStream, _conn: ConnInfo) {
    drop(tcp);
}

pub async fn serve_metrics(_ctx: Ctx, mut tcp: TcpStream, _conn: ConnInfo) {
    let _ = tcp.write_all(UNAVAILABLE).await;
}

// Temporary, until the web issue routes POST /mxdeliv here (the lead adds this line on merge).
pub mod mxdeliv;
