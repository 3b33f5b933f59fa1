//! Issue 5: what changes with a real certificate (`[tls] mode = "files"`): dcaccount: QR and
//! redirect, the MTA-STS policy, and the autoconfig XML.

use crate::harness::*;

/// HTTP-6, HTTP-16, HTTP-22: dcaccount: everywhere, MTA-STS enforce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_mode_dcaccount_and_mta_sts() {
    let relay = Relay::start_files("");
    let r = relay.https("GET", "/new").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("dcaccount:https://chat.test/new"));
    let post = relay.https("POST", "/new").await;
    assert_eq!(post.status, 200);
    assert!(post.json().get("dclogin_url").is_none(), "only self-signed mode adds dclogin_url");
    let index = relay.https("GET", "/").await.text();
    assert!(index.contains("<code class=\"link\">dcaccount:chat.test</code>"), "{index}");
    let sts = relay.https("GET", "/.well-known/mta-sts.txt").await;
    assert_eq!(sts.status, 200);
    assert!(sts.header("content-type").unwrap_or_default().starts_with("text/plain"));
    assert_eq!(sts.text(), "version: STSv1\r\nmode: enforce\r\nmx: chat.test\r\nmax_age: 2419200\r\n");
}

/// HTTP-19..21: both autoconfig paths return parseable XML with the servers in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoconfig_xml() {
    let relay = Relay::start("");
    let p = relay.ports;
    for path in ["/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml?emailaddress=a%40chat.test"] {
        let r = relay.https("GET", path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap_or_default().starts_with("application/xml"));
        let text = r.text();
        let doc = roxmltree::Document::parse(&text).expect("autoconfig XML parses");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "clientConfig");
        assert_eq!(root.attribute("version"), Some("1.1"));
        let provider = root.children().find(|n| n.has_tag_name("emailProvider")).expect("emailProvider");
        assert_eq!(provider.attribute("id"), Some("chat.test"));
        let servers = |tag: &str| -> Vec<(String, String)> {
            provider
                .children()
                .filter(|n| n.has_tag_name(tag))
                .map(|s| {
                    let child = |name: &str| {
                        s.children().find(|c| c.has_tag_name(name)).and_then(|c| c.text()).unwrap_or("").to_string()
                    };
                    assert_eq!(child("hostname"), "chat.test");
                    assert_eq!(child("username"), "%EMAILADDRESS%");
                    assert_eq!(child("authentication"), "password-cleartext");
                    (child("port"), child("socketType"))
                })
                .collect()
        };
        let s = |port: u16, t: &str| (port.to_string(), t.to_string());
        assert_eq!(servers("incomingServer"), vec![s(p.imaps, "SSL"), s(p.imap, "STARTTLS"), s(p.https, "SSL")]);
        assert_eq!(
            servers("outgoingServer"),
            vec![s(p.submissions, "SSL"), s(p.submission, "STARTTLS"), s(p.https, "SSL")]
        );
    }
}
