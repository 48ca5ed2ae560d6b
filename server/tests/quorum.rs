//! The metadata quorum: deterministic tests of the sans-IO core (several cores, one message pump,
//! no threads or sockets), then real nodes on threads and TCP on 127.0.0.1.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_server::cluster::quorum::core::{Core, CoreConfig, Token};
use sluice_server::cluster::quorum::{
    rpc_call, NodeId, Proposed, Quorum, QuorumConfig, QuorumError, RpcHandler, StateMachine,
};

/// What a test state machine holds, shared with the test so it can look inside.
#[derive(Default)]
struct View {
    items: Vec<Vec<u8>>,
    restores: usize,
    last_index: u64,
}

/// Appends every command to a list and replies with the list's new length.
struct ListSm(Arc<Mutex<View>>);

impl StateMachine for ListSm {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        let mut v = self.0.lock().expect("view lock");
        assert!(
            index > v.last_index,
            "index {index} applied after {}",
            v.last_index
        );
        v.last_index = index;
        v.items.push(command.to_vec());
        (v.items.len() as u64).to_be_bytes().to_vec()
    }

    fn snapshot(&self) -> Vec<u8> {
        let v = self.0.lock().expect("view lock");
        let mut out = Vec::new();
        for it in &v.items {
            out.extend_from_slice(&(it.len() as u32).to_be_bytes());
            out.extend_from_slice(it);
        }
        out
    }

    fn restore(&mut self, index: u64, mut snap: &[u8]) -> Result<(), String> {
        let mut items = Vec::new();
        while !snap.is_empty() {
            if snap.len() < 4 {
                return Err("short length".into());
            }
            let n = u32::from_be_bytes(snap[..4].try_into().expect("8 bytes")) as usize;
            if snap.len() < 4 + n {
                return Err("short item".into());
            }
            items.push(snap[4..4 + n].to_vec());
            snap = &snap[4 + n..];
        }
        let mut v = self.0.lock().expect("view lock");
        v.items = items;
        v.restores += 1;
        v.last_index = index;
        Ok(())
    }
}

fn reply_len(p: &Proposed) -> u64 {
    u64::from_be_bytes(p.reply.as_slice().try_into().expect("8 bytes"))
}

// ---------------------------------------------------------------------------------------------
// Deterministic: cores and a message pump

struct Sim {
    _tmp: tempfile::TempDir,
    dirs: Vec<PathBuf>,
    ids: Vec<NodeId>,
    cores: Vec<Option<Core>>,
    views: Vec<Arc<Mutex<View>>>,
    isolated: HashSet<NodeId>,
    done: HashMap<(NodeId, Token), Result<Proposed, QuorumError>>,
    snapshot_every: u64,
}

impl Sim {
    fn new(n: usize, snapshot_every: u64) -> Sim {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ids: Vec<NodeId> = (1..=n as u64).collect();
        let dirs: Vec<PathBuf> = ids
            .iter()
            .map(|i| tmp.path().join(format!("n{i}")))
            .collect();
        let mut sim = Sim {
            _tmp: tmp,
            dirs,
            ids: ids.clone(),
            cores: Vec::new(),
            views: Vec::new(),
            isolated: HashSet::new(),
            done: HashMap::new(),
            snapshot_every,
        };
        for i in 0..n {
            sim.views.push(Arc::default());
            sim.cores.push(None);
            sim.open(i);
        }
        sim
    }

    /// (Re)opens node `i` from its directory with a fresh state machine.
    fn open(&mut self, i: usize) {
        *self.views[i].lock().expect("view lock") = View::default();
        let cfg = CoreConfig {
            node_id: self.ids[i],
            voters: self.ids.clone(),
            dir: self.dirs[i].clone(),
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_every: self.snapshot_every,
        };
        self.cores[i] =
            Some(Core::open(cfg, Box::new(ListSm(self.views[i].clone()))).expect("open core"));
    }

    fn crash(&mut self, i: usize) {
        self.cores[i] = None;
    }

