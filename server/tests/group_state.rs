//! The consumer group state machine driven step by step with explicit time: joins, syncs,
//! heartbeats, leaves, session expiry, stale generations, static members, fenced commits.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_server::group::state::{
    err, Group, GroupConfig, GroupState, JoinRequest, JoinResponse, Reply, SyncResponse,
};

const SESSION: Duration = Duration::from_secs(10);
const REBALANCE: Duration = Duration::from_secs(30);

fn req(member: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        member_id: member.to_string(),
        instance_id: instance.map(String::from),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: SESSION,
        rebalance_timeout: REBALANCE,
        protocol_type: "consumer".into(),
        protocols: vec![
            ("range".into(), Bytes::from_static(b"meta-range")),
            ("roundrobin".into(), Bytes::from_static(b"meta-rr")),
        ],
        require_known_member_id: true,
    }
}

fn joins(replies: &[Reply]) -> Vec<(u64, JoinResponse)> {
    replies
        .iter()
        .filter_map(|r| match r {
            Reply::Join(w, j) => Some((*w, j.clone())),
            _ => None,
        })
        .collect()
}

fn syncs(replies: &[Reply]) -> Vec<(u64, SyncResponse)> {
    replies
        .iter()
        .filter_map(|r| match r {
            Reply::Sync(w, s) => Some((*w, s.clone())),
            _ => None,
        })
        .collect()
}

/// Joins a new dynamic member (MEMBER_ID_REQUIRED round trip); returns its id and the replies
/// of the second join.
fn join_new(g: &mut Group, t: Instant, w: u64, cfg: &GroupConfig) -> (String, Vec<Reply>) {
    let r = g.join(req("", None), w, t, cfg);
    let j = joins(&r);
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].1.error, err::MEMBER_ID_REQUIRED);
    let id = j[0].1.member_id.clone();
    assert!(!id.is_empty());
    (id.clone(), g.join(req(&id, None), w + 1000, t, cfg))
}

#[test]
fn single_member_join_sync_heartbeat_leave() {
    let cfg = GroupConfig::default();
    let t = Instant::now();
    let mut g = Group::new("g");
    let (a, r) = join_new(&mut g, t, 1, &cfg);
    let j = joins(&r);
    assert_eq!(j.len(), 1);
    let resp = &j[0].1;
    assert_eq!((resp.error, resp.generation), (err::NONE, 1));
    assert_eq!(resp.leader, a);
    assert_eq!(resp.protocol_name.as_deref(), Some("range"));
    assert_eq!(resp.members.len(), 1, "the leader gets the member list");
    assert_eq!(g.state, GroupState::CompletingRebalance);
    let r = g.sync(
        &a,
        None,
        1,
        None,
        None,
        vec![(a.clone(), Bytes::from_static(b"A"))],
        2,
        t,
    );
    let s = syncs(&r);
    assert_eq!(s[0].1.assignment, Bytes::from_static(b"A"));
    assert_eq!(g.state, GroupState::Stable);
    assert_eq!(g.heartbeat(&a, None, 1, t), err::NONE);
    assert_eq!(g.heartbeat(&a, None, 0, t), err::ILLEGAL_GENERATION);
    assert_eq!(g.heartbeat("nobody", None, 1, t), err::UNKNOWN_MEMBER_ID);
    let (codes, _) = g.leave(&[(a.clone(), None)], t, &cfg);
    assert_eq!(codes, vec![err::NONE]);
    assert_eq!(g.state, GroupState::Empty);
    assert!(g.generation > 1);
}

