//! Random and mutated frames through the request decoder: every outcome is a clean error or a
//! request, never a panic or an abort (kafka-protocol pre-allocates arrays from wire lengths;
//! the guarded allocator keeps hostile lengths harmless).

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;
use proptest::prelude::*;
use sluice_server::api::SUPPORTED;

#[global_allocator]
static ALLOC: sluice_server::alloc::GuardedAlloc = sluice_server::alloc::GuardedAlloc;

fn decode(api: ApiKey, version: i16, bytes: &[u8]) {
    let mut b = Bytes::copy_from_slice(bytes);
    if RequestHeader::decode(&mut b, api.request_header_version(version)).is_ok() {
        let _ = RequestKind::decode(api, &mut b, version);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bodies_never_panic(api_idx in 0..SUPPORTED.len(), v in 0i16..20, body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let api = SUPPORTED[api_idx];
        let r = api.valid_versions();
        let version = r.min + v % (r.max - r.min + 1);
        decode(api, version, &body);
    }

    #[test]
    fn huge_counts_in_every_position_never_abort(api_idx in 0..SUPPORTED.len(), v in 0i16..20, at in 0usize..60, body in proptest::collection::vec(any::<u8>(), 64..128)) {
        let api = SUPPORTED[api_idx];
        let r = api.valid_versions();
        let version = r.min + v % (r.max - r.min + 1);
        let mut body = body;
        body[at..at + 4].copy_from_slice(&0x7fff_fff0_i32.to_be_bytes());
        decode(api, version, &body);
    }
}