    fn core(&self, i: usize) -> &Core {
        self.cores[i].as_ref().expect("node is down")
    }

    fn core_mut(&mut self, i: usize) -> &mut Core {
        self.cores[i].as_mut().expect("node is down")
    }

    fn idx(&self, id: NodeId) -> usize {
        self.ids.iter().position(|&x| x == id).expect("known id")
    }

    /// Drains every live core and delivers the messages until no one has anything to say.
    fn pump(&mut self) {
        for _ in 0..1000 {
            let mut msgs = Vec::new();
            for c in self.cores.iter_mut().flatten() {
                let out = c.drain_ready().expect("drain_ready");
                let id = c.id();
                for done in out.completions {
                    self.done.insert((id, done.token), done.result);
                }
                msgs.extend(out.messages);
            }
            if msgs.is_empty() {
                return;
            }
            for m in msgs {
                let (from, to) = (m.from(), m.to());
                let snapshot = m.is_snapshot();
                let cut = self.isolated.contains(&from) || self.isolated.contains(&to);
                let ti = self.idx(to);
                let delivered = !cut && self.cores[ti].is_some();
                if delivered {
                    self.core_mut(ti).step(m);
                }
                if snapshot {
                    let fi = self.idx(from);
                    if let Some(c) = self.cores[fi].as_mut() {
                        c.report_snapshot(to, delivered);
                    }
                }
            }
        }
        panic!("the message pump did not settle");
    }

    /// One tick on every live core, then pump.
    fn round(&mut self) {
        for c in self.cores.iter_mut().flatten() {
            c.tick();
        }
        self.pump();
    }

    fn rounds_until(&mut self, max: usize, what: &str, f: impl Fn(&Sim) -> bool) {
        for _ in 0..max {
            if f(self) {
                return;
            }
            self.round();
        }
        assert!(f(self), "not within {max} rounds: {what}");
    }

    /// The leader among the live, connected nodes, if exactly one claims it.
    fn leader(&self) -> Option<usize> {
        let l: Vec<usize> = (0..self.cores.len())
            .filter(|&i| {
                self.cores[i].as_ref().is_some_and(|c| c.is_leader())
                    && !self.isolated.contains(&self.ids[i])
            })
            .collect();
        (l.len() == 1).then(|| l[0])
    }

    fn elect(&mut self) -> usize {
        self.rounds_until(200, "a leader is elected", |s| s.leader().is_some());
        self.leader().expect("leader")
    }

    fn propose(&mut self, i: usize, cmd: &[u8]) -> Token {
        let (token, _) = self
            .core_mut(i)
            .propose(cmd.to_vec(), None)
            .expect("propose");
        token
    }

    fn result(&self, i: usize, token: Token) -> Option<&Result<Proposed, QuorumError>> {
        self.done.get(&(self.ids[i], token))
    }

    fn items(&self, i: usize) -> Vec<Vec<u8>> {
        self.views[i].lock().expect("view lock").items.clone()
    }

    fn all_applied(&self, index: u64) -> bool {
        self.cores
            .iter()
            .flatten()
            .all(|c| c.applied_index() >= index)
    }
}

fn cmd(i: usize) -> Vec<u8> {
    format!("cmd-{i}").into_bytes()
}

