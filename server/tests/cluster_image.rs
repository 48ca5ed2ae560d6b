//! The metadata image on its own: placement, leader election on fencing, ISR rules, producer
//! id blocks, and that replaying the same commands gives the same image.

use std::collections::BTreeMap;

use sluice_server::cluster::image::{
    assign_replicas, Applied, ApplyError, Command, Image, NO_LEADER,
};
use uuid::Uuid;

fn register(img: &mut Image, index: &mut u64, id: i32) {
    *index += 1;
    img.apply(
        *index,
        &Command::RegisterBroker {
            id,
            host: "127.0.0.1".into(),
            port: 9000 + id as u16,
            listeners: Vec::new(),
            incarnation: 7,
        },
    )
    .expect("register");
}

fn apply(img: &mut Image, index: &mut u64, cmd: Command) -> Result<Applied, ApplyError> {
    *index += 1;
    img.apply(*index, &cmd)
}

fn cluster(brokers: &[i32]) -> (Image, u64) {
    let mut img = Image::default();
    let mut i = 0;
    apply(
        &mut img,
        &mut i,
        Command::InitCluster {
            cluster_id: "c1".into(),
        },
    )
    .expect("init");
    for &b in brokers {
        register(&mut img, &mut i, b);
    }
    (img, i)
}

fn create(img: &mut Image, i: &mut u64, name: &str, assignment: Vec<Vec<i32>>) {
    apply(
        img,
        i,
        Command::CreateTopic {
            name: name.into(),
            id: Uuid::new_v4(),
            assignment,
            configs: BTreeMap::new(),
        },
    )
    .expect("create");
}

#[test]
fn placement_spreads_leaders_and_never_repeats_a_broker() {
    let brokers = [1, 2, 3, 4];
    let a = assign_replicas(&brokers, 8, 3, 0).expect("assign");
    assert_eq!(a.len(), 8);
    let mut leaders = BTreeMap::new();
    for r in &a {
        assert_eq!(r.len(), 3);
        let mut s = r.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 3, "{r:?} repeats a broker");
        *leaders.entry(r[0]).or_insert(0) += 1;
    }
    assert_eq!(
        leaders.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2, 2]
    );
    assert!(assign_replicas(&brokers, 1, 5, 0).is_err());
    assert!(assign_replicas(&brokers, 1, 0, 0).is_err());
    assert_eq!(
        assign_replicas(&[7], 2, 1, 0).expect("one"),
        vec![vec![7], vec![7]]
    );
}

#[test]
fn fencing_the_leader_elects_the_next_in_sync_replica() {
    let (mut img, mut i) = cluster(&[1, 2, 3]);
    create(&mut img, &mut i, "t", vec![vec![1, 2, 3], vec![2, 3, 1]]);
    let p = img.partition("t", 0).expect("p0");
    assert_eq!(
        (p.leader, p.leader_epoch, p.isr.clone()),
        (1, 0, vec![1, 2, 3])
    );
    apply(&mut img, &mut i, Command::FenceBroker { id: 1 }).expect("fence");
    let p = img.partition("t", 0).expect("p0");
    assert_eq!(
        (p.leader, p.leader_epoch, p.isr.clone()),
        (2, 1, vec![2, 3])
    );
    assert_eq!(p.offline(&img), vec![1]);
    // partition 1 keeps its leader; only its ISR shrinks, the leader epoch stays
    let p1 = img.partition("t", 1).expect("p1");
    assert_eq!(
        (p1.leader, p1.leader_epoch, p1.isr.clone()),
        (2, 0, vec![2, 3])
    );
}

#[test]
fn the_last_in_sync_replica_stays_and_leads_again_when_it_returns() {
    let (mut img, mut i) = cluster(&[1, 2]);
    create(&mut img, &mut i, "t", vec![vec![1, 2]]);
    apply(&mut img, &mut i, Command::FenceBroker { id: 2 }).expect("fence 2");
    apply(&mut img, &mut i, Command::FenceBroker { id: 1 }).expect("fence 1");
    let p = img.partition("t", 0).expect("p0");
    assert_eq!(p.leader, NO_LEADER);
    assert_eq!(
        p.isr,
        vec![1],
        "unclean election is off: the last ISR member stays"
    );
    // broker 2 returns: it is not in the ISR, so the partition stays offline
    register(&mut img, &mut i, 2);
    assert_eq!(img.partition("t", 0).expect("p0").leader, NO_LEADER);
    // broker 1 returns: it leads again, with a new epoch
    register(&mut img, &mut i, 1);
    let p = img.partition("t", 0).expect("p0");
    assert_eq!((p.leader, p.leader_epoch), (1, 2));
}

