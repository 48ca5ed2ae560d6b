//! KIP-848 member reconciliation: how a member moves from its current assignment to its target
//! one, one heartbeat at a time, without two members ever owning a partition at once.
//!
//! A member first gives up what it no longer owns in the target (UNREVOKED_PARTITIONS: it keeps
//! `current ∩ target`, its epoch stays, and it must report in a heartbeat that it no longer
//! owns the revoked partitions); then it receives the target's new partitions that no other
//! member still holds, at the target epoch (STABLE, or UNRELEASED_PARTITIONS while some are
//! still held elsewhere; those arrive on a later heartbeat once released).

use std::collections::BTreeSet;

use super::assignor::Assignment;

/// Where a member is in its reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Stable,
    UnrevokedPartitions,
    UnreleasedPartitions,
}

/// A member's side of the assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciliation {
    pub epoch: i32,
    pub state: MemberState,
    /// What the member owns (what the last heartbeat response gave it).
    pub assigned: Assignment,
    /// What it was told to give up and has not yet confirmed.
    pub revoking: Assignment,
}

impl Reconciliation {
    /// A member that just joined (epoch 0, owns nothing).
    pub fn joined() -> Self {
        Reconciliation {
            epoch: 0,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            revoking: Assignment::new(),
        }
    }

    /// Advances the member towards `target` at `target_epoch`. `owned` is what the member's
    /// heartbeat says it owns (`None` when the field was not sent: nothing confirmed);
    /// `held_elsewhere(topic, p)` tells whether another member still owns or is revoking a
    /// partition.
    pub fn advance(
        &mut self,
        target_epoch: i32,
        target: &Assignment,
        owned: Option<&Assignment>,
        held_elsewhere: impl Fn(&str, i32) -> bool,
    ) {
        if self.state == MemberState::UnrevokedPartitions {
            let released = owned.is_some_and(|o| !intersects(o, &self.revoking));
            if !released {
                return;
            }
            self.revoking.clear();
        }
        let revoke = minus(&self.assigned, target);
        if !is_empty(&revoke) {
            self.assigned = intersect(&self.assigned, target);
            self.revoking = revoke;
            self.state = MemberState::UnrevokedPartitions;
            return;
        }
        let mut complete = true;
        for (topic, ps) in target {
            for &p in ps {
                if contains(&self.assigned, topic, p) {
                    continue;
                }
                if held_elsewhere(topic, p) {
                    complete = false;
                } else {
                    self.assigned.entry(topic.clone()).or_default().insert(p);
                }
            }
        }
        self.epoch = target_epoch;
        self.state = if complete {
            MemberState::Stable
        } else {
            MemberState::UnreleasedPartitions
        };
    }

    /// Whether this member owns or is still giving up `topic`-`p`.
    pub fn holds(&self, topic: &str, p: i32) -> bool {
        contains(&self.assigned, topic, p) || contains(&self.revoking, topic, p)
    }
}

fn contains(a: &Assignment, topic: &str, p: i32) -> bool {
    a.get(topic).is_some_and(|s| s.contains(&p))
}

fn is_empty(a: &Assignment) -> bool {
    a.values().all(BTreeSet::is_empty)
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .any(|(t, ps)| b.get(t).is_some_and(|q| !ps.is_disjoint(q)))
}

fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    a.iter()
        .filter_map(|(t, ps)| {
            let left: BTreeSet<i32> = match b.get(t) {
                Some(q) => ps.difference(q).copied().collect(),
                None => ps.clone(),
            };
            (!left.is_empty()).then(|| (t.clone(), left))
        })
        .collect()
}

