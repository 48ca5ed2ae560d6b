//! Fuzz entry points of the broker (issue 17). Each function takes arbitrary bytes, runs the
//! broker's own code on them and panics only when an invariant breaks: a panic, an abort, an
//! allocation past libFuzzer's limit or a hang in one of them is a bug. The cargo-fuzz targets in
//! `fuzz/` (nightly, libFuzzer) are one-line wrappers over these; `tests/fuzz_targets.rs`
//! replays every input kept under `fuzz/regressions/<target>/` and runs a short property test
//! of each on the stable toolchain.
//!
//! | target | entry point | data path |
//! |---|---|---|
//! | `request_frame` | [`request_frame`] | frame bytes -> `api::decode_frame` (key, version, header, body) -> re-encode and decode again; refusal answer and ApiVersions answer encoded |
//! | `produce_batch` | [`produce_batch`] | batch bytes -> `batch::validate`/`validate_stored` -> `compression::admit` (framing walk, bounded decompression, strict record parse, recompression) |
//! | `segment_scan` | [`segment_scan`] | segment file bytes -> `segment::scan_with`, the recovery scan |
//! | `sasl` | [`sasl`] | frames -> `api::decode_frame` of SaslHandshake / SaslAuthenticate v0-v2 (or v0's raw tokens) -> `SaslState` (PLAIN, SCRAM client-first and client-final) |
//! | `tls_handshake` | [`tls_handshake`] | bytes from the client -> rustls `ServerConnection` on the config `TlsContext` builds for a listener |

mod batch;
mod request;
mod sasl;
mod tls;

pub use batch::{batch_seeds, produce_batch};
pub use request::{request_frame, request_seeds};
pub use sasl::{sasl, sasl_principal, sasl_seeds};
pub use sluice_engine::fuzzing::{segment_scan, segment_seeds};
pub use tls::{tls_handshake, tls_seeds};

/// One fuzz target: its name (the cargo-fuzz binary and `fuzz/regressions/<name>/`), its
/// entry point and its seed inputs.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "request_frame",
        run: request_frame,
        seeds: request_seeds,
    },
    Target {
        name: "produce_batch",
        run: produce_batch,
        seeds: batch_seeds,
    },
    Target {
        name: "segment_scan",
        run: segment_scan,
        seeds: segment_seeds,
    },
    Target {
        name: "sasl",
        run: sasl,
        seeds: sasl_seeds,
    },
    Target {
        name: "tls_handshake",
        run: tls_handshake,
        seeds: tls_seeds,
    },
];
