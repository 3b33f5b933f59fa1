//! Issue 27: registration invites on the shared database. An invite made through one node's CLI
//! is valid on every node, and its uses are counted in one row: a 3-use invite redeemed 12 times
//! at once through two nodes makes exactly 3 accounts. `invites list|revoke` work from any node.

use std::sync::Arc;

use crate::harness::*;
use crate::scaleout_pg::{fresh_database, pg_client, pg_extra};

/// `n` invite-only nodes on one database (top-level keys must come before `[store]`).
fn invite_cluster(url: &str, n: usize) -> Vec<Relay> {
    let secret: [u8; 32] = std::array::from_fn(|i| (rand_u64() as u8).wrapping_add(i as u8));
    (0..n)
        .map(|_| {
            let extra = format!("registration = \"invite\"\n{}", pg_extra(url));
            let mut r = Relay::prepare("chat.test", "127.0.0.1", Ports::new(), &extra);
            std::fs::create_dir_all(r.data_dir()).expect("data dir");
            std::fs::write(r.data_dir().join("secret.key"), secret).expect("secret");
            r.spawn();
            r
        })
        .collect()
}

/// The token of a `chatrelay invites create` output.
fn token_of(out: &(i32, String, String)) -> String {
    assert_eq!(out.0, 0, "{} {}", out.1, out.2);
    let https = out.1.lines().find(|l| l.starts_with("https://")).expect("https link");
    https.strip_prefix("https://chat.test/new?invite=").expect("link shape").to_string()
}

async fn post_new(relay: &Relay, token: &str) -> HttpResponse {
    let a = relay.addr(relay.ports.https);
    https_req(&a, "POST", &format!("/new?invite={token}"), &a, &[], b"").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaleout_invite_used_concurrently_on_two_nodes() {
    let Some(url) = fresh_database().await else { return };
    let nodes = Arc::new(invite_cluster(&url, 2));
    let qr = nodes[0].dir.path().join("invite.svg");
    let qr_s = qr.to_string_lossy().into_owned();
    let token = token_of(&nodes[0].cli(&["invites", "create", "--uses", "3", "--qr", &qr_s]));

    // 12 redemptions at once, alternating between the nodes.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (nodes, token) = (nodes.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let r = post_new(&nodes[i % 2], &token).await;
            (i % 2, r)
        }));
    }
    let mut made = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (node, r) = t.await.expect("task");
        match r.status {
            200 => {
                let j = r.json();
                let cred =
                    (j["email"].as_str().expect("email").to_string(), j["password"].as_str().expect("pw").to_string());
                made.push((node, cred));
            }
            403 => {
                assert_eq!(r.json()["reason"], "this invite has been used up");
                refused += 1;
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    assert_eq!((made.len(), refused), (3, 9), "a 3-use invite makes 3 accounts across two nodes");
    let db = pg_client(&url).await;
    let accounts: i64 = db.query_one("SELECT count(*) FROM accounts", &[]).await.expect("n").get(0);
    assert_eq!(accounts, 3);
    let used: i64 = db.query_one("SELECT used FROM invites", &[]).await.expect("used").get(0);
    assert_eq!(used, 3);

    // An account made through one node logs in on the other.
    let (node, (email, pw)) = &made[0];
    let other = &nodes[1 - node];
    let mut c = Lines::tls(&other.addr(other.ports.imaps)).await;
    c.line().await.expect("greeting");
    let r = c.imap("l", &format!("LOGIN \"{email}\" \"{pw}\"")).await;
    assert!(r.last().is_some_and(|l| l.starts_with("l OK")), "{r:?}");

    // list and revoke from the other node's CLI see the same invites.
    let (code, list, err) = nodes[1].cli(&["invites", "list"]);
    assert_eq!(code, 0, "{err}");
    let row = list.lines().next().expect("one invite");
    assert!(row.starts_with("1\thint=") && row.contains("used=3/3") && row.ends_with("used-up"), "{row}");
    let token2 = token_of(&nodes[1].cli(&["invites", "create", "--qr", &qr_s]));
    let (code, out, err) = nodes[0].cli(&["invites", "revoke", "2"]);
    assert_eq!(code, 0, "{out} {err}");
    let r = post_new(&nodes[1], &token2).await;
    assert_eq!((r.status, r.json()["reason"].as_str()), (403, Some("this invite was revoked")));
    assert_eq!(nodes[1].cli(&["invites", "revoke", "2"]).0, 1, "already revoked, seen from the other node");
}
