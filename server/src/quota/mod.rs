//! Client quotas as Kafka has them (KIP-13, KIP-55, KIP-124, KIP-219, KIP-546):
//! `producer_byte_rate`, `consumer_byte_rate` and `request_percentage` on `user` /
//! `client-id` entities, set with AlterClientQuotas and read with DescribeClientQuotas.
//!
//! Data path of a request when quotas are set: [`crate::api::handle`] asks
//! [`QuotaManager::begin`] (one atomic load when no quota is set anywhere: the request goes on
//! untouched) -> a [`Charge`] for the request's user (its principal's name) and client.id ->
//! the handler runs (under [`Busy`], which sums the time it spends in `poll`, when a
//! request_percentage quota exists) -> before the response is encoded, [`Charge::finish`]
//! records the produce request's bytes and the handler time, Fetch records its response bytes
//! ([`Charge::fetch`]; a throttled fetch answers empty and takes its bytes back, as Kafka) ->
//! each value goes to the entity's [`rate::Rate`] in the broker-wide sensor table (one mutex,
//! shared by every shard) -> on a violation, throttle = (observed - quota) / quota * window ->
//! the response carries it in throttle_time_ms and goes out at once (KIP-219) -> the
//! connection's reader does not read the next request before the throttle has passed
//! ([`crate::conn::Session::throttle`]), so a client that ignores throttle_time_ms is held to
//! the quota too.
//!
//! Storage: single node, `<data>/__sluice/client-quotas.json`, replaced durably before
//! AlterClientQuotas answers; in a cluster, the metadata image (`Command::AlterClientQuotas`
//! through the quorum), copied into every broker's manager by a per-broker ticker and by the
//! broker that took the request before it answers.

pub mod entity;
pub mod rate;
pub mod throttle;

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub use entity::{Entity, Name, Ops, QuotaMap, QuotaType, QuotaValue, Tags};
pub use rate::Windows;
pub use throttle::SetThrottle;

/// Sensors kept at most; idle ones (no record for all windows) are dropped past this.
const MAX_SENSORS: usize = 100_000;

/// One entity's accounting for one quota type.
struct Sensor {
    rate: rate::Rate,
    last_ms: u64,
    throttled: u64,
    throttle_ms: u64,
}

/// What `/metrics` shows of one sensor.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SensorSnapshot {
    pub quota_type: &'static str,
    pub user: String,
    pub client_id: String,
    /// The measured rate (bytes/s, or percent of one thread for request_percentage).
    pub rate: f64,
    pub throttled: u64,
    pub throttle_ms: u64,
}

/// The broker's quotas and the rates measured against them, shared by every shard.
pub struct QuotaManager {
    windows: Windows,
    /// Bits of the quota types set anywhere ([`QuotaType::bit`]); 0: quotas are off.
    kinds: AtomicU8,
    map: RwLock<Arc<QuotaMap>>,
    /// The single-node store (a cluster keeps quotas in the metadata image).
    path: PathBuf,
    write: Mutex<()>,
    sensors: Mutex<HashMap<(QuotaType, Tags), Sensor>>,
    epoch: Instant,
    /// Every throttled response, and their throttle time together.
    pub throttled_total: AtomicU64,
    pub throttle_ms_total: AtomicU64,
}

impl QuotaManager {
    /// Opens the single-node store under `data_dir` (a cluster node installs the image's
    /// quotas instead).
    pub fn open(data_dir: &std::path::Path, windows: Windows) -> Result<QuotaManager, String> {
        let path = data_dir.join("__sluice").join("client-quotas.json");
        let map: QuotaMap = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => QuotaMap::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let m = QuotaManager {
            windows,
            kinds: AtomicU8::new(0),
            map: RwLock::new(Arc::new(QuotaMap::default())),
            path,
            write: Mutex::new(()),
            sensors: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            throttled_total: AtomicU64::new(0),
            throttle_ms_total: AtomicU64::new(0),
        };
        m.install(Arc::new(map));
        Ok(m)
    }

    pub fn windows(&self) -> Windows {
        self.windows
    }

