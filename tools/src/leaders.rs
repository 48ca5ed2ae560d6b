//! Partition leaders of one topic, for the CLI's producer and consumer in a cluster: Metadata
//! names each partition's leader and the brokers' addresses; requests for a partition go to its
//! leader's connection. When a leader moves (NOT_LEADER_OR_FOLLOWER and friends, or its
//! connection is lost) the caller refreshes the metadata and retries, a bounded number of
//! times with a growing pause ([`MAX_ATTEMPTS`], [`backoff`]).
//!
//! A topic on a single broker (sluice's single-node mode, a one-broker Kafka) keeps using the
//! bootstrap connection for everything, as before: its advertised address may not even be
//! reachable from the client.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::client::{BrokerInfo, Client, ClientError, PartitionInfo};
use crate::conn;

/// Tries of one request (the first one included) before giving up. With [`backoff`] they span
/// about 15 s: more than a failover takes (the broker session timeout plus a heartbeat).
pub const MAX_ATTEMPTS: u32 = 10;

/// The pause before retry `attempt` (1-based): 100 ms doubling up to 2 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.min(5).saturating_sub(1)).min(2000))
}

/// Error codes after which a request goes to the (new) leader again: the partition moved, the
/// leader is being elected, or the broker's copy of the metadata is behind (Kafka's retriable
/// errors).
pub fn retriable(code: i16) -> bool {
    matches!(
        code,
        3   // UNKNOWN_TOPIC_OR_PARTITION
        | 5 // LEADER_NOT_AVAILABLE
        | 6 // NOT_LEADER_OR_FOLLOWER
        | 7 // REQUEST_TIMED_OUT
        | 19 // NOT_ENOUGH_REPLICAS
        | 20 // NOT_ENOUGH_REPLICAS_AFTER_APPEND
        | 56 // KAFKA_STORAGE_ERROR
        | 74 // FENCED_LEADER_EPOCH
        | 76 // UNKNOWN_LEADER_EPOCH
    )
}

/// Where the partitions of one topic lead, and a metadata connection.
pub struct Leaders {
    topic: String,
    client_id: String,
    meta: Client,
    brokers: BTreeMap<i32, BrokerInfo>,
    partitions: Vec<PartitionInfo>,
}

impl Leaders {
    /// Takes `meta` as the metadata connection and reads the topic's metadata.
    pub fn new(meta: Client, topic: &str, client_id: &str) -> Result<Leaders, ClientError> {
        let mut l = Leaders {
            topic: topic.to_string(),
            client_id: client_id.to_string(),
            meta,
            brokers: BTreeMap::new(),
            partitions: Vec::new(),
        };
        l.refresh()?;
        Ok(l)
    }

