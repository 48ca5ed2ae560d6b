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

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/COMPATIBILITY.md has one row per API key kafka-protocol knows, with the name, the
    /// range ApiVersions advertises (`-` if none), the crate's range and a status that starts
    /// with "served" exactly for the advertised ones.
    #[test]
    fn compatibility_table_matches_api_versions() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/COMPATIBILITY.md");
        let text = std::fs::read_to_string(path).expect("docs/COMPATIBILITY.md");
        let range = |min: i16, max: i16| format!("{min}-{max}");
        let mut rows = std::collections::BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("| ")) {
            let cols: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            if cols[0] == "API" {
                continue;
            }
            assert_eq!(cols.len(), 5, "five columns: {line}");
            let key: i16 = cols[1].parse().expect("key column is a number");
            let row: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
            assert!(rows.insert(key, row).is_none(), "key {key} listed twice");
        }
        let served = response();
        for k in ApiKey::iter() {
            let row = rows
                .remove(&(k as i16))
                .unwrap_or_else(|| panic!("no row for {k:?} ({})", k as i16));
            assert_eq!(row[0], format!("{k:?}"), "name of key {}", k as i16);
            let v = k.valid_versions();
            assert_eq!(row[3], range(v.min, v.max), "kafka-protocol range of {k:?}");
            match served.api_keys.iter().find(|a| a.api_key == k as i16) {
                Some(a) => {
                    assert_eq!(row[2], range(a.min_version, a.max_version), "{k:?} served");
                    assert!(row[4].starts_with("served"), "{k:?} is served: {}", row[4]);
                }
                None => {
                    assert_eq!(row[2], "-", "{k:?} is not advertised");
                    assert!(
                        row[4].starts_with("not served: "),
                        "{k:?} is not served, and the row says why: {}",
                        row[4]
                    );
                }
            }
        }
        assert!(
            rows.is_empty(),
            "rows for keys kafka-protocol does not know: {rows:?}"
        );
        // every advertised API is one kafka-protocol knows (so it has a row)
        for a in &served.api_keys {
            assert!(
                ApiKey::try_from(a.api_key).is_ok(),
                "advertised {}",
                a.api_key
            );
        }
    }
}