    /// The quotas in force.
    pub fn current(&self) -> Arc<QuotaMap> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `map` in force (the image's quotas in a cluster).
    pub fn install(&self, map: Arc<QuotaMap>) {
        let mut g = self.map.write().unwrap_or_else(|p| p.into_inner());
        if **g == *map {
            return;
        }
        self.kinds.store(map.kinds(), Ordering::Release);
        *g = map;
    }

    /// Single node: applies `changes` to the stored quotas, durably, then puts them in force;
    /// on a write error nothing changes.
    pub fn alter_local(&self, changes: &[(Entity, Ops)]) -> Result<(), String> {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = (*self.current()).clone();
        for (e, ops) in changes {
            next.apply(e, ops);
        }
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| e.to_string())?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        sluice_engine::meta::durable_replace(&self.path, &bytes)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.install(Arc::new(next));
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether any quota is set (the hot-path check: one atomic load).
    #[inline]
    pub fn active(&self) -> bool {
        self.kinds.load(Ordering::Relaxed) != 0
    }

    /// The accounting of one request, or None when no quota applies to this user and client
    /// (the hot path when no quota is set anywhere: one atomic load). `principal` is `User:<name>`.
    pub fn begin(&self, principal: &str, client_id: &str) -> Option<Charge<'_>> {
        let kinds = self.kinds.load(Ordering::Acquire);
        if kinds == 0 {
            return None;
        }
        let user = principal.strip_prefix("User:").unwrap_or(principal);
        let map = self.current();
        let applies =
            |t: QuotaType| kinds & t.bit() != 0 && map.resolve(t, user, client_id).is_some();
        let meter = applies(QuotaType::Request).then(|| Rc::new(BusyMeter::default()));
        if meter.is_none() && !applies(QuotaType::Produce) && !applies(QuotaType::Fetch) {
            return None; // quotas exist, none for this user and client
        }
        Some(Charge {
            mgr: self,
            map,
            user: user.to_string(),
            client_id: client_id.to_string(),
            meter,
        })
    }

    /// Records `value` against the quota of type `t` that applies, returning the throttle
    /// time in ms (0: within it, or no quota applies).
    fn record(&self, map: &QuotaMap, t: QuotaType, user: &str, client: &str, value: f64) -> u64 {
        let Some((tags, quota)) = map.resolve(t, user, client) else {
            return 0;
        };
        let w = self.windows;
        let now = self.now_ms();
        let cap = match t {
            // Kafka caps request throttles at one window
            QuotaType::Request => w.size_ms,
            _ => w.span_ms(),
        };
        let mut sensors = self.sensors.lock().unwrap_or_else(|p| p.into_inner());
        if sensors.len() >= MAX_SENSORS && !sensors.contains_key(&(t, tags.clone())) {
            let span = w.span_ms();
            sensors.retain(|_, s| now.saturating_sub(s.last_ms) < span);
            if sensors.len() >= MAX_SENSORS {
                return 0; // every slot busy: not accounted rather than unbounded
            }
        }
        let s = sensors.entry((t, tags)).or_insert_with(|| Sensor {
            rate: rate::Rate::new(w, now),
            last_ms: now,
            throttled: 0,
            throttle_ms: 0,
        });
        s.last_ms = now;
        let throttle = s.rate.record_and_throttle(w, value, quota, now, cap);
        if throttle > 0 {
            s.throttled += 1;
            s.throttle_ms += throttle;
        }
        throttle
    }

    fn unrecord(&self, map: &QuotaMap, t: QuotaType, user: &str, client: &str, value: f64) {
        let Some((tags, _)) = map.resolve(t, user, client) else {
            return;
        };
        let now = self.now_ms();
        let mut sensors = self.sensors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = sensors.get_mut(&(t, tags)) {
            s.rate.record(self.windows, -value, now);
        }
    }

    /// Every sensor, sorted by type, user, client.
    pub fn snapshot(&self) -> Vec<SensorSnapshot> {
        let now = self.now_ms();
        let w = self.windows;
        let mut sensors = self.sensors.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<SensorSnapshot> = sensors
            .iter_mut()
            .map(|((t, tags), s)| SensorSnapshot {
                quota_type: t.key(),
                user: tags.user.clone(),
                client_id: tags.client_id.clone(),
                rate: s.rate.measure(w, now),
                throttled: s.throttled,
                throttle_ms: s.throttle_ms,
            })
            .collect();
        v.sort_by(|a, b| {
            (a.quota_type, &a.user, &a.client_id).cmp(&(b.quota_type, &b.user, &b.client_id))
        });
        v
    }
}

/// How often a cluster broker copies the image's quotas into its manager.
const IMAGE_SYNC: Duration = Duration::from_millis(200);

/// Cluster mode (shard 0): puts the metadata image's client quotas in force whenever a newer
/// image has other ones.
pub async fn sync_from_image(shared: Arc<crate::shard::BrokerShared>) {
    let mut seen = 0u64;
    loop {
        if let Some(img) = shared.image() {
            if img.applied != seen {
                seen = img.applied;
                shared.quotas.install(Arc::new(img.client_quotas.clone()));
            }
        }
        glommio::timer::sleep(IMAGE_SYNC).await;
    }
}

/// The quota part of a metrics snapshot.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QuotaSnapshot {
    pub throttled: u64,
    pub throttle_ms: u64,
    pub sensors: Vec<SensorSnapshot>,
}

impl QuotaManager {
    pub fn metrics(&self) -> QuotaSnapshot {
        QuotaSnapshot {
            throttled: self.throttled_total.load(Ordering::Relaxed),
            throttle_ms: self.throttle_ms_total.load(Ordering::Relaxed),
            sensors: self.snapshot(),
        }
    }
}

/// One request's accounting (see the module doc).
pub struct Charge<'a> {
    mgr: &'a QuotaManager,
    map: Arc<QuotaMap>,
    user: String,
    client_id: String,
    meter: Option<Rc<BusyMeter>>,
}

