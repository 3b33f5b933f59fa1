//! Login verification: the argon2id work a cold login costs (hash on first login, verify on a
//! cache miss) against the verified-login cache path that every later login takes, through the
//! real `Accounts::login` over a real store.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use relay::accounts::{Accounts, Secret, password};
use relay::config::{ConfigHandle, load_str};
use relay::metrics::Metrics;
use relay::store::Store;

const PW: &str = "bench-password";

fn login(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let toml = format!(
        "mail_domain = \"relay.test\"\ndata_dir = \"{}\"\nmax_load_1m = 100000.0\n\
         min_available_memory = \"1M\"\nmin_free_disk_space = \"1M\"\n[tls]\nmode = \"self-signed\"\n",
        data.display()
    );
    let cfg = ConfigHandle::new(load_str(&toml, "bench").expect("config"));
    let store = Store::open(&data).expect("store");
    let secret = Secret::load_or_create(&data).expect("secret");
    let accounts = || Accounts::new(store.clone(), cfg.clone(), secret.clone(), Metrics::new());
    let warm = accounts();
    rt.block_on(warm.login("bench0001@relay.test", PW, "imap")).expect("first login");

    let mut g = c.benchmark_group("login");
    g.measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_millis(500)).sample_size(10);
    let stored = password::hash(PW).expect("hash");
    g.bench_function("argon2id_hash (first login)", |b| b.iter(|| password::hash(PW)));
    g.bench_function("argon2id_verify", |b| b.iter(|| password::verify(PW, &stored)));
    // A cache miss: a fresh `Accounts` (empty cache) over the same store, one login each.
    g.bench_function("login_cold (store + argon2id verify)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let a = accounts();
                let t0 = Instant::now();
                rt.block_on(a.login("bench0001@relay.test", PW, "imap")).expect("login");
                total += t0.elapsed();
            }
            total
        })
    });
    g.sample_size(50);
    g.bench_function("login_cached (store read + HMAC + cache)", |b| {
        b.iter(|| rt.block_on(warm.login("bench0001@relay.test", PW, "imap")).expect("login"))
    });
    g.finish();
}

criterion_group!(benches, login);
criterion_main!(benches);
