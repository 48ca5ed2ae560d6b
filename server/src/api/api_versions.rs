//! ApiVersions: the list of what sluice implements, with one deliberate exception: Produce is
//! advertised from v0, as Kafka 4.0 does (KAFKA-18659). librdkafka before 2.10 (Debian 12's
//! kcat has 2.0.2) enables gzip, snappy and lz4 only when the broker lists Produce v0-v2, and
//! would otherwise send every batch uncompressed. A Produce v0-v2 request (message format v0/v1,
//! which no maintained client sends) still closes its connection as an unsupported version.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

use super::{codes, version_range, SUPPORTED};
use crate::conn::ConnError;
use crate::wire::{self, Response};

fn api_list() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|k| {
            let (min, max) = version_range(*k);
            let min = if *k == ApiKey::Produce { 0 } else { min };
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

pub fn response() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_list())
}

/// The v0 answer to an ApiVersions version we do not know.
pub fn unsupported(correlation_id: i32) -> Result<Response, ConnError> {
    let body = ApiVersionsResponse::default()
        .with_error_code(codes::UNSUPPORTED_VERSION)
        .with_api_keys(api_list());
    wire::encode(ApiKey::ApiVersions, 0, correlation_id, &body)
        .map_err(|e| ConnError::Malformed(e.to_string()))
}
