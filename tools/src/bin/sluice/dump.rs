//! `sluice dump-log FILE...`: kafka-dump-log.sh, offline (no broker needed).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;
use sluice_tools::dumplog::{
    dump_index, dump_segment, BatchLine, DumpOptions, IndexEntry, SegmentSummary,
};

use crate::out::CliError;
use crate::Global;

#[derive(Debug, Args)]
pub struct DumpLogArgs {
    /// Segment files (.log), or their .index / .timeindex files
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Kafka's spelling: --files a.log,b.log
    #[arg(long = "files", value_delimiter = ',', hide = true)]
    files_flag: Vec<PathBuf>,
    /// Also print every record: offset, timestamp, key, value, headers (compressed batches
    /// are decompressed)
    #[arg(long, alias = "print-data-log", alias = "deep-iteration")]
    print_records: bool,
}

#[derive(Serialize)]
struct JsonSegment {
    #[serde(flatten)]
    summary: SegmentSummary,
    batches: Vec<BatchLine>,
}

#[derive(Serialize)]
struct JsonIndex {
    file: String,
    entries: Vec<IndexEntry>,
    trailing_bytes: usize,
}

#[derive(Serialize)]
#[serde(untagged)]
enum JsonFile {
    Segment(JsonSegment),
    Index(JsonIndex),
}

fn is_index(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e == "index" || e == "timeindex")
}

fn io_err(path: &Path, e: io::Error) -> CliError {
    CliError::failed(format!("cannot read {}: {e}", path.display()))
}

/// The report of where a file stops being valid.
fn damage_text(s: &SegmentSummary) -> Option<String> {
    let d = s.damage.as_ref()?;
    let prefix = match (s.first_offset, s.last_valid_offset) {
        (Some(a), Some(b)) => format!(
            "offsets {a}..{b} in {} valid batch{}",
            s.valid_batches,
            if s.valid_batches == 1 { "" } else { "es" }
        ),
        _ => "no valid batch".to_string(),
    };
    Some(format!(
        "{} is damaged at position {}: {}. It is valid up to position {} ({prefix}); the {} \
         bytes from there on are not.",
        s.file, d.position, d.reason, d.position, d.bytes_after
    ))
}

pub fn run(g: &Global, a: DumpLogArgs) -> Result<(), CliError> {
    let opts = DumpOptions {
        print_records: a.print_records,
    };
    let files: Vec<PathBuf> = a.files.into_iter().chain(a.files_flag).collect();
    if files.is_empty() {
        return Err(CliError::usage("name at least one segment file"));
    }
    let mut damaged: Vec<String> = Vec::new();
    let mut json = Vec::new();
    let stdout = io::stdout();
    let mut w = io::BufWriter::new(stdout.lock());
    for path in &files {
        if is_index(path) {
            let (entries, trailing) = dump_index(path).map_err(|e| io_err(path, e))?;
            if g.json() {
                json.push(JsonFile::Index(JsonIndex {
                    file: path.display().to_string(),
                    entries,
                    trailing_bytes: trailing,
                }));
                continue;
            }
            writeln!(w, "Dumping {}", path.display())?;
            for e in &entries {
                writeln!(w, "{}", e.kafka_line())?;
            }
            if trailing > 0 {
                writeln!(
                    w,
                    "Found {trailing} trailing bytes that are not a whole entry"
                )?;
            }
            continue;
        }
        if !path.is_file() {
            return Err(io_err(
                path,
                io::Error::new(io::ErrorKind::NotFound, "no such file"),
            ));
        }
        let mut batches = Vec::new();
        let text = !g.json();
        if text {
            writeln!(w, "Dumping {}", path.display())?;
            if let Some(b) = sluice_tools::dumplog::base_offset_of(path) {
                writeln!(w, "Log starting offset: {b}")?;
            }
        }
        let summary = dump_segment(path, opts, |b| {
            if text {
                writeln!(w, "{}", b.kafka_line())?;
                if let Some(t) = b.delete_horizon_ms {
                    writeln!(w, "  deleteHorizonMs: {t} (set by the log cleaner)")?;
                }
                if let Some(e) = &b.error {
                    writeln!(w, "  invalid: {e}")?;
                }
                for r in b.records.iter().flatten() {
                    writeln!(w, "{}", r.kafka_line(b.timestamp_type))?;
                }
            } else {
                batches.push(b.clone());
            }
            Ok(())
        })
        .map_err(|e| io_err(path, e))?;
        if text {
            for n in &summary.notes {
                writeln!(w, "Note: {n}")?;
            }
            if summary.absent_offsets > 0 {
                writeln!(
                    w,
                    "Note: {} offsets hold no record (a cleaned segment of a compacted topic: \
                     batches keep their offsets, gaps are expected)",
                    summary.absent_offsets
                )?;
            }
            if summary.zero_padding > 0 {
                writeln!(
                    w,
                    "Found {} zero bytes after position {} (preallocated space of an active \
                     segment, not data)",
                    summary.zero_padding, summary.valid_bytes
                )?;
            }
        }
        if let Some(t) = damage_text(&summary) {
            if text {
                writeln!(w, "{t}")?;
            }
            damaged.push(format!(
                "{} is damaged at position {} (valid up to position {})",
                summary.file,
                summary.damage.as_ref().map_or(0, |d| d.position),
                summary.valid_bytes
            ));
        }
        if g.json() {
            json.push(JsonFile::Segment(JsonSegment { summary, batches }));
        }
    }
    if g.json() {
        let s = serde_json::to_string_pretty(&json).map_err(|e| CliError::failed(e.to_string()))?;
        writeln!(w, "{s}")?;
    }
    w.flush()?;
    match damaged.len() {
        0 => Ok(()),
        1 => Err(CliError::failed(damaged.remove(0))),
        n => Err(CliError::failed(format!(
            "{n} files are damaged: {}",
            damaged.join("; ")
        ))),
    }
}