#[test]
fn core_elects_a_leader_and_applies_in_the_same_order_everywhere() {
    let mut sim = Sim::new(3, 0);
    let l = sim.elect();
    let term = sim.core(l).term();
    for i in 0..3 {
        assert_eq!(
            sim.core(i).leader_id(),
            Some(sim.ids[l]),
            "node {i} knows the leader"
        );
        assert_eq!(sim.core(i).term(), term);
    }
    // proposals in batches: several per Ready, several Readies per round
    let mut tokens = Vec::new();
    for batch in 0..5 {
        for k in 0..4 {
            tokens.push(sim.propose(l, &cmd(batch * 4 + k)));
        }
        sim.pump();
    }
    let last = sim.core(l).last_index();
    sim.rounds_until(20, "all applied", |s| s.all_applied(last));
    let expect: Vec<Vec<u8>> = (0..20).map(cmd).collect();
    let mut prev_index = 0;
    for (n, t) in tokens.iter().enumerate() {
        let p = sim
            .result(l, *t)
            .expect("completed")
            .as_ref()
            .expect("committed");
        assert!(p.index > prev_index);
        prev_index = p.index;
        assert_eq!(
            reply_len(p),
            n as u64 + 1,
            "reply is the list length after it"
        );
    }
    for i in 0..3 {
        assert_eq!(
            sim.items(i),
            expect,
            "node {i} applied the same commands in order"
        );
        assert_eq!(sim.core(i).commit_index(), last);
    }
    // a follower refuses to propose and names the leader
    let f = (l + 1) % 3;
    match sim.core_mut(f).propose(b"x".to_vec(), None) {
        Err(QuorumError::NotLeader { leader }) => assert_eq!(leader, Some(sim.ids[l])),
        other => panic!("follower proposal: {other:?}"),
    }
}

#[test]
fn core_isolated_leader_steps_down_and_the_rest_go_on() {
    let mut sim = Sim::new(3, 0);
    let old = sim.elect();
    let old_id = sim.ids[old];
    let old_term = sim.core(old).term();
    for k in 0..3 {
        sim.propose(old, &cmd(k));
    }
    sim.pump();
    sim.rounds_until(10, "applied", |s| s.all_applied(s.core(old).last_index()));

    sim.isolated.insert(old_id);
    // a proposal on the isolated leader can never commit
    let lost = sim.propose(old, b"lost");
    sim.rounds_until(100, "the isolated leader steps down (check quorum)", |s| {
        !s.core(old).is_leader()
    });
    sim.rounds_until(100, "the others elect a new leader", |s| {
        s.leader().is_some()
    });
    let new = sim.leader().expect("new leader");
    assert_ne!(new, old);
    assert!(sim.core(new).term() > old_term);
    let mut tokens = Vec::new();
    for k in 3..8 {
        tokens.push(sim.propose(new, &cmd(k)));
    }
    sim.pump();
    let last = sim.core(new).last_index();
    sim.rounds_until(20, "the connected pair applies", |s| {
        (0..3)
            .filter(|&i| i != old)
            .all(|i| s.core(i).applied_index() >= last)
    });
    for t in &tokens {
        assert!(sim.result(new, *t).expect("completed").is_ok());
    }
    assert!(
        sim.result(old, lost).is_none(),
        "still pending while isolated"
    );

    // heal: the old leader rejoins as a follower (pre-vote: no disruption), its entry is replaced
    let term_before = sim.core(new).term();
    sim.isolated.clear();
    sim.rounds_until(50, "the old leader catches up", |s| s.all_applied(last));
    assert_eq!(
        sim.leader(),
        Some(new),
        "the rejoining node did not take over"
    );
    assert_eq!(
        sim.core(new).term(),
        term_before,
        "the rejoining node did not bump the term"
    );
    assert!(
        matches!(sim.result(old, lost), Some(Err(QuorumError::Dropped))),
        "the lost proposal fails instead of hanging: {:?}",
        sim.result(old, lost)
    );
    let expect: Vec<Vec<u8>> = (0..8).map(cmd).collect();
    for i in 0..3 {
        assert_eq!(sim.items(i), expect, "node {i}");
    }
}

