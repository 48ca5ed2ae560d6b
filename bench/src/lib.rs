//! sluice-bench: `loadgen` (bin) and its parts, plus the criterion benches (benches/).
//!
//! loadgen: [`config`] (command line), [`run`] (broker, producers, consumers, progress,
//! sampling), [`producer`] / [`consumer`] (one thread each on `sluice-tools` connections),
//! [`verify`] (loss, duplicates, order), [`report`] (summary.json, .hgrm, .hlog, csv),
//! [`html`] (the report's index.html),
//! [`hgrm`] (HdrHistogram percentile-distribution text), [`plot`], [`compare`], [`scaling`]
//! (`loadgen plot-scaling`), [`nullsink`],
//! [`dial`] (TLS and SASL settings of the connections), [`txn`] (producer ids, transactions and batch stamping for `--idempotent` and
//! `--transactional`).

pub mod compare;
pub mod config;
pub mod consumer;
pub mod dial;
pub mod hgrm;
pub mod html;
pub mod nullsink;
pub mod plot;
pub mod producer;
pub mod report;
pub mod run;
pub mod scaling;
pub mod stats;
pub mod txn;
pub mod verify;
