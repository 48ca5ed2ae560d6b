//! sluice-tools: a small blocking Kafka client shared by `loadgen` (bench/) and the `sluice`
//! admin CLI.
//!
//! Threading model: plain std threads and blocking sockets, no async runtime.
//! - [`conn::Connection`]: one request at a time (admin calls, fetch).
//! - [`pipeline::Pipeline`]: a pipelined connection for producers. The caller's thread encodes
//!   and writes requests; a reader thread owned by the pipeline reads the responses, which Kafka
//!   sends in request order, checks each correlation id against the queue of requests in flight
//!   and hands (token, response) to a handler. The in-flight window is a bounded queue: `send`
//!   blocks while `max_in_flight` requests are unanswered.
//!
//! Record batches are encoded directly into their output buffer by [`records::BatchBuilder`]
//! (no intermediate record structs), compressed with kafka-protocol's codecs, and decoded by
//! [`records::decode_batches`] without copying uncompressed data.

pub mod acls;
pub mod admin;
pub mod client;
pub mod conn;
pub mod consume;
pub mod dumplog;
pub mod groups;
pub mod leaders;
pub mod member;
pub mod partitioner;
pub mod pipeline;
pub mod produce;
pub mod quotas;
pub mod records;
pub mod sasl;
pub mod security;
pub mod top;
pub mod users;

pub use client::{Client, ClientError};
pub use conn::{ConnError, Connection};
pub use records::{BatchBuilder, Compression};
pub use security::ClientSecurity;