#[test]
fn core_node_down_for_many_entries_catches_up_by_snapshot() {
    let mut sim = Sim::new(3, 5);
    let l = sim.elect();
    let down = (l + 1) % 3;
    sim.propose(l, &cmd(0));
    sim.pump();
    sim.rounds_until(10, "applied", |s| s.all_applied(s.core(l).last_index()));
    sim.crash(down);
    for k in 1..41 {
        sim.propose(l, &cmd(k));
        if k % 3 == 0 {
            sim.pump();
        }
    }
    sim.pump();
    let last = sim.core(l).last_index();
    sim.rounds_until(20, "the two live nodes apply", |s| s.all_applied(last));
    assert!(sim.core(l).snapshot_index() >= 35, "the leader snapshotted");
    sim.open(down);
    let down_last = sim.core(down).last_index();
    assert!(
        sim.core(l).first_index() > down_last + 1,
        "the leader compacted past what the returning node has ({} > {down_last} + 1)",
        sim.core(l).first_index()
    );
    sim.rounds_until(100, "the returning node catches up", |s| {
        s.all_applied(last)
    });
    assert!(
        sim.core(down).snapshots_restored() >= 1,
        "it was sent a snapshot"
    );
    assert!(sim.views[down].lock().expect("view lock").restores >= 1);
    let expect: Vec<Vec<u8>> = (0..41).map(cmd).collect();
    for i in 0..3 {
        assert_eq!(sim.items(i), expect, "node {i}");
    }
    // and it keeps up with new entries afterwards
    sim.propose(l, b"after");
    sim.pump();
    let last = sim.core(l).last_index();
    sim.rounds_until(20, "applied after", |s| s.all_applied(last));
    assert_eq!(sim.items(down).last().expect("items"), b"after");
}

#[test]
fn core_restart_from_disk_recovers_the_state_machine_exactly() {
    let mut sim = Sim::new(3, 7);
    let l = sim.elect();
    for k in 0..30 {
        sim.propose(l, &cmd(k));
        if k % 4 == 0 {
            sim.pump();
        }
    }
    sim.pump();
    let last = sim.core(l).last_index();
    // heartbeats bring every node's commit index up to the leader's
    sim.rounds_until(20, "all applied", |s| s.all_applied(last));
    let before: Vec<(Vec<Vec<u8>>, u64, u64)> = (0..3)
        .map(|i| {
            (
                sim.items(i),
                sim.core(i).applied_index(),
                sim.core(i).term(),
            )
        })
        .collect();
    for i in 0..3 {
        sim.crash(i);
    }
    for (i, (items, applied, term)) in before.into_iter().enumerate() {
        sim.open(i);
        // no network: the snapshot and the committed entries after it come from disk alone
        let c = sim.core_mut(i);
        let out = c.drain_ready().expect("drain_ready");
        assert!(out.completions.is_empty());
        assert_eq!(c.applied_index(), applied, "node {i} applied index");
        assert_eq!(c.term(), term, "node {i} term");
        assert_eq!(sim.items(i), items, "node {i} state machine");
        assert!(
            sim.views[i].lock().expect("view lock").restores >= 1,
            "node {i} started from its snapshot"
        );
    }
    // the cluster goes on
    let l = sim.elect();
    sim.propose(l, b"more");
    sim.pump();
    let last = sim.core(l).last_index();
    sim.rounds_until(20, "applied", |s| s.all_applied(last));
    for i in 0..3 {
        assert_eq!(sim.items(i).len(), 31);
    }
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).expect("stat").len()
}

#[test]
fn core_torn_log_tail_is_truncated_on_reopen() {
    let mut sim = Sim::new(1, 0);
    let l = sim.elect();
    for k in 0..5 {
        sim.propose(l, &cmd(k));
        sim.pump();
    }
    let last = sim.core(l).last_index();
    assert_eq!(sim.core(l).applied_index(), last);
    sim.crash(0);
    let log = sim.dirs[0].join("log");
    let good = file_len(&log);

    // a half-written record after the last one: cut off, nothing lost
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open log");
        f.write_all(&200u32.to_le_bytes()).expect("write");
        f.write_all(&[0xAB; 37]).expect("write");
    }
    sim.open(0);
    assert_eq!(file_len(&log), good, "the torn tail was truncated");
    sim.core_mut(0).drain_ready().expect("drain_ready");
    assert_eq!(sim.core(0).last_index(), last);
    assert_eq!(sim.items(0), (0..5).map(cmd).collect::<Vec<_>>());
    sim.crash(0);

    // the last entry itself torn (its last bytes never reached the disk): it is dropped
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .expect("open log");
    f.set_len(good - 3).expect("truncate");
    drop(f);
    sim.open(0);
    assert!(file_len(&log) < good - 3, "the torn entry was cut off");
    sim.core_mut(0).drain_ready().expect("drain_ready");
    assert_eq!(sim.core(0).last_index(), last - 1);
    assert_eq!(sim.items(0), (0..4).map(cmd).collect::<Vec<_>>());
    // and the log is appendable again
    let l = sim.elect();
    sim.propose(l, b"again");
    sim.pump();
    sim.rounds_until(20, "applied", |s| s.all_applied(s.core(0).last_index()));
    assert_eq!(sim.items(0).last().expect("items"), b"again");
    sim.crash(0);
    sim.open(0);
    sim.core_mut(0).drain_ready().expect("drain_ready");
    assert_eq!(sim.items(0).last().expect("items"), b"again");
}

