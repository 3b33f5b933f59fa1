//! Issue 27: bodies over the inline limit in an S3-compatible object store (moto's server from
//! `scripts/s3-server.sh`, run by `tests/scaleout/run.sh`), shared by two nodes: stored through
//! one, fetched through the other, deleted from the bucket on expunge.

use crate::harness::*;
use crate::imap_helpers::{assert_ok, last, login, read_literal};
use crate::scaleout_pg::{fresh_database, pg_client, pg_extra};

#[tokio::test]
async fn scaleout_large_bodies_in_the_object_store() {
    let Some(url) = fresh_database().await else { return };
    let (Ok(endpoint), Ok(_)) = (std::env::var("RELAYTEST_S3_ENDPOINT"), std::env::var("AWS_ACCESS_KEY_ID")) else {
        eprintln!("SKIPPED: RELAYTEST_S3_ENDPOINT / AWS_ACCESS_KEY_ID not set (run tests/scaleout/run.sh)");
        return;
    };
    let bucket = format!("b{}", random_local());
    let extra = format!(
        "{}[blobs]\nbackend = \"s3\"\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\nregion = \"us-east-1\"\n",
        pg_extra(&url)
    );
    let secret = [9u8; 32];
    let nodes: Vec<Relay> = (0..2)
        .map(|_| {
            let mut r = Relay::prepare("chat.test", "127.0.0.1", Ports::new(), &extra);
            std::fs::create_dir_all(r.data_dir()).expect("dir");
            std::fs::write(r.data_dir().join("secret.key"), secret).expect("secret");
            r.spawn();
            r
        })
        .collect();
    let (alice, bob) = (nodes[0].new_address(), nodes[0].new_address());
    create_account(&nodes[0], &alice).await;
    create_account(&nodes[0], &bob).await;
    let big = crate::smtp_large::big_encrypted_eml(&alice, &bob, 600 * 1024);
    let small = encrypted_eml(&alice, &bob);
    for eml in [&big, &small] {
        let r = submit(&nodes[0], &alice, PASSWORD, &alice, &[&bob], eml).await;
        assert!(r.starts_with("250"), "{r}");
    }
    let db = pg_client(&url).await;
    let rows: Vec<(i64, i64)> = db
        .query("SELECT external, length(data) FROM blob_data ORDER BY external", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), i64::from(r.get::<_, i32>(1))))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1], (1, 0), "the large body is only a reference in the database");
    assert!(rows[0].0 == 0 && rows[0].1 > 0, "the small one stays inline: {rows:?}");

    // Fetched through the other node, byte for byte.
    let mut b = login(&nodes[1], &bob).await;
    let sel = b.imap("s", "SELECT INBOX").await;
    assert!(sel.iter().any(|l| l == "* 2 EXISTS"), "{sel:?}");
    b.send("f UID FETCH 1 (BODY.PEEK[])").await;
    let head = b.line().await.expect("line");
    assert!(head.contains("BODY[] {"), "{head}");
    let body = read_literal(&mut b, &head).await;
    assert_eq!(last(&b.until_tag("f").await), "f OK Fetch completed.");
    assert!(body.len() > 600 * 1024, "whole body: {}", body.len());
    let stored = String::from_utf8_lossy(&body).replace("\r\n", "\n");
    let tail: String = big.replace("\r\n", "\n").chars().rev().take(200).collect::<String>().chars().rev().collect();
    assert!(stored.trim_end().ends_with(tail.trim_end()), "the body's end came through intact");

    // Expunged: the row goes, and the object with it.
    let key: String = db.query_one("SELECT id FROM blob_data WHERE external = 1", &[]).await.expect("id").get(0);
    assert_ok(&b.imap("d", "UID STORE 1 +FLAGS (\\Deleted)").await);
    assert_ok(&b.imap("e", "EXPUNGE").await);
    let left: i64 = db.query_one("SELECT count(*) FROM blob_data WHERE external = 1", &[]).await.expect("n").get(0);
    assert_eq!(left, 0);
    let status = http_status(&format!("{endpoint}/{bucket}/{key}")).await;
    assert!(status.starts_with("HTTP/1.1 404") || status.starts_with("HTTP/1.1 403"), "object gone: {status}");
}

/// The status line of an unsigned GET (moto answers 404 for a missing key either way).
async fn http_status(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').expect("path");
    let mut s = tokio::net::TcpStream::connect(host).await.expect("connect");
    s.write_all(format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).lines().next().unwrap_or_default().to_string()
}