impl Charge<'_> {
    /// Set when a request_percentage quota applies: the handler runs under [`Busy`] with it.
    pub fn meter(&self) -> Option<Rc<BusyMeter>> {
        self.meter.clone()
    }

    /// A consumer's fetch response carrying `bytes` of records: records them against
    /// consumer_byte_rate, then as [`Charge::finish`]. When the throttle is > 0 the caller
    /// answers empty, and the bytes are taken back, as Kafka does.
    pub fn finish_fetch(&self, bytes: u64) -> i32 {
        let (u, c) = (&self.user, &self.client_id);
        let b = bytes as f64;
        let tf = self.mgr.record(&self.map, QuotaType::Fetch, u, c, b);
        let t = self.finish(None, tf);
        if t > 0 {
            self.mgr.unrecord(&self.map, QuotaType::Fetch, u, c, b);
        }
        t
    }

    /// Before the response is encoded: records `produce_bytes` (a Produce request's size) and
    /// the handler's time; returns the larger throttle of the two and `other` (a fetch's), and
    /// counts it.
    pub fn finish(&self, produce_bytes: Option<usize>, other: u64) -> i32 {
        let (u, c) = (&self.user, &self.client_id);
        let mut t = other;
        if let Some(b) = produce_bytes {
            t = t.max(
                self.mgr
                    .record(&self.map, QuotaType::Produce, u, c, b as f64),
            );
        }
        if let Some(m) = &self.meter {
            // Kafka's nanosToPercentagePerSecond: the rate per second is a percentage
            let pct = m.busy().as_nanos() as f64 * 100.0 / 1e9;
            t = t.max(self.mgr.record(&self.map, QuotaType::Request, u, c, pct));
        }
        if t > 0 {
            self.mgr.throttled_total.fetch_add(1, Ordering::Relaxed);
            self.mgr.throttle_ms_total.fetch_add(t, Ordering::Relaxed);
        }
        t.min(i32::MAX as u64) as i32
    }
}

/// Time a handler spent in `poll` (its own work on this shard, not its waits).
#[derive(Default)]
pub struct BusyMeter {
    total: Cell<Duration>,
    since: Cell<Option<Instant>>,
}

impl BusyMeter {
    /// So far, the poll in progress included.
    pub fn busy(&self) -> Duration {
        self.total.get() + self.since.get().map_or(Duration::ZERO, |s| s.elapsed())
    }
}

/// A future whose poll time goes to a [`BusyMeter`].
pub struct Busy<F> {
    inner: Pin<Box<F>>,
    meter: Rc<BusyMeter>,
}

impl<F: Future> Busy<F> {
    pub fn new(inner: F, meter: Rc<BusyMeter>) -> Self {
        Busy {
            inner: Box::pin(inner),
            meter,
        }
    }
}

impl<F: Future> Future for Busy<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let start = Instant::now();
        self.meter.since.set(Some(start));
        let r = self.inner.as_mut().poll(cx);
        self.meter.since.set(None);
        self.meter
            .total
            .set(self.meter.total.get() + start.elapsed());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(c: &str) -> Entity {
        Entity {
            user: None,
            client_id: Some(Name::Named(c.into())),
        }
    }

    #[test]
    fn no_quotas_no_charge_and_a_store_survives_reopening() {
        let dir = tempfile::tempdir().expect("tmp");
        let w = Windows::default();
        let m = QuotaManager::open(dir.path(), w).expect("open");
        assert!(m.begin("User:ANONYMOUS", "c").is_none());
        m.alter_local(&[(
            client("c"),
            vec![("producer_byte_rate".into(), Some(QuotaValue(1000.0)))],
        )])
        .expect("alter");
        let ch = m.begin("User:ANONYMOUS", "c").expect("charged");
        assert!(ch.meter().is_none(), "no request quota: no meter");
        // 20000 B in the first ms against 1000 B/s over 10 windows
        assert_eq!(ch.finish(Some(20_000), 0), 10_000);
        // another client is not limited: nothing to charge
        assert!(m.begin("User:ANONYMOUS", "d").is_none());
        let again = QuotaManager::open(dir.path(), w).expect("reopen");
        assert_eq!(*again.current(), *m.current());
        let snap = m.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].client_id, "c");
        assert_eq!(snap[0].throttled, 1);
    }

    #[test]
    fn a_throttled_fetch_takes_its_bytes_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = QuotaManager::open(dir.path(), Windows::default()).expect("open");
        m.alter_local(&[(
            client("c"),
            vec![("consumer_byte_rate".into(), Some(QuotaValue(1000.0)))],
        )])
        .expect("alter");
        let ch = m.begin("User:ANONYMOUS", "c").expect("charged");
        assert_eq!(ch.finish_fetch(5000), 0);
        assert!(ch.finish_fetch(50_000) > 0);
        // the refused 50000 were not counted: 5000 more still fit
        assert_eq!(ch.finish_fetch(5000), 0);
    }
}
