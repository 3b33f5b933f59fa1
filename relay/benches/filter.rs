//! The encryption filter on the yardstick's 4 KB and 1 MB PGP/MIME messages: parse + MIME shape
//! + dearmor + packet walk, i.e. everything `filter::check_bytes` does per submitted message.

mod common;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relay::filter::{Envelope, Variant, Verdict, check_bytes};

fn filter(c: &mut Criterion) {
    let rcpts = vec!["bench0002@relay.test".to_string()];
    let env = Envelope { mail_from: "bench0001@relay.test", rcpts: &rcpts };
    let mut g = c.benchmark_group("filter_check");
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    for size in ["4k", "1m"] {
        let Some(msg) = common::message(size) else { continue };
        assert_eq!(check_bytes(&msg, Variant::Outgoing, &env), Verdict::Encrypted, "{size} template must pass");
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_function(size, |b| b.iter(|| check_bytes(std::hint::black_box(&msg), Variant::Outgoing, &env)));
    }
    g.finish();
}

criterion_group!(benches, filter);
criterion_main!(benches);
