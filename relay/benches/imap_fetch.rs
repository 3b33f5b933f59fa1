//! IMAP FETCH encoding of the yardstick messages: the pure parts of a FETCH response (MIME tree,
//! BODYSTRUCTURE, ENVELOPE) without the socket. `BODY[]` itself is the stored file, copied.

mod common;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relay::imap::mime;

fn fetch(c: &mut Criterion) {
    let mut g = c.benchmark_group("imap_fetch_encode");
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    for size in ["4k", "1m"] {
        let Some(raw) = common::message(size) else { continue };
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function(format!("bodystructure_{size}"), |b| {
            b.iter(|| mime::parse(std::hint::black_box(&raw)).structure(&raw, true))
        });
        g.bench_function(format!("envelope_{size}"), |b| b.iter(|| mime::envelope(&raw[..mime::split(&raw)])));
    }
    g.finish();
}

criterion_group!(benches, fetch);
criterion_main!(benches);
