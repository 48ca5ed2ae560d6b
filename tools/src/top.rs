//! Live numbers of a broker for `sluice top`: per topic its partitions, summed log end offsets
//! and stored bytes; per consumer group the lag report of `sluice group describe`
//! ([`describe_group_lag`]); and the rates between two samples ([`frame`]).
//!
//! Everything goes through the calls the other commands use: Metadata
//! ([`Client::cluster_metadata`]), ListOffsets ([`Client::log_end_offsets`], the log end offsets
//! `group describe` compares with), DescribeLogDirs ([`Client::describe_log_dirs`], what
//! `log-dirs` prints) and the group calls. In a cluster the log dirs and group lists of every
//! broker are read (each broker knows only its own replicas and the groups it coordinates); a
//! partition's stored size is its leader's copy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::admin::{ClusterMetadata, LogDir};
use crate::client::{error_name, Client, ClientError};
use crate::groups::{describe_group_lag, GroupLag, LagRow};

/// UNKNOWN_TOPIC_OR_PARTITION
const UNKNOWN_TOPIC: i16 = 3;

/// What to watch.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    /// Only these topics (empty: every topic).
    pub topics: Vec<String>,
    /// Only these groups (empty: every group the brokers list).
    pub groups: Vec<String>,
    /// With every topic: also the internal ones (`__consumer_offsets`, ...).
    pub include_internal: bool,
}

/// One topic at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TopicSample {
    pub topic: String,
    pub partitions: usize,
    /// Log end offset by partition (those that could be listed).
    pub end_offsets: BTreeMap<i32, i64>,
    /// Bytes stored by partition (the leader's copy; those some broker reported).
    pub sizes: BTreeMap<i32, i64>,
}

impl TopicSample {
    /// The log end offsets summed, when every partition's is known.
    pub fn end_offset(&self) -> Option<i64> {
        self.total(&self.end_offsets)
    }

    /// The bytes stored, when every partition's size is known.
    pub fn bytes(&self) -> Option<i64> {
        self.total(&self.sizes)
    }

    fn total(&self, m: &BTreeMap<i32, i64>) -> Option<i64> {
        (self.partitions > 0 && m.len() == self.partitions).then(|| m.values().sum())
    }
}

/// The numbers of one refresh.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Wall clock, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// When the log end offsets were listed.
    pub offsets_at: Instant,
    /// When the log dirs were described.
    pub sizes_at: Instant,
    pub topics: Vec<TopicSample>,
    pub groups: Vec<GroupLag>,
    /// What could not be read this time (a broker of a cluster that is down, a refused call).
    pub errors: Vec<String>,
}

