//! `sluice group ...`: kafka-consumer-groups.sh.

use std::collections::{BTreeMap, BTreeSet};

use clap::{ArgGroup, Subcommand};
use serde::Serialize;
use sluice_tools::client::error_name;
use sluice_tools::groups::{codes, describe_group_lag, GroupLag};

use crate::out::{self, dash, CliError};
use crate::Global;

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// List consumer groups with their state
    List,
    /// Offsets, log end offsets and lag per partition, with the owning members
    Describe {
        groups: Vec<String>,
        #[arg(long = "group", value_name = "GROUP")]
        group_flags: Vec<String>,
    },
    /// Delete inactive groups and their committed offsets
    Delete {
        groups: Vec<String>,
        #[arg(long = "group", value_name = "GROUP")]
        group_flags: Vec<String>,
    },
    /// Move the committed offsets of an inactive group
    #[command(group(ArgGroup::new("to").required(true).args(
        ["to_earliest", "to_latest", "to_offset", "to_datetime", "shift_by"])))]
    #[command(group(ArgGroup::new("which").required(true).args(["topic", "all_topics"])))]
    ResetOffsets {
        group: Option<String>,
        #[arg(long = "group", value_name = "GROUP")]
        group_flag: Option<String>,
        /// TOPIC or TOPIC:PARTITION[,PARTITION...] (repeatable)
        #[arg(long)]
        topic: Vec<String>,
        /// Every topic the group has committed offsets for
        #[arg(long)]
        all_topics: bool,
        #[arg(long)]
        to_earliest: bool,
        #[arg(long)]
        to_latest: bool,
        #[arg(long, value_name = "OFFSET")]
        to_offset: Option<i64>,
        /// YYYY-MM-DDTHH:MM:SS[.sss][Z|+HH:MM] (UTC without a zone) or epoch milliseconds
        #[arg(long, value_name = "DATETIME", value_parser = parse_datetime)]
        to_datetime: Option<i64>,
        /// Move the committed offsets by N (negative: back)
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        shift_by: Option<i64>,
        /// Only show the new offsets
        #[arg(long)]
        dry_run: bool,
        /// Apply the change (the default; kafka-consumer-groups.sh spelling)
        #[arg(long, conflicts_with = "dry_run")]
        execute: bool,
    },
}

pub fn run(g: &Global, cmd: GroupCmd) -> Result<(), CliError> {
    match cmd {
        GroupCmd::List => list(g),
        GroupCmd::Describe {
            groups,
            group_flags,
        } => describe(g, out::topics(groups, group_flags)),
        GroupCmd::Delete {
            groups,
            group_flags,
        } => delete(g, out::topics(groups, group_flags)),
        GroupCmd::ResetOffsets {
            group,
            group_flag,
            topic,
            all_topics,
            to_earliest,
            to_latest,
            to_offset,
            to_datetime,
            shift_by,
            dry_run,
            execute: _,
        } => {
            let group = match (group, group_flag) {
                (Some(a), Some(b)) if a != b => {
                    return Err(CliError::usage(format!(
                        "two different groups given: {a:?} and --group {b:?}"
                    )))
                }
                (Some(x), _) | (None, Some(x)) => x,
                (None, None) => {
                    return Err(CliError::usage("a group is required (GROUP or --group)"))
                }
            };
            let to = if to_earliest {
                Target::Earliest
            } else if to_latest {
                Target::Latest
            } else if let Some(o) = to_offset {
                Target::Offset(o)
            } else if let Some(t) = to_datetime {
                Target::Timestamp(t)
            } else if let Some(n) = shift_by {
                Target::Shift(n)
            } else {
                return Err(CliError::usage("give one of --to-earliest, --to-latest, --to-offset, --to-datetime, --shift-by"));
            };
            reset(g, &group, &topic, all_topics, to, dry_run)
        }
    }
}