    /// Reads the metadata again; when the metadata connection is gone, reconnects to any broker
    /// known (the one it was connected to first).
    pub fn refresh(&mut self) -> Result<(), ClientError> {
        let topic = self.topic.clone();
        let got = match self.meta.metadata_with_brokers(Some(&[&topic])) {
            Ok(r) => r,
            Err(ClientError::Conn(first)) => {
                let mut addrs = vec![(self.meta.addr, self.meta.host().map(str::to_string))];
                for b in self.brokers.values() {
                    let host = b.address();
                    if let Ok(a) = conn::resolve(&host) {
                        if !addrs.iter().any(|(x, _)| *x == a) {
                            addrs.push((a, Some(host)));
                        }
                    }
                }
                let security = self.meta.security().clone();
                let mut last = ClientError::Conn(first);
                let mut found = None;
                for (a, host) in addrs {
                    match Client::connect_to(a, host.as_deref(), &self.client_id, &security)
                        .and_then(|mut c| c.metadata_with_brokers(Some(&[&topic])).map(|r| (c, r)))
                    {
                        Ok((c, r)) => {
                            self.meta = c;
                            found = Some(r);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                found.ok_or(last)?
            }
            Err(e) => return Err(e),
        };
        let (brokers, topics) = got;
        self.brokers = brokers.into_iter().map(|b| (b.id, b)).collect();
        if let Some(t) = topics.into_iter().find(|t| t.name == topic && t.error == 0) {
            self.partitions = t.partitions;
        }
        Ok(())
    }

    /// Only one broker: everything goes over the metadata (bootstrap) connection.
    pub fn single(&self) -> bool {
        self.brokers.len() <= 1
    }

    pub fn partitions(&self) -> &[PartitionInfo] {
        &self.partitions
    }

    /// The leader of `partition`, if it has one.
    pub fn leader(&self, partition: i32) -> Option<i32> {
        self.partitions
            .iter()
            .find(|p| p.partition == partition)
            .map(|p| p.leader)
            .filter(|l| *l >= 0)
    }

    /// host:port of broker `id`.
    pub fn address(&self, id: i32) -> Option<String> {
        self.brokers.get(&id).map(|b| b.address())
    }

    pub fn meta(&mut self) -> &mut Client {
        &mut self.meta
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Opens a connection (with ApiVersions) to broker `id`.
    pub fn connect(&self, id: i32) -> Result<Client, ClientError> {
        let addr = self
            .address(id)
            .ok_or_else(|| ClientError::GaveUp(format!("broker {id} is not in the metadata")))?;
        self.meta.open(&addr, &self.client_id)
    }

    /// `partitions` grouped by leader; those without a leader under -1.
    pub fn by_leader(&self, partitions: impl IntoIterator<Item = i32>) -> BTreeMap<i32, Vec<i32>> {
        let mut out: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in partitions {
            out.entry(self.leader(p).unwrap_or(-1)).or_default().push(p);
        }
        out
    }
}

/// Connections to the partition leaders of one topic, for one-request-at-a-time calls (fetch,
/// list offsets).
pub struct Router {
    pub leaders: Leaders,
    conns: BTreeMap<i32, Client>,
    /// Failed rounds in a row (reset by a round without a retriable failure).
    failures: u32,
    /// What went wrong last, for the final error.
    last_failure: String,
}

impl Router {
    pub fn new(leaders: Leaders) -> Router {
        Router {
            leaders,
            conns: BTreeMap::new(),
            failures: 0,
            last_failure: String::new(),
        }
    }

    pub fn single(&self) -> bool {
        self.leaders.single()
    }

    /// The connection to broker `id` (opened on first use).
    pub fn client(&mut self, id: i32) -> Result<&mut Client, ClientError> {
        if !self.conns.contains_key(&id) {
            let c = self.leaders.connect(id)?;
            self.conns.insert(id, c);
        }
        self.conns
            .get_mut(&id)
            .ok_or_else(|| ClientError::GaveUp(format!("no connection to broker {id}")))
    }

    /// Forgets broker `id`'s connection (it failed).
    pub fn drop_client(&mut self, id: i32) {
        self.conns.remove(&id);
    }

    /// A round had a retriable failure: pauses, refreshes the metadata and returns Ok while
    /// attempts are left, else the one-line error.
    pub fn failed(&mut self, what: String) -> Result<(), String> {
        self.failures += 1;
        self.last_failure = what;
        if self.failures >= MAX_ATTEMPTS {
            return Err(format!(
                "{} (gave up after {} attempts)",
                self.last_failure, self.failures
            ));
        }
        std::thread::sleep(backoff(self.failures));
        if let Err(e) = self.leaders.refresh() {
            self.last_failure = format!("{}; metadata: {e}", self.last_failure);
        }
        Ok(())
    }

    /// A round went through.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// ListOffsets of `partitions` at `timestamp`, each asked of its leader.
    pub fn list_offsets(
        &mut self,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<Vec<(i32, i64)>, ClientError> {
        let topic = self.leaders.topic().to_string();
        if self.single() {
            return self
                .leaders
                .meta()
                .list_offsets(&topic, partitions, timestamp);
        }
        let mut out = Vec::with_capacity(partitions.len());
        let mut left: Vec<i32> = partitions.to_vec();
        loop {
            let mut failed: Option<String> = None;
            let mut retry = Vec::new();
            for (leader, ps) in self.leaders.by_leader(left.iter().copied()) {
                if leader < 0 {
                    failed = Some(format!("{topic}-{}: no leader", ps[0]));
                    retry.extend(ps);
                    continue;
                }
                let r = self
                    .client(leader)
                    .and_then(|c| c.list_offsets(&topic, &ps, timestamp));
                match r {
                    Ok(v) => out.extend(v),
                    Err(ClientError::Kafka {
                        code, what, name, ..
                    }) if retriable(code) => {
                        failed = Some(format!("{what}: {name} (error code {code})"));
                        retry.extend(ps);
                    }
                    Err(ClientError::Conn(e)) => {
                        self.drop_client(leader);
                        failed = Some(format!("list offsets of {topic} on broker {leader}: {e}"));
                        retry.extend(ps);
                    }
                    Err(e) => return Err(e),
                }
            }
            match failed {
                None => {
                    self.succeeded();
                    out.sort_by_key(|(p, _)| partitions.iter().position(|x| x == p));
                    return Ok(out);
                }
                Some(what) => {
                    self.failed(what).map_err(ClientError::GaveUp)?;
                    left = retry;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let total: Duration = (1..MAX_ATTEMPTS).map(backoff).sum();
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(9), Duration::from_millis(1600));
        assert!(total >= Duration::from_secs(8), "{total:?}");
        assert!(total <= Duration::from_secs(20), "{total:?}");
    }

    #[test]
    fn leader_moves_are_retriable_and_bad_requests_are_not() {
        assert!(retriable(6) && retriable(5) && retriable(74));
        assert!(retriable(3), "a broker whose image lags");
        assert!(!retriable(0) && !retriable(10) && !retriable(87));
    }
}