/// Reads [`Sample`]s over long-lived connections: the bootstrap connection, one per other
/// broker of a cluster, and one per group coordinator.
pub struct Sampler {
    bootstrap: Client,
    client_id: String,
    watch: Watch,
    /// Other brokers of a cluster, by id.
    brokers: BTreeMap<i32, Client>,
    /// Group coordinator connections by address, and which one each group uses.
    coordinators: BTreeMap<SocketAddr, Client>,
    coordinator_of: BTreeMap<String, SocketAddr>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Sampler {
    pub fn new(bootstrap: Client, client_id: &str, watch: Watch) -> Sampler {
        Sampler {
            bootstrap,
            client_id: client_id.to_string(),
            watch,
            brokers: BTreeMap::new(),
            coordinators: BTreeMap::new(),
            coordinator_of: BTreeMap::new(),
        }
    }

    /// The bootstrap broker's address.
    pub fn addr(&self) -> SocketAddr {
        self.bootstrap.addr
    }

    /// Opens the bootstrap connection again (after a connection error), dropping every other
    /// connection.
    pub fn reconnect(&mut self) -> Result<(), ClientError> {
        self.bootstrap = self.bootstrap.reopen(&self.client_id)?;
        self.brokers.clear();
        self.coordinators.clear();
        self.coordinator_of.clear();
        Ok(())
    }

    /// One refresh. A connection error on the bootstrap connection is returned; what fails
    /// elsewhere (another broker, a group's coordinator, a refused call) is noted in
    /// [`Sample::errors`].
    pub fn sample(&mut self) -> Result<Sample, ClientError> {
        let mut errors = Vec::new();
        let md = self.bootstrap.cluster_metadata(None)?;
        let view = View::of(&md, self.bootstrap.addr);
        let topics = self.topics(&md, &mut errors);
        let parts: BTreeSet<(String, i32)> = topics
            .iter()
            .flat_map(|(t, n)| (0..*n as i32).map(move |p| (t.clone(), p)))
            .collect();
        let offsets_at = Instant::now();
        let mut ends = self.end_offsets(&md, &view, &parts, &mut errors)?;
        let sizes_at = Instant::now();
        let sizes = self.sizes(&md, &view, &mut errors)?;
        let topics = topics
            .into_iter()
            .map(|(topic, partitions)| {
                let of = |m: &BTreeMap<(String, i32), i64>| -> BTreeMap<i32, i64> {
                    (0..partitions as i32)
                        .filter_map(|p| m.get(&(topic.clone(), p)).map(|v| (p, *v)))
                        .collect()
                };
                TopicSample {
                    end_offsets: of(&ends),
                    sizes: of(&sizes),
                    topic,
                    partitions,
                }
            })
            .collect();
        let mut groups = self.groups(&md, &view, &mut errors)?;
        if view.cluster {
            // lag against the same leaders' end offsets as this frame's topic rows (one
            // consistent sample, not a second ListOffsets round a moment later)
            let missing: BTreeSet<(String, i32)> = groups
                .iter()
                .flat_map(|g| &g.rows)
                .filter_map(|r| Some((r.topic.clone()?, r.partition?)))
                .filter(|tp| !ends.contains_key(tp))
                .collect();
            let more = self.end_offsets(&md, &view, &missing, &mut errors)?;
            ends.extend(more);
            for r in groups.iter_mut().flat_map(|g| g.rows.iter_mut()) {
                if let (Some(t), Some(p)) = (&r.topic, r.partition) {
                    r.log_end_offset = ends.get(&(t.clone(), p)).copied();
                    r.lag = match (r.current_offset, r.log_end_offset) {
                        (Some(c), Some(e)) => Some((e - c).max(0)),
                        _ => None,
                    };
                }
            }
        }
        let mut seen = BTreeSet::new();
        errors.retain(|e| seen.insert(e.clone()));
        Ok(Sample {
            time_ms: now_ms(),
            offsets_at,
            sizes_at,
            topics,
            groups,
            errors,
        })
    }

    /// The watched topics with their partition counts, by name.
    fn topics(&self, md: &ClusterMetadata, errors: &mut Vec<String>) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let named = !self.watch.topics.is_empty();
        for name in &self.watch.topics {
            if !md.topics.iter().any(|t| &t.name == name) {
                errors.push(format!("topic '{name}' does not exist"));
            }
        }
        for t in &md.topics {
            if named && !self.watch.topics.contains(&t.name) {
                continue;
            }
            match t.error_code {
                0 => {}
                UNKNOWN_TOPIC => {
                    errors.push(format!("topic '{}' does not exist", t.name));
                    continue;
                }
                code => {
                    errors.push(format!(
                        "topic '{}': {} (error code {code})",
                        t.name,
                        error_name(code)
                    ));
                    continue;
                }
            }
            let internal = t.internal || t.name.starts_with("__");
            if !named && internal && !self.watch.include_internal {
                continue;
            }
            out.push((t.name.clone(), t.partitions.len()));
        }
        out.sort();
        out
    }