fn intersect(a: &Assignment, b: &Assignment) -> Assignment {
    a.iter()
        .filter_map(|(t, ps)| {
            let both: BTreeSet<i32> = ps.intersection(b.get(t)?).copied().collect();
            (!both.is_empty()).then(|| (t.clone(), both))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::assignor::{Assignor, MemberSpec};
    use super::*;
    use proptest::prelude::*;

    fn a(list: &[i32]) -> Assignment {
        Assignment::from([("t".to_string(), list.iter().copied().collect())])
    }

    #[test]
    fn revoke_then_assign() {
        let mut m = Reconciliation::joined();
        m.advance(1, &a(&[0, 1, 2, 3]), None, |_, _| false);
        assert_eq!(
            (m.epoch, m.state, &m.assigned),
            (1, MemberState::Stable, &a(&[0, 1, 2, 3]))
        );
        // a second member joins: target shrinks to 0, 1
        m.advance(2, &a(&[0, 1]), Some(&a(&[0, 1, 2, 3])), |_, _| false);
        assert_eq!(m.state, MemberState::UnrevokedPartitions);
        assert_eq!(
            (m.epoch, &m.assigned, &m.revoking),
            (1, &a(&[0, 1]), &a(&[2, 3]))
        );
        // still reporting 2 and 3: nothing changes
        m.advance(2, &a(&[0, 1]), Some(&a(&[0, 1, 2, 3])), |_, _| false);
        assert_eq!(m.state, MemberState::UnrevokedPartitions);
        // released: at the target epoch
        m.advance(2, &a(&[0, 1]), Some(&a(&[0, 1])), |_, _| false);
        assert_eq!(
            (m.epoch, m.state, &m.assigned),
            (2, MemberState::Stable, &a(&[0, 1]))
        );
        assert!(m.revoking.is_empty());
    }

    #[test]
    fn partitions_held_elsewhere_wait() {
        let mut m = Reconciliation::joined();
        m.advance(3, &a(&[2, 3]), None, |_, p| p == 3);
        assert_eq!(
            (m.epoch, m.state, &m.assigned),
            (3, MemberState::UnreleasedPartitions, &a(&[2]))
        );
        m.advance(3, &a(&[2, 3]), Some(&a(&[2])), |_, _| false);
        assert_eq!((m.state, &m.assigned), (MemberState::Stable, &a(&[2, 3])));
    }

    proptest! {
        /// Members joining and leaving in random order, heartbeating in random order, each
        /// reporting what it owns: no partition is ever owned by two members, and once the
        /// group is left alone every member converges to its target at the target epoch.
        #[test]
        fn never_two_owners_and_convergence(
            steps in proptest::collection::vec((0usize..5, any::<bool>()), 1..60),
            partitions in 1i32..12,
        ) {
            let topic = "t".to_string();
            let p = BTreeMap::from([(topic.clone(), partitions)]);
            let mut members: BTreeMap<String, Reconciliation> = BTreeMap::new();
            let mut specs: BTreeMap<String, MemberSpec> = BTreeMap::new();
            let mut epoch = 0;
            let mut target: BTreeMap<String, Assignment> = BTreeMap::new();
            let retarget = |specs: &mut BTreeMap<String, MemberSpec>,
                            target: &mut BTreeMap<String, Assignment>,
                            epoch: &mut i32| {
                *epoch += 1;
                *target = Assignor::Uniform.assign(specs, &p);
                for (m, t) in target.iter() {
                    specs.get_mut(m).expect("m").current = t.clone();
                }
            };
            let beat = |members: &mut BTreeMap<String, Reconciliation>,
                        target: &BTreeMap<String, Assignment>,
                        epoch: i32,
                        who: &str| {
                let others: Vec<Reconciliation> = members
                    .iter()
                    .filter(|(k, _)| k.as_str() != who)
                    .map(|(_, v)| v.clone())
                    .collect();
                let me = members.get_mut(who).expect("member");
                let owned = me.assigned.clone();
                me.advance(epoch, &target[who], Some(&owned), |t, q| {
                    others.iter().any(|o| o.holds(t, q))
                });
            };
            for (who, join) in steps {
                let id = format!("m{who}");
                if join && !members.contains_key(&id) {
                    members.insert(id.clone(), Reconciliation::joined());
                    specs.insert(id.clone(), MemberSpec {
                        subscribed: BTreeSet::from([topic.clone()]),
                        current: Assignment::new(),
                    });
                    retarget(&mut specs, &mut target, &mut epoch);
                } else if !join && members.remove(&id).is_some() {
                    specs.remove(&id);
                    retarget(&mut specs, &mut target, &mut epoch);
                } else if members.contains_key(&id) {
                    beat(&mut members, &target, epoch, &id);
                }
                // the invariant: one owner per partition
                let mut seen = BTreeSet::new();
                for m in members.values() {
                    for q in m.assigned.get(&topic).into_iter().flatten() {
                        prop_assert!(seen.insert(*q), "partition {} owned twice", q);
                    }
                }
            }
            // left alone, a few rounds of heartbeats converge
            let ids: Vec<String> = members.keys().cloned().collect();
            for _ in 0..4 {
                for id in &ids {
                    beat(&mut members, &target, epoch, id);
                }
            }
            for (id, m) in &members {
                prop_assert_eq!(m.state, MemberState::Stable);
                prop_assert_eq!(m.epoch, epoch);
                prop_assert_eq!(&m.assigned, &target[id]);
            }
        }
    }
}