#[test]
fn core_rejects_a_voter_set_that_differs_from_the_stored_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = |voters: Vec<u64>| CoreConfig {
        node_id: 1,
        voters,
        dir: tmp.path().to_path_buf(),
        election_ticks: 10,
        heartbeat_ticks: 2,
        snapshot_every: 0,
    };
    let v = Arc::new(Mutex::new(View::default()));
    drop(Core::open(cfg(vec![1, 2, 3]), Box::new(ListSm(v.clone()))).expect("open core"));
    assert!(matches!(
        Core::open(cfg(vec![1, 2]), Box::new(ListSm(v.clone()))),
        Err(QuorumError::Config(_))
    ));
    assert!(Core::open(cfg(vec![3, 2, 1]), Box::new(ListSm(v))).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Real nodes: threads and TCP on 127.0.0.1

struct Echo;

impl RpcHandler for Echo {
    fn handle(&self, request: &[u8]) -> Vec<u8> {
        let mut out = b"echo:".to_vec();
        out.extend_from_slice(request);
        out
    }
}

struct Node {
    id: NodeId,
    dir: PathBuf,
    view: Arc<Mutex<View>>,
    q: Option<Quorum>,
}

impl Node {
    fn q(&self) -> &Quorum {
        self.q.as_ref().expect("node is running")
    }
}

fn start_node(
    id: NodeId,
    voters: &[(NodeId, SocketAddr)],
    dir: &Path,
    listener: TcpListener,
    view: &Arc<Mutex<View>>,
) -> Quorum {
    *view.lock().expect("view lock") = View::default();
    let mut cfg = QuorumConfig::new(id, voters.to_vec(), dir.to_path_buf());
    cfg.listener = Some(listener);
    cfg.tick = Duration::from_millis(50);
    cfg.election_ticks = 10;
    cfg.heartbeat_ticks = 2;
    cfg.snapshot_every = 5;
    Quorum::start(cfg, Box::new(ListSm(view.clone())), Arc::new(Echo)).expect("start node")
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(f(), "not within {timeout:?}: {what}");
}

/// The peer closes the connection (rather than the read timing out).
fn assert_closed(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection is still open: {other:?}"),
    }
}

/// The node all running nodes agree is the leader.
fn agreed_leader(nodes: &[Node]) -> Option<NodeId> {
    let st: Vec<_> = nodes
        .iter()
        .filter_map(|n| n.q.as_ref())
        .map(|q| q.status())
        .collect();
    let leaders: Vec<_> = st.iter().filter(|s| s.is_leader).collect();
    if leaders.len() != 1 {
        return None;
    }
    let l = leaders[0].node_id;
    st.iter().all(|s| s.leader_id == Some(l)).then_some(l)
}

/// Proposes, retrying the errors that mean "try again" (as a caller would). A retry after a
/// timeout may apply the command twice (the first try's outcome is unknown): `ambiguous` is set.
fn propose_retrying(
    q: &Quorum,
    command: &[u8],
    timeout: Duration,
    ambiguous: &mut bool,
) -> Proposed {
    let until = Instant::now() + timeout;
    loop {
        match q.propose(command.to_vec(), Duration::from_secs(3)) {
            Ok(p) => return p,
            Err(e @ (QuorumError::NoLeader | QuorumError::Timeout | QuorumError::Dropped))
                if Instant::now() < until =>
            {
                eprintln!("retrying a proposal after: {e}");
                *ambiguous |= matches!(e, QuorumError::Timeout);
            }
            Err(e) => panic!("proposal failed: {e}"),
        }
    }
}