#[test]
fn alter_partition_checks_leader_epoch_and_membership() {
    let (mut img, mut i) = cluster(&[1, 2, 3]);
    create(&mut img, &mut i, "t", vec![vec![1, 2, 3]]);
    let shrink = |epoch, isr: Vec<i32>| Command::AlterPartition {
        topic: "t".into(),
        partition: 0,
        leader: 1,
        partition_epoch: epoch,
        isr,
    };
    apply(&mut img, &mut i, shrink(0, vec![1, 3])).expect("shrink");
    assert_eq!(img.partition("t", 0).expect("p").isr, vec![1, 3]);
    assert!(matches!(
        apply(&mut img, &mut i, shrink(0, vec![1])),
        Err(ApplyError::Stale(_))
    ));
    assert!(matches!(
        apply(&mut img, &mut i, shrink(1, vec![2, 3])),
        Err(ApplyError::Invalid(_))
    ));
    // a fenced broker cannot rejoin the ISR
    apply(&mut img, &mut i, Command::FenceBroker { id: 2 }).expect("fence");
    assert!(matches!(
        apply(&mut img, &mut i, shrink(1, vec![1, 2, 3])),
        Err(ApplyError::Invalid(_))
    ));
    apply(&mut img, &mut i, shrink(1, vec![1, 3])).expect("same isr");
}

#[test]
fn producer_id_blocks_never_overlap_and_replay_is_deterministic() {
    let (mut img, mut i) = cluster(&[1, 2, 3]);
    let start = i;
    let cmds = vec![
        Command::AllocateProducerIds { count: 1000 },
        Command::CreateTopic {
            name: "a".into(),
            id: Uuid::nil(),
            assignment: vec![vec![1, 2], vec![2, 3]],
            configs: BTreeMap::new(),
        },
        Command::FenceBroker { id: 2 },
        Command::AllocateProducerIds { count: 1000 },
        Command::RegisterBroker {
            id: 2,
            host: "h".into(),
            port: 1,
            listeners: vec![sluice_server::config::Endpoint {
                name: "SSL".into(),
                host: "h".into(),
                port: 2,
            }],
            incarnation: 8,
        },
        Command::CreateTopic {
            name: "a".into(),
            id: Uuid::nil(),
            assignment: vec![vec![1]],
            configs: BTreeMap::new(),
        },
    ];
    let base = img.clone();
    let mut firsts = Vec::new();
    for c in &cmds {
        if let Ok(Applied::ProducerIds { first }) = apply(&mut img, &mut i, c.clone()) {
            firsts.push(first);
        }
    }
    assert_eq!(firsts, vec![0, 1000]);
    let mut again = base;
    let mut j = start;
    let results: Vec<_> = cmds
        .iter()
        .map(|c| apply(&mut again, &mut j, c.clone()))
        .collect();
    assert!(matches!(results[5], Err(ApplyError::TopicExists(_))));
    assert_eq!(again, img);
    assert_eq!(
        img.brokers[&2].epoch, 1,
        "re-registration bumps the broker epoch"
    );
}

#[test]
fn assignments_naming_unknown_brokers_or_duplicates_are_refused() {
    let (mut img, mut i) = cluster(&[1, 2]);
    let bad = |a: Vec<Vec<i32>>| Command::CreateTopic {
        name: "x".into(),
        id: Uuid::nil(),
        assignment: a,
        configs: BTreeMap::new(),
    };
    assert!(apply(&mut img, &mut i, bad(vec![vec![1, 9]])).is_err());
    assert!(apply(&mut img, &mut i, bad(vec![vec![1, 1]])).is_err());
    assert!(apply(&mut img, &mut i, bad(vec![vec![]])).is_err());
    assert!(img.topics.is_empty());
}

#[test]
fn group_configs_are_set_replaced_and_cleared() {
    let (mut img, mut i) = cluster(&[1]);
    let set = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let cmd = |configs| Command::SetGroupConfigs {
        group: "g".into(),
        configs,
    };
    apply(
        &mut img,
        &mut i,
        cmd(set(&[("consumer.session.timeout.ms", "50000")])),
    )
    .expect("set");
    assert_eq!(
        img.group_configs.get("g"),
        Some(&set(&[("consumer.session.timeout.ms", "50000")]))
    );
    // an old image (without the field) still loads, with no group configs
    let mut json = serde_json::to_value(&img).expect("json");
    json.as_object_mut()
        .expect("object")
        .remove("group_configs");
    let old: Image = serde_json::from_value(json).expect("old image");
    assert!(old.group_configs.is_empty());
    apply(
        &mut img,
        &mut i,
        cmd(set(&[("consumer.heartbeat.interval.ms", "6000")])),
    )
    .expect("replace");
    assert_eq!(
        img.group_configs.get("g"),
        Some(&set(&[("consumer.heartbeat.interval.ms", "6000")]))
    );
    apply(&mut img, &mut i, cmd(BTreeMap::new())).expect("clear");
    assert!(img.group_configs.is_empty());
}