    /// Runs `call` on broker `id`: over the bootstrap connection when it is that broker (a
    /// connection error there is returned as the outer error), else over the broker's own
    /// connection, opened when first needed and dropped after a connection error (its errors
    /// are the inner one, as text).
    fn on_broker<T>(
        &mut self,
        md: &ClusterMetadata,
        view: &View,
        id: i32,
        call: impl FnOnce(&mut Client) -> Result<T, ClientError>,
    ) -> Result<Result<T, String>, ClientError> {
        if view.own == Some(id) || !view.cluster {
            return match call(&mut self.bootstrap) {
                Ok(v) => Ok(Ok(v)),
                Err(ClientError::Conn(e)) => Err(ClientError::Conn(e)),
                Err(e) => Ok(Err(e.to_string())),
            };
        }
        if !self.brokers.contains_key(&id) {
            let Some(b) = md.brokers.iter().find(|b| b.id == id) else {
                return Ok(Err(format!("broker {id} is not in the metadata")));
            };
            let target = format!("{}:{}", b.host, b.port);
            match self.bootstrap.open(&target, &self.client_id) {
                Ok(c) => {
                    self.brokers.insert(id, c);
                }
                Err(e) => return Ok(Err(format!("broker {id} ({target}): {e}"))),
            }
        }
        let Some(c) = self.brokers.get_mut(&id) else {
            return Ok(Err(format!("no connection to broker {id}")));
        };
        match call(c) {
            Ok(v) => Ok(Ok(v)),
            Err(e) => {
                if matches!(e, ClientError::Conn(_)) {
                    self.brokers.remove(&id);
                }
                Ok(Err(format!("broker {id}: {e}")))
            }
        }
    }

    /// Log end offsets of `parts`: on a single broker [`Client::log_end_offsets`] (what
    /// `group describe` compares with); in a cluster each partition's leader is asked.
    fn end_offsets(
        &mut self,
        md: &ClusterMetadata,
        view: &View,
        parts: &BTreeSet<(String, i32)>,
        errors: &mut Vec<String>,
    ) -> Result<BTreeMap<(String, i32), i64>, ClientError> {
        if parts.is_empty() {
            return Ok(BTreeMap::new());
        }
        if !view.cluster {
            return match self.bootstrap.log_end_offsets(parts) {
                Ok(e) => Ok(e),
                Err(ClientError::Conn(e)) => Err(ClientError::Conn(e)),
                Err(e) => {
                    errors.push(format!("listing log end offsets: {e}"));
                    Ok(BTreeMap::new())
                }
            };
        }
        let leaders = leaders(md);
        let mut by_leader: BTreeMap<i32, BTreeMap<&str, Vec<i32>>> = BTreeMap::new();
        for (t, p) in parts {
            match leaders.get(&(t.as_str(), *p)) {
                Some(l) if *l >= 0 => by_leader
                    .entry(*l)
                    .or_default()
                    .entry(t.as_str())
                    .or_default()
                    .push(*p),
                Some(_) => errors.push(format!("{t}-{p} has no leader")),
                None => {} // the topic is gone
            }
        }
        let mut out = BTreeMap::new();
        for (leader, topics) in by_leader {
            for (t, ps) in topics {
                match self.on_broker(md, view, leader, |c| c.list_offsets(t, &ps, -1))? {
                    Ok(v) => out.extend(v.into_iter().map(|(p, o)| ((t.to_string(), p), o))),
                    Err(e) => errors.push(format!("listing log end offsets of {t}: {e}")),
                }
            }
        }
        Ok(out)
    }