/// A node's applied commands; with `ambiguous` retries, only the first copy of each counts.
fn applied(n: &Node, ambiguous: bool) -> Vec<Vec<u8>> {
    let items = n.view.lock().expect("view lock").items.clone();
    if !ambiguous {
        return items;
    }
    let mut seen = HashSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

#[test]
fn tcp_cluster_elects_replicates_fails_over_and_catches_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let voters: Vec<(NodeId, SocketAddr)> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.local_addr().expect("local addr")))
        .collect();
    let mut nodes: Vec<Node> = Vec::new();
    let started = Instant::now();
    for (i, l) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let dir = tmp.path().join(format!("n{id}"));
        let view = Arc::new(Mutex::new(View::default()));
        let q = start_node(id, &voters, &dir, l, &view);
        nodes.push(Node {
            id,
            dir,
            view,
            q: Some(q),
        });
    }
    wait_until("a leader is elected", Duration::from_secs(10), || {
        agreed_leader(&nodes).is_some()
    });
    eprintln!("leader elected after {:?}", started.elapsed());
    let leader = agreed_leader(&nodes).expect("leader");
    let li = nodes
        .iter()
        .position(|n| n.id == leader)
        .expect("leader node");
    let fi = (li + 1) % 3;

    // propose from a follower: forwarded to the leader
    let mut expect = Vec::new();
    let q = nodes[fi].q().clone();
    let mut last = 0;
    for k in 0..8 {
        let p = q.propose(cmd(k), Duration::from_secs(5)).expect("propose");
        assert!(p.index > last);
        last = p.index;
        assert_eq!(reply_len(&p), k as u64 + 1);
        expect.push(cmd(k));
    }
    // and from the leader
    let p = nodes[li]
        .q()
        .propose(cmd(8), Duration::from_secs(5))
        .expect("propose");
    expect.push(cmd(8));
    last = p.index;
    for n in &nodes {
        n.q()
            .wait_applied(last, Duration::from_secs(5))
            .expect("wait_applied");
        assert_eq!(
            n.view.lock().expect("view lock").items,
            expect,
            "node {}",
            n.id
        );
    }

    // rpc_call reaches the handler
    let reply = rpc_call(voters[fi].1, b"ping", Duration::from_secs(2)).expect("rpc_call");
    assert_eq!(reply, b"echo:ping");

    // the leader sees every voter's matched index
    let lq = nodes[li].q().clone();
    wait_until(
        "the leader sees the followers' matched indexes",
        Duration::from_secs(5),
        || {
            let st = lq.status();
            st.voters.len() == 3
                && st.voters.iter().all(|v| {
                    v.matched_index.is_some_and(|m| m >= last)
                        && v.last_contact.is_some_and(|c| c < Duration::from_secs(2))
                })
        },
    );
    let st = lq.status();
    assert!(st.is_leader && st.commit_index >= last && st.applied_index >= last);
    let fst = q.status();
    assert!(!fst.is_leader && fst.leader_id == Some(leader));
    assert!(fst
        .voters
        .iter()
        .all(|v| v.matched_index.is_none() && v.last_contact.is_none()));

    // garbage on the transport closes that connection and harms nothing
    {
        let mut s = TcpStream::connect(voters[li].1).expect("connect");
        s.write_all(&[0xFF, 0xFF, 0xFF, 0xFF, 1]).expect("write"); // 4 GiB frame
        assert_closed(&mut s);
        let mut s = TcpStream::connect(voters[li].1).expect("connect");
        s.write_all(&[0, 0, 0, 3, 1, 0xFF, 0xFF, 0xFF])
            .expect("write"); // not a raft message
        assert_closed(&mut s);
        let mut s = TcpStream::connect(voters[li].1).expect("connect");
        s.write_all(&[0, 0, 0, 0, 77]).expect("write"); // unknown frame type
        assert_closed(&mut s);
    }

    // stop the leader: the others elect a new one and go on
    let stopped = Instant::now();
    nodes[li].q.take().expect("running").stop();
    wait_until("a new leader", Duration::from_secs(10), || {
        agreed_leader(&nodes).is_some_and(|l| l != leader)
    });
    eprintln!("new leader after {:?}", stopped.elapsed());
    let mut ambiguous = false;
    for k in 9..30 {
        let n = &nodes[if k % 2 == 0 {
            (li + 1) % 3
        } else {
            (li + 2) % 3
        }];
        let p = propose_retrying(n.q(), &cmd(k), Duration::from_secs(15), &mut ambiguous);
        expect.push(cmd(k));
        last = last.max(p.index);
    }
    for n in nodes.iter().filter(|n| n.q.is_some()) {
        n.q()
            .wait_applied(last, Duration::from_secs(5))
            .expect("wait_applied");
        assert_eq!(applied(n, ambiguous), expect, "node {}", n.id);
    }

    // restart the stopped node from its directory: it catches up (by snapshot: snapshot_every 5)
    let listener = TcpListener::bind(voters[li].1).expect("bind");
    let q = start_node(
        nodes[li].id,
        &voters,
        &nodes[li].dir.clone(),
        listener,
        &nodes[li].view.clone(),
    );
    nodes[li].q = Some(q.clone());
    q.wait_applied(last, Duration::from_secs(15))
        .expect("wait_applied");
    assert_eq!(applied(&nodes[li], ambiguous), expect, "restarted node");
    wait_until(
        "all three agree on the leader",
        Duration::from_secs(5),
        || agreed_leader(&nodes).is_some(),
    );
    let new_leader = agreed_leader(&nodes).expect("leader");
    // it takes part again: a proposal from it commits everywhere
    let p = propose_retrying(&q, b"last", Duration::from_secs(10), &mut ambiguous);
    expect.push(b"last".to_vec());
    for n in &nodes {
        n.q()
            .wait_applied(p.index, Duration::from_secs(5))
            .expect("wait_applied");
        assert_eq!(applied(n, ambiguous), expect, "node {}", n.id);
    }
    eprintln!("leaders: first {leader}, then {new_leader}");

    for n in &nodes {
        let q = n.q();
        let t0 = Instant::now();
        q.stop();
        // peers still send to it: its connection threads must notice the stop between frames
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "stop took {:?}",
            t0.elapsed()
        );
        q.stop(); // idempotent
        assert!(matches!(
            q.propose(b"x".to_vec(), Duration::from_millis(100)),
            Err(QuorumError::Stopped)
        ));
    }
    // the ports are free again
    for (_, a) in &voters {
        TcpListener::bind(a).expect("bind");
    }
}

#[test]
fn tcp_propose_without_a_quorum_times_out() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let voters: Vec<(NodeId, SocketAddr)> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.local_addr().expect("local addr")))
        .collect();
    // only node 1 runs: it can never be elected
    let l = listeners.into_iter().next().expect("listener");
    let view = Arc::new(Mutex::new(View::default()));
    let q = start_node(1, &voters, &tmp.path().join("n1"), l, &view);
    let t = Instant::now();
    let r = q.propose(b"x".to_vec(), Duration::from_millis(1500));
    assert!(matches!(r, Err(QuorumError::NoLeader)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(matches!(
        q.wait_applied(1, Duration::from_millis(200)),
        Err(QuorumError::Timeout)
    ));
    let st = q.status();
    assert_eq!(st.leader_id, None);
    // unreachable peers
    assert!(rpc_call(voters[1].1, b"x", Duration::from_millis(500)).is_err());
    let t = Instant::now();
    q.stop();
    assert!(t.elapsed() < Duration::from_secs(3), "stop is prompt");
}
