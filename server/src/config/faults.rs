//! `sluice.fault.log`: storage faults armed on named partitions, for tests of how one failing
//! partition affects the others. Data path: parsed here at start-up; `Shard::open_partition`
//! gives the partition's log a `sluice_engine::FaultPlan` with the fault armed, and the
//! partition's next segment write (or fdatasync) takes it on the real files. Unset in
//! production.

use sluice_engine::Fault;

use super::{bad, ConfigError};

/// One armed fault: `<topic>-<partition>:<fault>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFault {
    pub topic: String,
    pub partition: i32,
    pub fault: Fault,
}

/// Parses `t-0:write-eio,t-2:sync-eio,u-1:write-enospc` (empty: none).
pub fn parse(key: &str, value: &str) -> Result<Vec<LogFault>, ConfigError> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (tp, kind) = item
            .split_once(':')
            .ok_or_else(|| bad(key, value, "expected <topic>-<partition>:<fault>"))?;
        let (topic, partition) = tp
            .rsplit_once('-')
            .and_then(|(t, p)| Some((t, p.parse::<i32>().ok()?)))
            .filter(|(t, p)| !t.is_empty() && *p >= 0)
            .ok_or_else(|| bad(key, value, format!("{tp:?} is not <topic>-<partition>")))?;
        let fault = match kind {
            "write-eio" => Fault::WriteEio,
            "sync-eio" => Fault::SyncEio,
            "write-enospc" => Fault::WriteEnospc,
            _ => {
                return Err(bad(
                    key,
                    value,
                    format!("unknown fault {kind:?} (write-eio, sync-eio, write-enospc)"),
                ))
            }
        };
        out.push(LogFault {
            topic: topic.to_string(),
            partition,
            fault,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let f = parse("k", "my-topic-3:write-eio, t-0:sync-eio").expect("valid");
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].topic.as_str(), f[0].partition), ("my-topic", 3));
        assert_eq!(f[0].fault, Fault::WriteEio);
        assert_eq!(f[1].fault, Fault::SyncEio);
        assert!(parse("k", "").expect("empty").is_empty());
        for bad in [
            "t-0",
            "t:write-eio",
            "t-x:write-eio",
            "-1:sync-eio",
            "t-0:boom",
        ] {
            assert!(parse("k", bad).is_err(), "{bad}");
        }
    }
}
