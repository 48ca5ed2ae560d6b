//! The KIP-848 consumer group protocol (`group.protocol=consumer`), built up in steps. This
//! first step holds its two pure parts, unit- and property-tested on their own:
//! [`assignor`] (the server-side `uniform` and `range` assignors: subscriptions and partition
//! counts -> target assignment) and [`reconcile`] (each member's path from its current to its
//! target assignment across heartbeats, revoking before assigning, so that no partition ever
//! has two owners).
//!
//! Data path once wired (next step): ConsumerGroupHeartbeat -> the group's coordinator shard ->
//! group epoch bumped on a membership or subscription change -> [`assignor`] computes the target
//! assignment at that epoch -> [`reconcile`] advances the heartbeating member -> the response
//! carries its member epoch and assignment; the membership, target assignment and epochs are
//! records in the offsets partitions, as the classic groups' are.

pub mod assignor;
pub mod group;
pub mod reconcile;
pub mod serve;