fn list(g: &Global) -> Result<(), CliError> {
    let mut client = out::connect(g, "sluice-cli")?;
    let groups = client.list_groups()?;
    if g.json() {
        return out::print_json(&groups);
    }
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|l| {
            vec![
                l.group.clone(),
                l.state.clone().unwrap_or_else(|| "-".into()),
                if l.protocol_type.is_empty() {
                    "-".into()
                } else {
                    l.protocol_type.clone()
                },
                l.group_type.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    out::print(&out::table(
        &["GROUP", "STATE", "PROTOCOL-TYPE", "TYPE"],
        &rows,
    ))
}

fn no_group(group: &str) -> CliError {
    CliError::failed(format!("consumer group '{group}' does not exist"))
}

/// kafka-consumer-groups.sh --describe, column for column.
fn lag_text(lag: &GroupLag) -> String {
    let mut s = String::new();
    match lag.state.as_str() {
        "Empty" | "Dead" => s.push_str(&format!(
            "\nConsumer group '{}' has no active members.\n",
            lag.group
        )),
        "PreparingRebalance" | "CompletingRebalance" => s.push_str(&format!(
            "\nWarning: Consumer group '{}' is rebalancing.\n",
            lag.group
        )),
        _ => {}
    }
    let w = |min: usize, it: &mut dyn Iterator<Item = usize>| it.fold(min, usize::max);
    let gw = w(15, &mut std::iter::once(lag.group.len()));
    let tw = w(
        15,
        &mut lag
            .rows
            .iter()
            .map(|r| r.topic.as_deref().unwrap_or("-").len()),
    );
    let cw = w(
        15,
        &mut lag
            .rows
            .iter()
            .map(|r| r.consumer_id.as_deref().unwrap_or("-").len()),
    );
    let hw = w(
        15,
        &mut lag
            .rows
            .iter()
            .map(|r| r.host.as_deref().unwrap_or("-").len()),
    );
    let line = |c: &[&str]| {
        format!(
            "{:<gw$} {:<tw$} {:<10} {:<15} {:<15} {:<15} {:<cw$} {:<hw$} {}\n",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
        )
    };
    s.push('\n');
    let mut headers = out::LAG_HEADERS.to_vec();
    headers.extend(["HOST", "CLIENT-ID"]);
    s.push_str(&line(&headers));
    for r in &lag.rows {
        let mut cells = out::lag_cells(r);
        cells.extend([dash(r.host.as_ref()), dash(r.client_id.as_ref())]);
        let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
        s.push_str(&line(&cells));
    }
    s
}

fn describe(g: &Global, groups: Vec<String>) -> Result<(), CliError> {
    if groups.is_empty() {
        return Err(CliError::usage("a group is required (GROUP or --group)"));
    }
    let mut client = out::connect(g, "sluice-cli")?;
    let mut all = Vec::new();
    for group in &groups {
        let mut coord = client.group_coordinator(group, "sluice-cli")?;
        let lag =
            describe_group_lag(&mut client, &mut coord, group)?.ok_or_else(|| no_group(group))?;
        all.push(lag);
    }
    if g.json() {
        return out::print_json(&all);
    }
    let mut s = String::new();
    for lag in &all {
        s.push_str(&lag_text(lag));
    }
    out::print(&s)
}

fn delete(g: &Global, groups: Vec<String>) -> Result<(), CliError> {
    if groups.is_empty() {
        return Err(CliError::usage("a group is required (GROUP or --group)"));
    }
    let mut client = out::connect(g, "sluice-cli")?;
    #[derive(Serialize)]
    struct Deleted {
        group: String,
        error: Option<String>,
    }
    let mut results = Vec::new();
    for group in &groups {
        let mut coord = client.group_coordinator(group, "sluice-cli")?;
        for (name, code) in coord.delete_groups(std::slice::from_ref(group))? {
            let error = match code {
                0 => None,
                codes::GROUP_ID_NOT_FOUND => Some("the group does not exist".to_string()),
                codes::NON_EMPTY_GROUP => {
                    Some("the group is not empty (it has active members)".to_string())
                }
                c => Some(format!("{} (error code {c})", error_name(c))),
            };
            results.push(Deleted { group: name, error });
        }
    }
    let failed: Vec<&Deleted> = results.iter().filter(|d| d.error.is_some()).collect();
    if g.json() {
        out::print_json(&results)?;
    } else {
        let ok: Vec<String> = results
            .iter()
            .filter(|d| d.error.is_none())
            .map(|d| format!("'{}'", d.group))
            .collect();
        if !ok.is_empty() {
            out::print(&format!(
                "Deletion of requested consumer groups ({}) was successful.\n",
                ok.join(", ")
            ))?;
        }
    }
    match failed.as_slice() {
        [] => Ok(()),
        [one] => Err(CliError::failed(format!(
            "consumer group '{}' could not be deleted: {}",
            one.group,
            one.error.as_deref().unwrap_or_default()
        ))),
        many => Err(CliError::failed(format!(
            "{} consumer groups could not be deleted: {}",
            many.len(),
            many.iter()
                .map(|d| format!("'{}': {}", d.group, d.error.as_deref().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    }
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
    Shift(i64),
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS[.sss][Z|+HH:MM|-HH:MM]` (UTC without a zone), or epoch milliseconds.
pub fn parse_datetime(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || format!("invalid datetime {s:?}: expected YYYY-MM-DDTHH:MM:SS[.sss][Z|+HH:MM]");
    let (date, rest) = s.split_once('T').ok_or_else(bad)?;
    let dp: Vec<&str> = date.split('-').collect();
    if dp.len() != 3 {
        return Err(bad());
    }
    let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
    let (y, mo, d) = (num(dp[0])?, num(dp[1])?, num(dp[2])?);
    // split off the zone
    let (time, offset_min) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (t, z) = rest.split_at(i);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (zh, zm) = z[1..].split_once(':').unwrap_or((&z[1..], "0"));
        (t, sign * (num(zh)? * 60 + num(zm)?))
    } else {
        (rest, 0)
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let tp: Vec<&str> = hms.split(':').collect();
    if tp.len() < 2 || tp.len() > 3 {
        return Err(bad());
    }
    let (h, mi) = (num(tp[0])?, num(tp[1])?);
    let sec = if tp.len() == 3 { num(tp[2])? } else { 0 };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let frac3: String = frac.chars().chain("000".chars()).take(3).collect();
    let ms = num(&frac3)?;
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Ok(secs * 1000 + ms)
}

#[derive(Serialize)]
struct NewOffset {
    group: String,
    topic: String,
    partition: i32,
    previous_offset: Option<i64>,
    new_offset: i64,
}

fn reset(
    g: &Global,
    group: &str,
    topic_specs: &[String],
    all_topics: bool,
    to: Target,
    dry_run: bool,
) -> Result<(), CliError> {
    let mut client = out::connect(g, "sluice-cli")?;
    let mut coord = client.group_coordinator(group, "sluice-cli")?;
    let info = coord
        .describe_groups(&[group.to_string()])?
        .into_iter()
        .next()
        .ok_or_else(|| no_group(group))?;
    if !matches!(info.state.as_str(), "Empty" | "Dead") {
        return Err(CliError::failed(format!(
            "offsets can only be reset while group '{group}' is inactive, but it is {} with {} \
             member(s): stop its consumers first",
            info.state,
            info.members.len()
        )));
    }
    let committed = coord.fetch_committed(group, None)?;
    let committed: BTreeMap<(String, i32), i64> = committed
        .into_iter()
        .filter(|c| c.offset >= 0)
        .map(|c| ((c.topic, c.partition), c.offset))
        .collect();
    // which partitions
    let mut parts: BTreeSet<(String, i32)> = BTreeSet::new();
    if all_topics {
        parts.extend(committed.keys().cloned());
        if parts.is_empty() {
            return Err(CliError::failed(format!(
                "group '{group}' has no committed offsets; name the topics with --topic"
            )));
        }
    }
    for spec in topic_specs {
        let (topic, list) = match spec.split_once(':') {
            Some((t, l)) => (t, Some(l)),
            None => (spec.as_str(), None),
        };
        let count = out::topic_partitions(&mut client, topic)?.len();
        match list {
            None => parts.extend((0..count as i32).map(|p| (topic.to_string(), p))),
            Some(l) => {
                for p in l.split(',') {
                    let p: i32 = p.trim().parse().map_err(|_| {
                        CliError::usage(format!("bad partition {p:?} in --topic {spec:?}"))
                    })?;
                    out::check_partition(topic, p, count)?;
                    parts.insert((topic.to_string(), p));
                }
            }
        }
    }
    // new offsets, clamped to what the logs hold (as Kafka's tool does)
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in &parts {
        by_topic.entry(t.clone()).or_default().push(*p);
    }
    let mut plan = Vec::new();
    for (topic, ps) in &by_topic {
        let earliest: BTreeMap<i32, i64> =
            client.list_offsets(topic, ps, -2)?.into_iter().collect();
        let latest: BTreeMap<i32, i64> = client.list_offsets(topic, ps, -1)?.into_iter().collect();
        let at_time: BTreeMap<i32, i64> = match to {
            Target::Timestamp(ts) => client.list_offsets(topic, ps, ts)?.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        for p in ps {
            let lo = earliest.get(p).copied().unwrap_or(0);
            let hi = latest.get(p).copied().unwrap_or(lo);
            let prev = committed.get(&(topic.clone(), *p)).copied();
            let wanted = match to {
                Target::Earliest => lo,
                Target::Latest => hi,
                Target::Offset(o) => o,
                // no record at or after the time: the end
                Target::Timestamp(_) => at_time.get(p).copied().filter(|o| *o >= 0).unwrap_or(hi),
                Target::Shift(n) => prev.unwrap_or(lo).saturating_add(n),
            };
            plan.push(NewOffset {
                group: group.to_string(),
                topic: topic.clone(),
                partition: *p,
                previous_offset: prev,
                new_offset: wanted.clamp(lo, hi.max(lo)),
            });
        }
    }
    if !dry_run {
        let offsets: Vec<(String, i32, i64)> = plan
            .iter()
            .map(|n| (n.topic.clone(), n.partition, n.new_offset))
            .collect();
        let results = coord.commit_offsets(group, -1, "", &offsets)?;
        if let Some((t, p, code)) = results.iter().find(|(_, _, c)| *c != 0) {
            return Err(CliError::failed(format!(
                "committing the new offset of {t}-{p} for group '{group}' failed: {} (error code \
                 {code})",
                error_name(*code)
            )));
        }
    }
    if g.json() {
        return out::print_json(&plan);
    }
    let mut s = String::new();
    let line = |a: &str, b: &str, c: &str, d: &str| format!("{a:<30} {b:<30} {c:<10} {d:<15}\n");
    s.push('\n');
    s.push_str(&line("GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"));
    for n in &plan {
        s.push_str(&line(
            &n.group,
            &n.topic,
            &n.partition.to_string(),
            &n.new_offset.to_string(),
        ));
    }
    if dry_run {
        s.push_str("\n(dry run: nothing was changed)\n");
    }
    out::print(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_like_kafka() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00.000"), Ok(0));
        assert_eq!(parse_datetime("1700000000000"), Ok(1_700_000_000_000));
        // 2023-11-14T22:13:20Z is 1700000000 s
        assert_eq!(
            parse_datetime("2023-11-14T22:13:20Z"),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_datetime("2023-11-14T22:13:20.5"),
            Ok(1_700_000_000_500)
        );
        assert_eq!(
            parse_datetime("2023-11-14T23:13:20+01:00"),
            Ok(1_700_000_000_000)
        );
        assert_eq!(parse_datetime("2024-02-29T00:00"), Ok(1_709_164_800_000));
        assert!(parse_datetime("yesterday").is_err());
        assert!(parse_datetime("2024-13-01T00:00:00").is_err());
    }
}
