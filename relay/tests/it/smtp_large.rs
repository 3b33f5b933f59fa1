//! Issue 11: "a 30 MB message must stream through with RSS growth ≤ 2× its size". The relay's
//! peak RSS (VmHWM, reset just before the transfer) is compared with its RSS before it.

use crate::harness::*;

fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().trim_end_matches(" kB").trim().parse().expect("kB")))
        .expect(key)
}

/// A PGP/MIME message of about `size` bytes whose payload is a structurally valid OpenPGP
/// message (a v3 PKESK and a SEIPD packet with random contents), like real encrypted mail.
pub(crate) fn big_encrypted_eml(from: &str, to: &str, size: usize) -> String {
    use base64::Engine as _;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rnd = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let bin_len = size / 4 * 3;
    let mut pkt = vec![0xc1, 0xc0, 0xcc]; // PKESK, two-octet length 396
    pkt.extend([3u8]);
    pkt.extend(rnd(8));
    pkt.extend([1u8, 0x0c, 0x00]);
    pkt.extend(rnd(384));
    let body_len = bin_len - pkt.len() - 6;
    pkt.extend([0xd2, 0xff]); // SEIPD, five-octet length
    pkt.extend((body_len as u32).to_be_bytes());
    pkt.push(1);
    pkt.extend(rnd(body_len - 1));
    let b64 = base64::prelude::BASE64_STANDARD.encode(&pkt);
    let mut armored = String::with_capacity(b64.len() + b64.len() / 32 + 100);
    armored.push_str("-----BEGIN PGP MESSAGE-----\r\n\r\n");
    for line in b64.as_bytes().chunks(64) {
        armored.push_str(std::str::from_utf8(line).expect("ascii"));
        armored.push_str("\r\n");
    }
    armored.push_str("-----END PGP MESSAGE-----\r\n");
    let eml = crate::harness::encrypted_eml(from, to);
    let start = eml.find("-----BEGIN PGP MESSAGE-----").expect("begin");
    let end = eml.find("-----END PGP MESSAGE-----").expect("end") + "-----END PGP MESSAGE-----".len();
    let end = end + usize::from(eml[end..].starts_with("\r\n")) * 2;
    format!("{}{}{}", &eml[..start], armored, &eml[end..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_mb_message_rss_growth_at_most_twice_its_size() {
    let relay = Relay::start("");
    let (a, b) = (relay.new_address(), relay.new_address());
    create_account(&relay, &b).await;
    let eml = big_encrypted_eml(&a, &b, 29 * 1024 * 1024);
    // Log in first: the argon2id hash of a first login is not part of the transfer.
    let (mut c, r) = smtp_login(&relay, &a, PASSWORD).await;
    assert!(r.starts_with("235"), "{r}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let pid = relay.pid();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak RSS");
    let before = status_kib(pid, "VmRSS:");
    let r = send_mail(&mut c, &a, &[&b], &eml).await;
    let peak = status_kib(pid, "VmHWM:");
    assert!(r.starts_with("250 "), "30 MB message refused: {r}");
    let growth = peak.saturating_sub(before) * 1024;
    let size = eml.len() as u64;
    println!(
        "30 MB message: RSS {before} KiB before, peak {peak} KiB: growth {:.2}× its size",
        growth as f64 / size as f64
    );
    assert!(growth <= 2 * size, "RSS grew {growth} bytes for a {size}-byte message");
    let stored = inbox_messages(&relay, &b).await;
    assert_eq!(stored.len(), 1);
    assert!(stored[0].len() as u64 >= size - 4096, "stored {} of {size} bytes", stored[0].len());
}

/// SMTP-42: a large message (verified on a blocking thread) passes DKIM like a small one, and a
/// tampered one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_signed_message_on_port_25_is_verified() {
    let dns = crate::dns_server::TestDns::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.pem");
    relay::outbound::dkim_key::ensure(&path).expect("key");
    let signer = relay::dkim::Signer::load(&path, "_a.test", "dkim").expect("signer");
    dns.dkim("dkim", "_a.test", &signer.public_key_b64());
    let relay = Relay::start(&format!("[delivery]\nresolver = \"{}\"\n", dns.resolver()));
    let (from, to) = (format!("{}@_a.test", random_local()), relay.new_address());
    seed_account(&relay::store::Store::open(&relay.data_dir()).expect("store"), &to).await;
    let eml = big_encrypted_eml(&from, &to, 600 * 1024);
    let signed = signer.sign(eml.as_bytes()).expect("sign");
    assert!(signed.len() > 512 * 1024);
    let tampered = String::from_utf8_lossy(&signed).replacen("Subject: [...]", "Subject: [..]", 1).into_bytes();
    assert_ne!(tampered, signed);
    assert_eq!(mx_send(&relay, &from, &to, &tampered).await, "554 5.7.1 No valid DKIM signature found");
    let reply = mx_send(&relay, &from, &to, &signed).await;
    assert!(reply.starts_with("250"), "{reply}");
}
