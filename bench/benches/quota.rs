//! What client quotas cost a request (`server/src/quota/`): the check every request makes
//! with no quota set anywhere (one atomic load), the check when quotas exist but none applies
//! to this client (the precedence walk over the quota map), and a request charged against an
//! applying producer_byte_rate (precedence walk, the broker-wide sensor mutex, the windowed
//! rate). Single-threaded: the mutex is uncontended here.

use criterion::{criterion_group, criterion_main, Criterion};
use sluice_server::quota::{Entity, Name, QuotaManager, QuotaValue, Windows};

fn manager(dir: &std::path::Path, quota_for: Option<&str>) -> QuotaManager {
    let m = QuotaManager::open(dir, Windows::default()).expect("open");
    if let Some(c) = quota_for {
        m.alter_local(&[(
            Entity {
                user: None,
                client_id: Some(Name::Named(c.into())),
            },
            // high enough never to throttle: the cost of accounting, not of a throttle
            vec![("producer_byte_rate".into(), Some(QuotaValue(1e15)))],
        )])
        .expect("alter");
    }
    m
}

fn charge(m: &QuotaManager, client: &str) -> i32 {
    if !m.active() {
        return 0;
    }
    m.begin("User:ANONYMOUS", client)
        .map_or(0, |c| c.finish(Some(16_384), 0))
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tmp");
    let none = manager(&dir.path().join("none"), None);
    let other = manager(&dir.path().join("other"), Some("someone-else"));
    let mine = manager(&dir.path().join("mine"), Some("bench"));
    let mut g = c.benchmark_group("quota");
    g.bench_function("no quota set (the hot path)", |b| {
        b.iter(|| charge(std::hint::black_box(&none), "bench"))
    });
    g.bench_function("quotas set, none applies", |b| {
        b.iter(|| charge(std::hint::black_box(&other), "bench"))
    });
    g.bench_function("produce charged to an applying quota", |b| {
        b.iter(|| charge(std::hint::black_box(&mine), "bench"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