    /// Stored bytes per (topic, partition): DescribeLogDirs of every broker, the leader's copy
    /// of each partition (or the largest copy reported, when the leader's is not).
    fn sizes(
        &mut self,
        md: &ClusterMetadata,
        view: &View,
        errors: &mut Vec<String>,
    ) -> Result<BTreeMap<(String, i32), i64>, ClientError> {
        let mut by_broker: Vec<(Option<i32>, Vec<LogDir>)> = Vec::new();
        for id in view.asked(md) {
            match self.on_broker(md, view, id, |c| c.describe_log_dirs(None))? {
                Ok(d) => by_broker.push((Some(id), d)),
                Err(e) => errors.push(format!("describing log dirs: {e}")),
            }
        }
        if md.brokers.is_empty() {
            match self.bootstrap.describe_log_dirs(None) {
                Ok(d) => by_broker.push((None, d)),
                Err(ClientError::Conn(e)) => return Err(ClientError::Conn(e)),
                Err(e) => errors.push(format!("describing log dirs: {e}")),
            }
        }
        let leaders = leaders(md);
        let mut out: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut from_leader: BTreeSet<(String, i32)> = BTreeSet::new();
        for (broker, dirs) in &by_broker {
            for d in dirs.iter().filter(|d| d.error_code == 0) {
                for t in &d.topics {
                    for p in t.partitions.iter().filter(|p| p.size >= 0) {
                        let key = (t.topic.clone(), p.partition);
                        let leads = broker.is_some()
                            && leaders.get(&(t.topic.as_str(), p.partition)).copied() == *broker;
                        if leads {
                            // a partition in two log dirs of its leader (a move) counts once
                            let first = from_leader.insert(key.clone());
                            let e = out.entry(key).or_insert(0);
                            *e = if first { p.size } else { (*e).max(p.size) };
                        } else if !from_leader.contains(&key) {
                            let e = out.entry(key).or_insert(0);
                            *e = (*e).max(p.size);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The watched groups' lag reports, in name order.
    fn groups(
        &mut self,
        md: &ClusterMetadata,
        view: &View,
        errors: &mut Vec<String>,
    ) -> Result<Vec<GroupLag>, ClientError> {
        let named = !self.watch.groups.is_empty();
        let names: BTreeSet<String> = if named {
            self.watch.groups.iter().cloned().collect()
        } else {
            // each broker lists the groups it coordinates
            let mut names = BTreeSet::new();
            let mut asked = view.asked(md);
            if asked.is_empty() {
                asked.push(-1); // no brokers in the metadata: the bootstrap one
            }
            for id in asked {
                match self.on_broker(md, view, id, |c| c.list_groups())? {
                    Ok(l) => names.extend(l.into_iter().map(|g| g.group)),
                    Err(e) => errors.push(format!("listing groups: {e}")),
                }
            }
            names
        };
        // connections of groups that are gone
        self.coordinator_of.retain(|g, _| names.contains(g));
        let used: BTreeSet<SocketAddr> = self.coordinator_of.values().copied().collect();
        self.coordinators.retain(|a, _| used.contains(a));
        let mut out = Vec::new();
        for group in &names {
            match self.group_lag(group) {
                Ok(Some(lag)) => out.push(lag),
                Ok(None) if named => {
                    errors.push(format!("consumer group '{group}' does not exist"))
                }
                Ok(None) => {} // deleted since it was listed
                Err(e) => {
                    // the coordinator is looked up again next time (it may have moved)
                    if let Some(a) = self.coordinator_of.remove(group) {
                        if matches!(e, ClientError::Conn(_)) {
                            self.coordinators.remove(&a);
                        }
                    }
                    errors.push(format!("describing group '{group}': {e}"));
                }
            }
        }
        Ok(out)
    }

    /// [`describe_group_lag`] over the group's (cached) coordinator connection.
    fn group_lag(&mut self, group: &str) -> Result<Option<GroupLag>, ClientError> {
        let addr = match self.coordinator_of.get(group) {
            Some(a) => *a,
            None => {
                let c = self.bootstrap.group_coordinator(group, &self.client_id)?;
                let a = c.addr;
                self.coordinators.entry(a).or_insert(c);
                self.coordinator_of.insert(group.to_string(), a);
                a
            }
        };
        let coordinator = self
            .coordinators
            .get_mut(&addr)
            .ok_or_else(|| ClientError::GaveUp(format!("no connection to {addr}")))?;
        describe_group_lag(&mut self.bootstrap, coordinator, group)
    }
}

/// How the brokers of one metadata answer are reached.
struct View {
    /// More than one broker.
    cluster: bool,
    /// The id of the bootstrap broker (the one whose address it is), when known.
    own: Option<i32>,
}

impl View {
    fn of(md: &ClusterMetadata, bootstrap: SocketAddr) -> View {
        let cluster = md.brokers.len() > 1;
        let own = if cluster {
            md.brokers
                .iter()
                .find(|b| {
                    crate::conn::resolve(&format!("{}:{}", b.host, b.port))
                        .is_ok_and(|a| a == bootstrap)
                })
                .map(|b| b.id)
        } else {
            md.brokers.first().map(|b| b.id)
        };
        View { cluster, own }
    }

    /// The brokers whose log dirs and groups are read: every broker.
    fn asked(&self, md: &ClusterMetadata) -> Vec<i32> {
        md.brokers.iter().map(|b| b.id).collect()
    }
}

/// The leader of every partition, by (topic, partition).
fn leaders(md: &ClusterMetadata) -> BTreeMap<(&str, i32), i32> {
    md.topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| ((t.name.as_str(), p.partition), p.leader))
        })
        .collect()
}

/// One topic's row of a frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicRow {
    pub topic: String,
    pub partitions: usize,
    /// Summed log end offsets (`None` unless every partition's is known).
    pub end_offset: Option<i64>,
    /// Messages per second since the previous refresh: the growth of the summed end offsets
    /// of the partitions known both times. `None` on the first refresh, for a new topic, or
    /// when an offset went back (the topic was made again).
    pub messages_per_sec: Option<f64>,
    /// Bytes stored (`None` unless every partition's size is known).
    pub bytes: Option<i64>,
    /// Growth of the bytes stored per second since the previous refresh (negative when
    /// retention deleted segments).
    pub bytes_per_sec: Option<f64>,
}

/// One group's row of a frame: `sluice group describe`'s numbers, summed.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    pub group: String,
    pub state: String,
    pub members: usize,
    /// Summed over the partitions whose lag is known; `None` when none is.
    pub lag: Option<i64>,
    /// Per partition (only when asked for): the rows of `sluice group describe`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<LagRow>>,
}

/// What one refresh shows.
#[derive(Debug, Clone, Serialize)]
pub struct Frame {
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Seconds since the previous refresh's offsets (`None` on the first).
    pub interval_s: Option<f64>,
    pub topics: Vec<TopicRow>,
    pub groups: Vec<GroupRow>,
    pub errors: Vec<String>,
}

/// The growth per second of the partitions known both `before` and `now`; `None` when none
/// is or `seconds` is not positive.
fn per_sec(before: &BTreeMap<i32, i64>, now: &BTreeMap<i32, i64>, seconds: f64) -> Option<f64> {
    let deltas: Vec<i64> = now
        .iter()
        .filter_map(|(p, n)| before.get(p).map(|b| n - b))
        .collect();
    (seconds > 0.0 && !deltas.is_empty()).then(|| deltas.iter().sum::<i64>() as f64 / seconds)
}

/// The frame of `cur`, with rates against `prev` (the refresh before). `per_partition`: keep
/// each group's per-partition rows.
pub fn frame(prev: Option<&Sample>, cur: &Sample, per_partition: bool) -> Frame {
    let secs = |f: fn(&Sample) -> Instant| {
        prev.map(|p| f(cur).saturating_duration_since(f(p)).as_secs_f64())
    };
    let offsets_s = secs(|s| s.offsets_at);
    let sizes_s = secs(|s| s.sizes_at).unwrap_or(0.0);
    let topics = cur
        .topics
        .iter()
        .map(|t| {
            let before = prev.and_then(|p| p.topics.iter().find(|x| x.topic == t.topic));
            let went_back = before.is_some_and(|b| {
                t.end_offsets
                    .iter()
                    .any(|(p, n)| b.end_offsets.get(p).is_some_and(|o| n < o))
            });
            TopicRow {
                topic: t.topic.clone(),
                partitions: t.partitions,
                end_offset: t.end_offset(),
                messages_per_sec: before.filter(|_| !went_back).and_then(|b| {
                    per_sec(&b.end_offsets, &t.end_offsets, offsets_s.unwrap_or(0.0))
                }),
                bytes: t.bytes(),
                bytes_per_sec: before.and_then(|b| per_sec(&b.sizes, &t.sizes, sizes_s)),
            }
        })
        .collect();
    let groups = cur
        .groups
        .iter()
        .map(|g| {
            let lags: Vec<i64> = g.rows.iter().filter_map(|r| r.lag).collect();
            GroupRow {
                group: g.group.clone(),
                state: g.state.clone(),
                members: g.members.len(),
                lag: (!lags.is_empty()).then(|| lags.iter().sum()),
                partitions: per_partition.then(|| {
                    g.rows
                        .iter()
                        .filter(|r| r.partition.is_some())
                        .cloned()
                        .collect()
                }),
            }
        })
        .collect();
    Frame {
        time_ms: cur.time_ms,
        interval_s: offsets_s,
        topics,
        groups,
        errors: cur.errors.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Topics of two partitions: (name, end offsets, sizes), -1 for unknown.
    fn sample(at: Instant, topics: &[(&str, [i64; 2], [i64; 2])]) -> Sample {
        let known = |v: &[i64; 2]| -> BTreeMap<i32, i64> {
            (0..2)
                .filter(|p| v[*p] >= 0)
                .map(|p| (p as i32, v[p]))
                .collect()
        };
        Sample {
            time_ms: 0,
            offsets_at: at,
            sizes_at: at,
            topics: topics
                .iter()
                .map(|(t, e, b)| TopicSample {
                    topic: t.to_string(),
                    partitions: 2,
                    end_offsets: known(e),
                    sizes: known(b),
                })
                .collect(),
            groups: Vec::new(),
            errors: Vec::new(),
        }
    }

    #[test]
    fn rates_are_deltas_over_the_elapsed_time() {
        let t0 = Instant::now();
        let a = sample(
            t0,
            &[
                ("t", [60, 40], [600, 400]),
                ("gone", [5, 0], [-1, -1]),
                ("partial", [10, 10], [1, 1]),
            ],
        );
        let b = sample(
            t0 + Duration::from_millis(500),
            &[
                ("t", [100, 50], [500, 400]),
                ("new", [7, 0], [70, 0]),
                ("unknown", [-1, -1], [-1, -1]),
                ("partial", [-1, 30], [1, -1]),
            ],
        );
        let first = frame(None, &a, false);
        assert_eq!(first.interval_s, None);
        assert!(first.topics.iter().all(|t| t.messages_per_sec.is_none()));
        let f = frame(Some(&a), &b, false);
        assert_eq!(f.interval_s, Some(0.5));
        let t = &f.topics[0];
        assert_eq!((t.end_offset, t.messages_per_sec), (Some(150), Some(100.0)));
        // stored bytes may shrink (retention)
        assert_eq!((t.bytes, t.bytes_per_sec), (Some(900), Some(-200.0)));
        assert_eq!(f.topics[1].messages_per_sec, None, "new topic");
        assert_eq!(f.topics[2].messages_per_sec, None);
        // a partition that could not be listed: no total, the rate of the others
        let p = &f.topics[3];
        assert_eq!((p.end_offset, p.messages_per_sec), (None, Some(40.0)));
        assert_eq!((p.bytes, p.bytes_per_sec), (None, Some(0.0)));
    }

    #[test]
    fn offsets_that_go_back_have_no_rate() {
        let t0 = Instant::now();
        let a = sample(t0, &[("t", [100, 0], [-1, -1])]);
        let b = sample(t0 + Duration::from_secs(1), &[("t", [3, 5], [-1, -1])]);
        assert_eq!(frame(Some(&a), &b, false).topics[0].messages_per_sec, None);
    }

    #[test]
    fn group_lag_is_summed_over_known_rows() {
        let row = |p: Option<i32>, lag: Option<i64>| LagRow {
            group: "g".into(),
            topic: p.map(|_| "t".into()),
            partition: p,
            current_offset: None,
            log_end_offset: None,
            lag,
            consumer_id: None,
            host: None,
            client_id: None,
        };
        let mut s = sample(Instant::now(), &[]);
        s.groups.push(GroupLag {
            group: "g".into(),
            state: "Empty".into(),
            protocol: String::new(),
            members: Vec::new(),
            rows: vec![
                row(Some(0), Some(3)),
                row(Some(1), None),
                row(Some(2), Some(4)),
                row(None, None),
            ],
        });
        let f = frame(None, &s, true);
        assert_eq!(f.groups[0].lag, Some(7));
        assert_eq!(f.groups[0].partitions.as_ref().map(Vec::len), Some(3));
        assert!(frame(None, &s, false).groups[0].partitions.is_none());
    }
}