#[test]
fn second_member_triggers_rebalance_and_followers_wait_for_leader() {
    let cfg = GroupConfig::default();
    let t = Instant::now();
    let mut g = Group::new("g");
    let (a, _) = join_new(&mut g, t, 1, &cfg);
    g.sync(
        &a,
        None,
        1,
        None,
        None,
        vec![(a.clone(), Bytes::from_static(b"A1"))],
        2,
        t,
    );
    // B arrives: A must rejoin
    let (b, r) = join_new(&mut g, t, 10, &cfg);
    assert!(joins(&r).is_empty(), "B waits for A to rejoin");
    assert_eq!(g.state, GroupState::PreparingRebalance);
    assert_eq!(g.heartbeat(&a, None, 1, t), err::REBALANCE_IN_PROGRESS);
    let r = g.join(req(&a, None), 20, t, &cfg);
    let j = joins(&r);
    assert_eq!(j.len(), 2, "both joins complete together");
    for (_, resp) in &j {
        assert_eq!(resp.generation, 2);
        assert_eq!(resp.leader, a, "the oldest member stays leader");
        if resp.member_id == a {
            assert_eq!(resp.members.len(), 2);
        } else {
            assert!(resp.members.is_empty());
        }
    }
    // the follower syncs first and waits; the leader's sync answers both
    let r = g.sync(&b, None, 2, None, None, vec![], 30, t);
    assert!(syncs(&r).is_empty());
    let assignments = vec![
        (a.clone(), Bytes::from_static(b"A2")),
        (b.clone(), Bytes::from_static(b"B2")),
    ];
    let r = g.sync(
        &a,
        None,
        2,
        Some("consumer"),
        Some("range"),
        assignments,
        31,
        t,
    );
    let mut s = syncs(&r);
    s.sort_by_key(|(w, _)| *w);
    assert_eq!(s.len(), 2);
    assert_eq!(
        (s[0].0, s[0].1.assignment.clone()),
        (30, Bytes::from_static(b"B2"))
    );
    assert_eq!(
        (s[1].0, s[1].1.assignment.clone()),
        (31, Bytes::from_static(b"A2"))
    );
    assert_eq!(g.state, GroupState::Stable);
    // a stale generation is refused everywhere
    assert_eq!(g.validate_commit(&b, None, 1), err::ILLEGAL_GENERATION);
    assert_eq!(
        syncs(&g.sync(&b, None, 1, None, None, vec![], 32, t))[0]
            .1
            .error,
        err::ILLEGAL_GENERATION
    );
    assert_eq!(g.validate_commit(&b, None, 2), err::NONE);
    // a protocol mismatch in SyncGroup v5
    assert_eq!(
        syncs(&g.sync(&b, None, 2, Some("consumer"), Some("sticky"), vec![], 33, t))[0]
            .1
            .error,
        err::INCONSISTENT_GROUP_PROTOCOL
    );
}

#[test]
fn session_expiry_removes_silent_member_and_rebalances() {
    let cfg = GroupConfig::default();
    let t0 = Instant::now();
    let mut g = Group::new("g");
    let (a, _) = join_new(&mut g, t0, 1, &cfg);
    g.sync(&a, None, 1, None, None, vec![], 2, t0);
    let (b, _) = join_new(&mut g, t0, 10, &cfg);
    g.join(req(&a, None), 20, t0, &cfg);
    g.sync(&a, None, 2, None, None, vec![], 21, t0);
    g.sync(&b, None, 2, None, None, vec![], 22, t0);
    assert_eq!(g.members.len(), 2);
    // A heartbeats, B goes silent
    let t1 = t0 + SESSION / 2;
    assert_eq!(g.heartbeat(&a, None, 2, t1), err::NONE);
    assert!(g.tick(t1, &cfg).is_empty());
    let t2 = t0 + SESSION + Duration::from_millis(1);
    g.tick(t2, &cfg);
    assert!(!g.members.contains_key(&b), "B expired");
    assert_eq!(g.state, GroupState::PreparingRebalance);
    assert_eq!(g.heartbeat(&a, None, 2, t2), err::REBALANCE_IN_PROGRESS);
    let r = g.join(req(&a, None), 30, t2, &cfg);
    assert_eq!(joins(&r)[0].1.generation, 3);
    // B comes back with its old id: unknown now
    let r = g.join(req(&b, None), 31, t2, &cfg);
    assert_eq!(joins(&r)[0].1.error, err::UNKNOWN_MEMBER_ID);
    assert_eq!(
        g.validate_commit(&b, None, 2),
        err::UNKNOWN_MEMBER_ID,
        "a fenced member cannot commit"
    );
}

