//! `index.html` of a run's report directory: the run's settings, the summary (the figures of
//! the text summary, as tables and as the lines printed at the end of the run), the broker and
//! machine, the plots (by relative `<img src>`) and links to the other report files. One
//! self-contained page: inline CSS, no scripts, nothing fetched from elsewhere. Every text put
//! into it is escaped.

use std::fmt::Write as _;

use serde_json::Value;

use crate::report::{summary_lines, Latency, Summary, ThroughputJson};
use crate::run::RunResult;

/// The page's file name.
pub const INDEX: &str = "index.html";

const STYLE: &str = "body{font-family:sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;\
color:#222}h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.25em .6em;\
text-align:left}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;white-space:pre-wrap}\
.ok{color:#176b2c;font-weight:bold}.failed{color:#b00020;font-weight:bold}\
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}\
figcaption{font-size:.9em;color:#555}";

/// `s` with `& < > " '` escaped, for text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as a settings cell: strings without quotes, `null` as `-`, arrays joined.
fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(value_text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// A two-column table of the fields of a JSON object (in its order).
fn fields_table(s: &mut String, v: &Value) {
    let Some(map) = v.as_object() else {
        let _ = writeln!(s, "<p>{}</p>", escape(&value_text(v)));
        return;
    };
    s.push_str("<table>\n");
    for (k, v) in map {
        let _ = writeln!(
            s,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(k),
            escape(&value_text(v))
        );
    }
    s.push_str("</table>\n");
}

fn throughput_row(s: &mut String, name: &str, t: &ThroughputJson) {
    let _ = writeln!(
        s,
        "<tr><th>{}</th><td class=\"n\">{}</td><td class=\"n\">{:.1}</td>\
         <td class=\"n\">{:.2}</td><td class=\"n\">{}</td><td class=\"n\">{:.3}</td></tr>",
        escape(name),
        t.messages,
        t.messages_per_sec,
        t.mb_per_sec,
        t.bytes,
        t.seconds
    );
}

fn latency_row(s: &mut String, name: &str, l: &Latency) {
    let _ = write!(
        s,
        "<tr><th>{}</th><td class=\"n\">{}</td>",
        escape(name),
        l.count
    );
    for v in [
        l.avg_ms, l.min_ms, l.p50_ms, l.p90_ms, l.p95_ms, l.p99_ms, l.p999_ms, l.p9999_ms, l.max_ms,
    ] {
        let _ = write!(s, "<td class=\"n\">{v:.2}</td>");
    }
    s.push_str("</tr>\n");
}

/// Whether `name` is a plot (an image loadgen draws).
fn is_plot(name: &str) -> bool {
    name.ends_with(".svg") || name.ends_with(".png")
}

/// The page for run `r` with summary `summary`, whose report directory holds `files` (file
/// names, the page itself left out).
pub fn index_html(r: &RunResult, summary: &Summary, files: &[String]) -> String {
    let mut s = String::with_capacity(16 * 1024);
    let title = format!("loadgen: {}", summary.label);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let (class, status) = if summary.ok {
        ("ok", "OK")
    } else {
        ("failed", "FAILED")
    };
    let _ = writeln!(
        s,
        "<p><span class=\"{class}\">{status}</span> &middot; started {} &middot; run id {} \
         &middot; {} producers &middot; {:.1} s wall time</p>",
        escape(&summary.started),
        summary.run_id,
        escape(&summary.producer_mode),
        summary.wall_seconds
    );

    s.push_str("<h2>Summary</h2>\n<pre>");
    for line in summary_lines(r) {
        s.push_str(&escape(&line));
        s.push('\n');
    }
    s.push_str("</pre>\n");
    if summary.produce.is_some() || summary.consume.is_some() {
        s.push_str(
            "<table>\n<tr><th></th><th class=\"n\">records</th><th class=\"n\">records/sec</th>\
             <th class=\"n\">MB/sec</th><th class=\"n\">bytes</th><th class=\"n\">seconds</th>\
             </tr>\n",
        );
        if let Some(p) = &summary.produce {
            throughput_row(&mut s, "produced", p);
        }
        if let Some(c) = &summary.consume {
            throughput_row(&mut s, "consumed", c);
        }
        s.push_str("</table>\n");
    }
    let mut latencies: Vec<(&str, &Latency)> = Vec::new();
    if let Some(l) = &summary.produce_latency {
        latencies.push(("send-to-ack", l));
    }
    if let Some(l) = &summary.e2e_latency {
        latencies.push(("end-to-end", l));
    }
    if let Some(t) = &summary.transactions {
        latencies.push(("commit (EndTxn)", &t.commit_latency));
        latencies.push(("AddPartitionsToTxn", &t.add_partitions_latency));
    }
    if !latencies.is_empty() {
        s.push_str("<table>\n<tr><th>latency (ms)</th><th class=\"n\">count</th>");
        for h in [
            "avg", "min", "50th", "90th", "95th", "99th", "99.9th", "99.99th", "max",
        ] {
            let _ = write!(s, "<th class=\"n\">{h}</th>");
        }
        s.push_str("</tr>\n");
        for (name, l) in latencies {
            latency_row(&mut s, name, l);
        }
        s.push_str("</table>\n");
    }
    if let Some(t) = &summary.transactions {
        let _ = writeln!(
            s,
            "<p>{} transactions committed, {} messages per transaction and producer.</p>",
            t.committed, t.messages_per_transaction
        );
    }
    if let Some(v) = &r.verification {
        let _ = writeln!(s, "<p>{}</p>", escape(&v.line()));
    }
    if summary.failed_messages > 0 || !summary.errors.is_empty() {
        let _ = writeln!(
            s,
            "<p class=\"failed\">{} messages not acknowledged, {} errors</p>",
            summary.failed_messages, r.errors.0
        );
        s.push_str("<ul>\n");
        for e in &summary.errors {
            let _ = writeln!(s, "<li>{}</li>", escape(e));
        }
        s.push_str("</ul>\n");
    }

    let plots: Vec<&String> = files.iter().filter(|f| is_plot(f)).collect();
    if !plots.is_empty() {
        s.push_str("<h2>Plots</h2>\n");
        // one figure per plot, the SVG shown when there is one, every format linked
        let mut stems: Vec<&str> = plots
            .iter()
            .map(|f| f.rsplit_once('.').map_or(f.as_str(), |(a, _)| a))
            .collect();
        stems.dedup();
        for stem in stems {
            let formats: Vec<&&String> = plots
                .iter()
                .filter(|f| f.rsplit_once('.').is_some_and(|(a, _)| a == stem))
                .collect();
            let shown = formats
                .iter()
                .find(|f| f.ends_with(".svg"))
                .or(formats.first())
                .map_or("", |f| f.as_str());
            let _ = write!(
                s,
                "<figure><img src=\"{}\" alt=\"{}\"><figcaption>",
                escape(shown),
                escape(stem)
            );
            let links: Vec<String> = formats
                .iter()
                .map(|f| format!("<a href=\"{}\">{}</a>", escape(f), escape(f)))
                .collect();
            s.push_str(&links.join(" &middot; "));
            s.push_str("</figcaption></figure>\n");
        }
    }

    s.push_str("<h2>Settings</h2>\n");
    fields_table(&mut s, &summary.config);
    s.push_str("<h2>Broker</h2>\n");
    fields_table(&mut s, &summary.broker);
    s.push_str("<h2>Machine</h2>\n");
    fields_table(
        &mut s,
        &serde_json::to_value(&summary.machine).unwrap_or_default(),
    );

    let others: Vec<&String> = files.iter().filter(|f| !is_plot(f)).collect();
    if !others.is_empty() {
        s.push_str("<h2>Files</h2>\n<ul>\n");
        for f in others {
            let _ = writeln!(s, "<li><a href=\"{}\">{}</a></li>", escape(f), escape(f));
        }
        s.push_str("</ul>\n");
    }
    s.push_str("</body>\n</html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn settings_values_read_as_text() {
        assert_eq!(value_text(&Value::Null), "-");
        assert_eq!(value_text(&Value::from("e2e")), "e2e");
        assert_eq!(value_text(&serde_json::json!(["a=1", "b=2"])), "a=1, b=2");
        assert_eq!(value_text(&serde_json::json!([])), "-");
        assert_eq!(value_text(&serde_json::json!(5.0)), "5.0");
    }
}
