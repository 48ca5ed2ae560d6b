//! KIP-848 server-side assignors: from the members' subscriptions and the topics' partition
//! counts to a target assignment per member. `uniform` (Kafka's default) balances every
//! partition over the members subscribed to its topic and keeps each member's partitions where
//! it can; `range` gives each subscribed member a contiguous range of every topic.

use std::collections::{BTreeMap, BTreeSet};

/// Partitions per topic name.
pub type Assignment = BTreeMap<String, BTreeSet<i32>>;

/// What an assignor knows about one member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberSpec {
    pub subscribed: BTreeSet<String>,
    /// The member's current target assignment (for stickiness).
    pub current: Assignment,
}

/// The assignor a group uses (`group.consumer.assignors`; a member may ask by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    Uniform,
    Range,
}

impl Assignor {
    pub fn by_name(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    /// The target assignment of every member (members subscribed to nothing get an empty one).
    /// `partitions` holds the partition count of every topic that exists; subscribed topics
    /// that do not exist are skipped.
    pub fn assign(
        self,
        members: &BTreeMap<String, MemberSpec>,
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Assignment> {
        match self {
            Assignor::Uniform => uniform(members, partitions),
            Assignor::Range => range(members, partitions),
        }
    }
}

fn total(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

/// Members subscribed to each existing topic, in member id order.
fn subscribers<'a>(
    members: &'a BTreeMap<String, MemberSpec>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<&'a str>> {
    let mut out: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (id, m) in members {
        for t in &m.subscribed {
            if partitions.get(t).is_some_and(|&n| n > 0) {
                out.entry(t.clone()).or_default().push(id);
            }
        }
    }
    out
}

/// Balanced and sticky: (1) a fair count per member, from a greedy pass that hands each
/// partition (topics with the fewest subscribers first) to its least-loaded subscriber;
/// (2) every member keeps partitions it already had, up to its count; (3) the rest go to the
/// subscribers furthest below their count. With identical subscriptions the counts differ by
/// at most one and a member keeps everything it can.
fn uniform(
    members: &BTreeMap<String, MemberSpec>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let subs = subscribers(members, partitions);
    let mut order: Vec<(&String, &Vec<&str>)> = subs.iter().collect();
    order.sort_by_key(|(t, s)| (s.len(), (*t).clone()));
    // (1) fair counts
    let mut quota: BTreeMap<&str, usize> = members.keys().map(|m| (m.as_str(), 0)).collect();
    for (topic, s) in &order {
        for _ in 0..partitions[*topic] {
            let m = s
                .iter()
                .min_by_key(|m| (quota[**m], **m))
                .expect("a topic in subs has a subscriber");
            *quota.get_mut(m).expect("member") += 1;
        }
    }
    let mut out: BTreeMap<String, Assignment> = members
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    let mut taken: BTreeSet<(String, i32)> = BTreeSet::new();
    // (2) stickiness, within the counts
    for (id, m) in members {
        let mut kept = 0;
        for (topic, ps) in &m.current {
            let Some(&n) = partitions.get(topic) else {
                continue;
            };
            if !m.subscribed.contains(topic) {
                continue;
            }
            for &p in ps {
                if kept >= quota[id.as_str()] || p < 0 || p >= n {
                    continue;
                }
                if taken.insert((topic.clone(), p)) {
                    out.get_mut(id)
                        .expect("member")
                        .entry(topic.clone())
                        .or_default()
                        .insert(p);
                    kept += 1;
                }
            }
        }
    }
    // (3) the rest, to whoever is furthest below its count
    for (topic, s) in &order {
        for p in 0..partitions[*topic] {
            if taken.contains(&((*topic).clone(), p)) {
                continue;
            }
            let m = s
                .iter()
                .min_by_key(|m| {
                    let have = total(&out[**m]);
                    let want = quota[**m];
                    // below quota first (largest deficit), then fewest partitions
                    (have >= want, have as i64 - want as i64, have, **m)
                })
                .expect("subscriber");
            out.get_mut(*m)
                .expect("member")
                .entry((*topic).clone())
                .or_default()
                .insert(p);
            taken.insert(((*topic).clone(), p));
        }
    }
    out
}

/// Kafka's range: per topic, the subscribed members in id order get contiguous ranges, the
/// first `partitions % members` one partition more.
fn range(
    members: &BTreeMap<String, MemberSpec>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for (topic, s) in subscribers(members, partitions) {
        let n = partitions[&topic] as usize;
        let (per, extra) = (n / s.len(), n % s.len());
        let mut next = 0usize;
        for (i, m) in s.iter().enumerate() {
            let take = per + usize::from(i < extra);
            if take > 0 {
                out.get_mut(*m).expect("member").insert(
                    topic.clone(),
                    (next..next + take).map(|p| p as i32).collect(),
                );
            }
            next += take;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(topics: &[&str]) -> MemberSpec {
        MemberSpec {
            subscribed: topics.iter().map(|t| t.to_string()).collect(),
            current: Assignment::new(),
        }
    }

    fn parts(list: &[(&str, i32)]) -> BTreeMap<String, i32> {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    /// Every partition of a subscribed topic is assigned exactly once, to a subscriber.
    fn check_complete(
        members: &BTreeMap<String, MemberSpec>,
        partitions: &BTreeMap<String, i32>,
        got: &BTreeMap<String, Assignment>,
    ) {
        let mut seen = BTreeSet::new();
        for (m, a) in got {
            for (t, ps) in a {
                assert!(
                    members[m].subscribed.contains(t),
                    "{m} got unsubscribed {t}"
                );
                for p in ps {
                    assert!(*p >= 0 && *p < partitions[t]);
                    assert!(seen.insert((t.clone(), *p)), "{t}-{p} twice");
                }
            }
        }
        let want: usize = subscribers(members, partitions)
            .keys()
            .map(|t| partitions[t] as usize)
            .sum();
        assert_eq!(seen.len(), want, "every subscribed partition assigned");
    }

    #[test]
    fn range_matches_kafkas_ranges() {
        let members: BTreeMap<String, MemberSpec> = [("a", spec(&["t"])), ("b", spec(&["t"]))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let got = Assignor::Range.assign(&members, &parts(&[("t", 5)]));
        assert_eq!(got["a"]["t"], BTreeSet::from([0, 1, 2]));
        assert_eq!(got["b"]["t"], BTreeSet::from([3, 4]));
    }

    #[test]
    fn uniform_is_sticky_when_a_member_joins() {
        let mut members: BTreeMap<String, MemberSpec> = BTreeMap::new();
        members.insert("a".into(), spec(&["t"]));
        members.insert("b".into(), spec(&["t"]));
        let p = parts(&[("t", 6)]);
        let first = Assignor::Uniform.assign(&members, &p);
        for (m, a) in &first {
            assert_eq!(total(a), 3, "{m}");
            members.get_mut(m).expect("m").current = a.clone();
        }
        // unchanged group: unchanged assignment
        assert_eq!(Assignor::Uniform.assign(&members, &p), first);
        members.insert("c".into(), spec(&["t"]));
        let second = Assignor::Uniform.assign(&members, &p);
        check_complete(&members, &p, &second);
        for m in ["a", "b"] {
            assert_eq!(total(&second[m]), 2);
            assert!(
                second[m]["t"].is_subset(&first[m]["t"]),
                "{m} only gave partitions up"
            );
        }
        assert_eq!(total(&second["c"]), 2);
    }

    proptest! {
        #[test]
        fn assignments_are_complete_and_uniform_is_balanced(
            subs in proptest::collection::vec(proptest::collection::btree_set(0usize..4, 0..4), 1..7),
            counts in proptest::collection::vec(0i32..9, 4),
            homogeneous in any::<bool>(),
        ) {
            let topics = ["t0", "t1", "t2", "t3"];
            let p: BTreeMap<String, i32> =
                topics.iter().zip(&counts).map(|(t, n)| (t.to_string(), *n)).collect();
            let members: BTreeMap<String, MemberSpec> = subs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let s: BTreeSet<usize> = if homogeneous { subs[0].clone() } else { s.clone() };
                    (format!("m{i}"), MemberSpec {
                        subscribed: s.iter().map(|t| topics[*t].to_string()).collect(),
                        current: Assignment::new(),
                    })
                })
                .collect();
            for a in [Assignor::Uniform, Assignor::Range] {
                let got = a.assign(&members, &p);
                check_complete(&members, &p, &got);
            }
            if homogeneous {
                let got = Assignor::Uniform.assign(&members, &p);
                let sizes: Vec<usize> = got.values().map(total).collect();
                let (lo, hi) = (sizes.iter().min().copied(), sizes.iter().max().copied());
                prop_assert!(hi.unwrap_or(0) - lo.unwrap_or(0) <= 1, "{sizes:?}");
                // sticky: fed back, nothing moves
                let mut again = members.clone();
                for (m, a) in &got {
                    again.get_mut(m).expect("m").current = a.clone();
                }
                prop_assert_eq!(Assignor::Uniform.assign(&again, &p), got);
            }
        }
    }
}