#[test]
fn rebalance_timeout_drops_members_that_do_not_rejoin() {
    let cfg = GroupConfig::default();
    let t0 = Instant::now();
    let mut g = Group::new("g");
    let (a, _) = join_new(&mut g, t0, 1, &cfg);
    g.sync(&a, None, 1, None, None, vec![], 2, t0);
    let (_b, r) = join_new(&mut g, t0, 10, &cfg);
    assert!(joins(&r).is_empty());
    // A keeps heartbeating (told to rejoin) but never rejoins
    let mut t = t0;
    while t < t0 + REBALANCE {
        t += Duration::from_secs(3);
        g.heartbeat(&a, None, 1, t);
        let r = g.tick(t, &cfg);
        if !joins(&r).is_empty() {
            let j = joins(&r);
            assert_eq!(j.len(), 1, "only B's join completes");
            assert_eq!(j[0].1.generation, 2);
            assert!(!g.members.contains_key(&a));
            return;
        }
    }
    panic!("the rebalance never timed out");
}

#[test]
fn static_member_replacement_fences_the_old_instance_without_rebalance() {
    let cfg = GroupConfig::default();
    let t = Instant::now();
    let mut g = Group::new("g");
    let r = g.join(req("", Some("inst-1")), 1, t, &cfg);
    let old = joins(&r)[0].1.member_id.clone();
    assert_eq!(
        joins(&r)[0].1.error,
        err::NONE,
        "static members need no member id round trip"
    );
    g.sync(
        &old,
        Some("inst-1"),
        1,
        None,
        None,
        vec![(old.clone(), Bytes::from_static(b"S"))],
        2,
        t,
    );
    assert_eq!(g.state, GroupState::Stable);
    // the instance restarts and joins with no member id
    let r = g.join(req("", Some("inst-1")), 3, t, &cfg);
    let j = joins(&r);
    let new = j[0].1.member_id.clone();
    assert_ne!(new, old);
    assert_eq!(
        j[0].1.generation, 1,
        "no rebalance for a static replacement"
    );
    assert_eq!(g.state, GroupState::Stable);
    let s = syncs(&g.sync(&new, Some("inst-1"), 1, None, None, vec![], 4, t));
    assert_eq!(
        s[0].1.assignment,
        Bytes::from_static(b"S"),
        "keeps the old assignment"
    );
    // the old incarnation is fenced
    assert_eq!(
        g.heartbeat(&old, Some("inst-1"), 1, t),
        err::FENCED_INSTANCE_ID
    );
    assert_eq!(
        g.validate_commit(&old, Some("inst-1"), 1),
        err::FENCED_INSTANCE_ID
    );
    let r = g.join(req(&old, Some("inst-1")), 5, t, &cfg);
    assert_eq!(joins(&r)[0].1.error, err::FENCED_INSTANCE_ID);
}

#[test]
fn bad_joins_are_refused() {
    let cfg = GroupConfig::default();
    let t = Instant::now();
    let mut g = Group::new("g");
    let mut short = req("", None);
    short.session_timeout = Duration::from_millis(100);
    assert_eq!(
        joins(&g.join(short, 1, t, &cfg))[0].1.error,
        err::INVALID_SESSION_TIMEOUT
    );
    let (a, _) = join_new(&mut g, t, 2, &cfg);
    let mut other = req("", None);
    other.protocols = vec![("sticky".into(), Bytes::new())];
    assert_eq!(
        joins(&g.join(other, 3, t, &cfg))[0].1.error,
        err::INCONSISTENT_GROUP_PROTOCOL
    );
    assert_eq!(
        joins(&g.join(req("ghost", None), 4, t, &cfg))[0].1.error,
        err::UNKNOWN_MEMBER_ID
    );
    // commits from outside the group protocol are only allowed while it is empty
    assert_eq!(g.validate_commit("", None, -1), err::UNKNOWN_MEMBER_ID);
    g.leave(&[(a, None)], t, &cfg);
    assert_eq!(g.validate_commit("", None, -1), err::NONE);
}
