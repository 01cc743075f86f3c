//! The HTML page: sections, charts with captions, tables.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use plotters::prelude::SeriesLabelPosition;

use super::charts::{
    Bars, Chart, HBars, Line, Lines, Mark, Spec, VerdictCell, VerdictRow, Verdicts, fmt_num, render,
};
use super::{Attack, COUNT_CRITERION, ReportInput, SensorSeries, by_sensor};
use crate::matrix::{CryptoReport, HandshakeResult, SampleSet};
use crate::stats::percentile_sorted;

/// HTML-escapes text.
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1040px;\
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}\
h1{font-size:1.7em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}\
figure{margin:1.5em 0;border:1px solid #e4e4e4;padding:.6em;border-radius:4px}\
figure svg{max-width:100%;height:auto;display:block}\
figcaption{font-size:.95em;margin-top:.4em}\
table{border-collapse:collapse;font-size:.85em;margin:1em 0;display:block;overflow-x:auto}\
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}\
th{background:#f4f4f4}td.l,th.l{text-align:left}\
td.w,th.w{white-space:normal;min-width:14em}\
.missing{background:#fafafa;border-left:4px solid #bbb;padding:.4em 1em}.missing li{margin:.3em 0}\
.note{color:#555;font-size:.9em}ul.summary{background:#f6f8fa;border:1px solid #e4e4e4;border-radius:4px;padding:.6em 1em .6em 2em}ul.summary li{margin:.2em 0}.ok{color:#1a7f37}.bad{color:#c62828;font-weight:bold}";

struct Page<'a> {
    body: String,
    charts: Vec<Chart>,
    /// Sections with results, in order: (id, short title) for the navigation.
    shown: Vec<(String, String)>,
    /// Sections not measured: (what, how to measure it), listed once at the end.
    missing: Vec<(String, String)>,
    /// One line per section with its main result, for the summary at the top: (id, text).
    headlines: Vec<(String, String)>,
    png: &'a dyn Fn(&str) -> PathBuf,
}

impl Page<'_> {
    /// Opens a section with results (only called once there is something to show).
    fn h2(&mut self, id: &str, title: &str) {
        self.shown.push((id.to_string(), title.to_string()));
        let _ = writeln!(self.body, "<section id=\"{id}\"><h2>{}</h2>", esc(title));
    }

    fn end(&mut self) {
        self.body.push_str("</section>\n");
    }

    fn p(&mut self, html: &str) {
        let _ = writeln!(self.body, "<p>{html}</p>");
    }

    /// The main result of section `id`, for the summary at the top of the page.
    fn headline(&mut self, id: &str, text: String) {
        self.headlines.push((id.to_string(), text));
    }

    /// A section without results: left out of the page, listed once at its end.
    fn missing(&mut self, what: &str, how: &str) {
        self.missing.push((what.to_string(), how.to_string()));
    }

    fn chart(&mut self, id: &str, title: &str, caption: String, spec: Spec) -> Result<()> {
        let png = (self.png)(id);
        let c = render(id, title, caption, &spec, &png)?;
        let name = png
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let _ = writeln!(
            self.body,
            "<figure id=\"chart-{id}\">{}<figcaption><b>{}</b> — {} <a href=\"{}\">(PNG)</a></figcaption></figure>",
            c.svg,
            esc(&c.title),
            esc(&c.caption),
            esc(&name)
        );
        self.charts.push(c);
        Ok(())
    }

    fn table(&mut self, head: &[&str], rows: &[Vec<String>], left_cols: usize) {
        self.table_wrapped(head, rows, left_cols, &[]);
    }

    /// A table whose columns `wrap` are left-aligned and wrap their text.
    fn table_wrapped(
        &mut self,
        head: &[&str],
        rows: &[Vec<String>],
        left_cols: usize,
        wrap: &[usize],
    ) {
        let cls = |i: usize| {
            if wrap.contains(&i) {
                " class=\"l w\""
            } else if i < left_cols {
                " class=\"l\""
            } else {
                ""
            }
        };
        self.body.push_str("<table><thead><tr>");
        for (i, h) in head.iter().enumerate() {
            let _ = write!(self.body, "<th{}>{}</th>", cls(i), esc(h));
        }
        self.body.push_str("</tr></thead><tbody>\n");
        for r in rows {
            self.body.push_str("<tr>");
            for (i, c) in r.iter().enumerate() {
                let _ = write!(self.body, "<td{}>{}</td>", cls(i), esc(c));
            }
            self.body.push_str("</tr>\n");
        }
        self.body.push_str("</tbody></table>\n");
    }
}

fn f1(v: f64) -> String {
    format!("{v:.1}")
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("—".into(), |v| v.to_string())
}

fn optf(v: Option<f64>, decimals: usize) -> String {
    v.map_or("—".into(), |v| format!("{v:.decimals$}"))
}

/// What the crypto sections need, and how to get it.
const CRYPTO_MISSING: (&str, &str) = (
    "crypto benchmarks (handshake cost per suite, record protection, memory per session, \
     ciphertext analysis, latency distributions)",
    "run `iotseal bench crypto --out DIR` (`--quick` takes seconds) and put crypto.json in the \
     input directory",
);

/// Builds the page; returns (HTML, charts, sections not measured). Sections come in a fixed
/// order, each only if it has results; the ones without are listed once, at the end.
pub(crate) fn build(
    input: &ReportInput,
    png: &dyn Fn(&str) -> PathBuf,
) -> Result<(String, Vec<Chart>, Vec<String>)> {
    let mut pg = Page {
        body: String::new(),
        charts: Vec::new(),
        shown: Vec::new(),
        missing: Vec::new(),
        headlines: Vec::new(),
        png,
    };
    match &input.crypto {
        Some(c) => crypto_sections(&mut pg, c)?,
        None => pg.missing(CRYPTO_MISSING.0, CRYPTO_MISSING.1),
    }
    load_section(&mut pg, input.load.as_deref())?;
    attacks_section(&mut pg, input.attacks.as_ref())?;
    simulation_section(&mut pg, input.simulation.as_ref())?;
    series_section(&mut pg, input.series.as_deref())?;

    if !pg.missing.is_empty() {
        pg.body.push_str(
            "<section id=\"not-measured\" class=\"missing\"><h2>Not measured in this run</h2><ul>\n",
        );
        for (what, how) in &pg.missing {
            let _ = writeln!(pg.body, "<li><b>{}</b>: {}.</li>", esc(what), code(how));
        }
        pg.body.push_str("</ul></section>\n");
    }

    let mut head = String::new();
    let _ = write!(
        head,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>iotseal performance report</title><style>{STYLE}</style></head><body>\n\
         <h1>iotseal performance report</h1>\n"
    );
    let _ = writeln!(
        head,
        "<p class=\"note\">Generated {} by <code>iotseal report</code>. Inputs: {}. \
         Self-contained: charts are inline SVG (also written as PNG beside this file); \
         nothing is loaded from the network.</p>",
        crate::matrix::utc_now(),
        if input.sources.is_empty() {
            "none".to_string()
        } else {
            esc(&input.sources.join(", "))
        }
    );
    if let Some(c) = &input.crypto {
        let m = &c.machine;
        let _ = writeln!(
            head,
            "<p class=\"note\">Crypto run: {} on {} ({} CPUs, kernel {}, features: {}), \
             {}{:.0} s.</p>",
            esc(&c.started_utc),
            esc(&m.cpu),
            m.cpus,
            esc(&m.kernel),
            esc(&m.features.join(" ")),
            if c.config.quick {
                "a cut-down configuration (see the notes under Handshakes), "
            } else {
                ""
            },
            c.elapsed_secs
        );
    }
    head.push_str("<nav><p>");
    let mut links: Vec<String> = pg
        .shown
        .iter()
        .map(|(id, t)| format!("<a href=\"#{id}\">{}</a>", esc(nav_title(id, t))))
        .collect();
    if !pg.missing.is_empty() {
        links.push("<a href=\"#not-measured\">Not measured</a>".into());
    }
    head.push_str(&links.join(" · "));
    head.push_str("</p></nav>\n");
    if !pg.headlines.is_empty() {
        head.push_str("<ul class=\"summary\">\n");
        for (id, text) in &pg.headlines {
            let title = pg
                .shown
                .iter()
                .find(|(i, _)| i == id)
                .map_or(id.as_str(), |(i, t)| nav_title(i, t));
            let _ = writeln!(
                head,
                "<li><a href=\"#{id}\">{}</a>: {}</li>",
                esc(title),
                esc(text)
            );
        }
        head.push_str("</ul>\n");
    }
    let page = format!("{head}{}</body></html>\n", pg.body);
    let missing = pg.missing.into_iter().map(|(w, _)| w).collect();
    Ok((page, pg.charts, missing))
}

/// Short titles for the navigation.
fn nav_title<'a>(id: &str, title: &'a str) -> &'a str {
    match id {
        "handshakes" => "Handshakes",
        "records" => "Records",
        "memory" => "Memory",
        "analysis" => "Ciphertext analysis",
        "latency" => "Latency",
        "load" => "Load",
        "threats" => "Threat lab",
        "simulation" => "Simulation",
        "series" => "Sensor data",
        _ => title,
    }
}

/// Escapes `s`, setting text between backquotes in `<code>`.
fn code(s: &str) -> String {
    s.split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{}</code>", esc(part))
            } else {
                esc(part)
            }
        })
        .collect()
}

fn providers_of(c: &CryptoReport) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for h in &c.handshakes {
        if !v.contains(&h.provider) {
            v.push(h.provider.clone());
        }
    }
    v
}

fn hs_label(h: &HandshakeResult) -> String {
    format!("{} / {}", h.kem, h.sig)
}

fn crypto_sections(pg: &mut Page<'_>, c: &CryptoReport) -> Result<()> {
    // Handshakes.
    pg.h2("handshakes", "Handshake cost per suite");
    pg.p(&esc(&c.structure));
    for n in &c.config.notes {
        pg.p(&format!("<span class=\"note\">{}</span>", esc(n)));
    }
    for prov in &providers_of(c) {
        let rows: Vec<&HandshakeResult> = c
            .handshakes
            .iter()
            .filter(|h| &h.provider == prov)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let total = |h: &HandshakeResult| h.device_us.median + h.gateway_us.median;
        let cheapest = rows
            .iter()
            .min_by(|a, b| total(a).total_cmp(&total(b)))
            .unwrap();
        let dearest = rows
            .iter()
            .max_by(|a, b| total(a).total_cmp(&total(b)))
            .unwrap();
        let default = rows
            .iter()
            .find(|h| h.kem == "x25519mlkem768" && h.sig == "ed25519");
        let mut cap = format!(
            "Median CPU time per handshake on each side ({} runs, log scale). Cheapest: {} \
             (device {:.0} µs, gateway {:.0} µs); most expensive: {} (device {:.0} µs, gateway \
             {:.0} µs, {:.1}× the cheapest).",
            c.config.handshake_iterations,
            hs_label(cheapest),
            cheapest.device_us.median,
            cheapest.gateway_us.median,
            hs_label(dearest),
            dearest.device_us.median,
            dearest.gateway_us.median,
            total(dearest) / total(cheapest)
        );
        if !pg.headlines.iter().any(|h| h.0 == "handshakes") {
            let (what, h) = match default {
                Some(d) => ("the default suite", *d),
                None => ("the cheapest suite", *cheapest),
            };
            let mut line = format!(
                "{what} ({}) costs {:.0} µs of CPU on the device and {:.0} µs on the gateway \
                 per handshake ({prov}, median of {})",
                hs_label(h),
                h.device_us.median,
                h.gateway_us.median,
                c.config.handshake_iterations
            );
            if rows.len() > 1 {
                let _ = write!(
                    line,
                    "; the most expensive, {}, is {:.1}× the cheapest",
                    hs_label(dearest),
                    total(dearest) / total(cheapest)
                );
            }
            pg.headline("handshakes", line);
        }
        if let Some(d) = default {
            let _ = write!(
                cap,
                " The default hybrid x25519mlkem768 / ed25519 costs {:.0} + {:.0} µs, {:.2}× the \
                 cheapest: post-quantum key exchange is affordable; post-quantum signatures \
                 (mldsa65) are what makes a handshake expensive.",
                d.device_us.median,
                d.gateway_us.median,
                total(d) / total(cheapest)
            );
        }
        pg.chart(
            &format!("handshake-{}", slug(prov)),
            &format!("Handshake CPU time per suite — provider {prov}"),
            cap,
            Spec::HBars(HBars {
                categories: rows.iter().map(|h| hs_label(h)).collect(),
                series: vec![
                    Bars {
                        name: "device (start + finish)".into(),
                        values: rows.iter().map(|h| h.device_us.median).collect(),
                    },
                    Bars {
                        name: "gateway (hello + finish)".into(),
                        values: rows.iter().map(|h| h.gateway_us.median).collect(),
                    },
                ],
                x_desc: "CPU time per handshake (µs, median, log scale)".into(),
                log_x: true,
                stacked: false,
                annotate: true,
                decimals: Some(0),
            }),
        )?;
    }
    // Bytes on the wire: the same for every provider.
    let first = providers_of(c).into_iter().next().unwrap_or_default();
    let rows: Vec<&HandshakeResult> = c
        .handshakes
        .iter()
        .filter(|h| h.provider == first)
        .collect();
    if !rows.is_empty() {
        let tot = |h: &HandshakeResult| h.device_to_gateway_bytes + h.gateway_to_device_bytes;
        let small = rows.iter().min_by_key(|h| tot(h)).unwrap();
        let big = rows.iter().max_by_key(|h| tot(h)).unwrap();
        let mut cap = format!(
            "Bytes of each handshake message, stacked (identical for every provider). Smallest: \
             {} with {} bytes in all; largest: {} with {} bytes ({:.0}×).",
            hs_label(small),
            tot(small),
            hs_label(big),
            tot(big),
            tot(big) as f64 / tot(small).max(1) as f64
        );
        if let Some(d) = rows
            .iter()
            .find(|h| h.kem == "x25519mlkem768" && h.sig == "ed25519")
        {
            let _ = write!(
                cap,
                " The default hybrid needs {} bytes: the ML-KEM shares (M1, M2) dominate; ML-DSA \
                 signatures add ~3.3 kB to each of M2 and M3. On constrained links prefer \
                 Ed25519 identities.",
                tot(d)
            );
        }
        pg.chart(
            "handshake-bytes",
            "Handshake bytes on the wire per suite",
            cap,
            Spec::HBars(HBars {
                categories: rows.iter().map(|h| hs_label(h)).collect(),
                series: vec![
                    Bars {
                        name: "M1 (device → gateway)".into(),
                        values: rows.iter().map(|h| h.m1_bytes as f64).collect(),
                    },
                    Bars {
                        name: "M2 (gateway → device)".into(),
                        values: rows.iter().map(|h| h.m2_bytes as f64).collect(),
                    },
                    Bars {
                        name: "M3 (device → gateway)".into(),
                        values: rows.iter().map(|h| h.m3_bytes as f64).collect(),
                    },
                    Bars {
                        name: "ack (gateway → device)".into(),
                        values: rows.iter().map(|h| h.ack_bytes as f64).collect(),
                    },
                ],
                x_desc: "bytes on the wire per handshake".into(),
                log_x: false,
                stacked: true,
                annotate: false,
                decimals: None,
            }),
        )?;
    }
    let table: Vec<Vec<String>> = c
        .handshakes
        .iter()
        .map(|h| {
            vec![
                h.provider.clone(),
                h.kem.clone(),
                h.sig.clone(),
                f1(h.device_us.median),
                f1(h.device_us.p90),
                f1(h.gateway_us.median),
                f1(h.gateway_us.p90),
                h.m1_bytes.to_string(),
                h.m2_bytes.to_string(),
                h.m3_bytes.to_string(),
                h.ack_bytes.to_string(),
                h.device_to_gateway_bytes.to_string(),
                h.gateway_to_device_bytes.to_string(),
            ]
        })
        .collect();
    pg.table(
        &[
            "provider",
            "kem",
            "signature",
            "device µs",
            "device p90",
            "gateway µs",
            "gateway p90",
            "M1 B",
            "M2 B",
            "M3 B",
            "ack B",
            "device→gateway B",
            "gateway→device B",
        ],
        &table,
        3,
    );
    if !c.primitives.is_empty() {
        pg.p(
            "The primitive operations a handshake is made of (median, µs): the device runs \
              keygen + complete + verify + sign, the gateway respond + sign + verify.",
        );
        let rows: Vec<Vec<String>> = c
            .primitives
            .iter()
            .map(|p| {
                vec![
                    p.provider.clone(),
                    p.alg.clone(),
                    p.op.clone(),
                    f1(p.us.median),
                    f1(p.us.p90),
                ]
            })
            .collect();
        pg.table(
            &["provider", "algorithm", "operation", "µs", "p90 µs"],
            &rows,
            3,
        );
    }
    pg.end();

    // Records.
    pg.h2("records", "Record protection: throughput and overhead");
    let label = |p: &str, a: &str, baseline: bool| {
        if baseline {
            "no encryption (baseline)".to_string()
        } else {
            format!("{p} {a}")
        }
    };
    for (which, id, title) in [
        (
            0,
            "throughput-seal",
            "Record seal throughput vs payload size",
        ),
        (
            1,
            "throughput-open",
            "Record open throughput vs payload size",
        ),
    ] {
        let series: Vec<Line> = c
            .records
            .iter()
            .map(|r| Line {
                name: label(&r.provider, &r.aead, r.baseline),
                points: r
                    .sizes
                    .iter()
                    .map(|s| {
                        (
                            s.bytes as f64,
                            if which == 0 { s.seal_mb_s } else { s.open_mb_s },
                        )
                    })
                    .collect(),
                dashed: r.baseline,
            })
            .collect();
        let largest = c
            .records
            .iter()
            .filter_map(|r| r.sizes.last().map(|s| (r, s)))
            .filter(|(r, _)| !r.baseline)
            .map(|(r, s)| {
                (
                    label(&r.provider, &r.aead, false),
                    s.bytes,
                    if which == 0 { s.seal_mb_s } else { s.open_mb_s },
                )
            })
            .collect::<Vec<_>>();
        let fastest = largest.iter().max_by(|a, b| a.2.total_cmp(&b.2));
        let slowest = largest.iter().min_by(|a, b| a.2.total_cmp(&b.2));
        let base = c
            .records
            .iter()
            .find(|r| r.baseline)
            .and_then(|r| r.sizes.last())
            .map(|s| if which == 0 { s.seal_mb_s } else { s.open_mb_s });
        let mut cap = String::from(
            "Plaintext MB/s (10^6 bytes/s, median of batches; log scales) through Session::seal \
             (header, nonce, encryption) or Session::open + accept (parse, replay window, \
             decryption). ",
        );
        if let (Some(f), Some(s)) = (fastest, slowest) {
            let _ = write!(
                cap,
                "At {} B the fastest is {} ({:.0} MB/s) and the slowest {} ({:.0} MB/s, {:.1}× \
                 slower). Small records are dominated by per-record costs: batch readings.",
                f.1,
                f.0,
                f.2,
                s.0,
                s.2,
                f.2 / s.2.max(1e-9)
            );
        }
        if let Some(b) = base {
            let _ = write!(
                cap,
                " The dashed baseline (no encryption, {b:.0} MB/s at the largest size) is the \
                 protocol's own ceiling."
            );
        }
        pg.chart(
            id,
            title,
            cap,
            Spec::Lines(Lines {
                series,
                x_desc: "payload per record (bytes, log scale)".into(),
                y_desc: "throughput (MB/s, log scale)".into(),
                log_x: true,
                log_y: true,
                markers: true,
                y_from_zero: false,
                legend: SeriesLabelPosition::LowerRight,
            }),
        )?;
    }
    let table: Vec<Vec<String>> = c
        .records
        .iter()
        .flat_map(|r| {
            r.sizes.iter().map(move |s| {
                vec![
                    r.provider.clone(),
                    r.aead.clone(),
                    s.bytes.to_string(),
                    s.wire_bytes.to_string(),
                    format!("{:.0}", s.seal_ns.median),
                    format!("{:.0}", s.open_ns.median),
                    f1(s.seal_mb_s),
                    f1(s.open_mb_s),
                ]
            })
        })
        .collect();
    pg.table(
        &[
            "provider",
            "record protection",
            "payload B",
            "wire B",
            "seal ns",
            "open ns",
            "seal MB/s",
            "open MB/s",
        ],
        &table,
        2,
    );
    if let Some(r) = c.records.iter().find(|r| !r.baseline) {
        let o = r.overhead_bytes as f64;
        let m = r.overhead_bytes_max as f64;
        let sizes: Vec<f64> = (4..=14).map(|e| f64::from(1u32 << e)).collect();
        let pct = |ov: f64| -> Vec<(f64, f64)> {
            sizes.iter().map(|&s| (s, 100.0 * ov / (s + ov))).collect()
        };
        pg.chart(
            "overhead",
            "Record overhead as a share of the bytes on the wire",
            format!(
                "Every record protection adds the same header + 16-byte tag: {} bytes on a \
                 session's first records, at most {} (4-byte sequence and time fields). That is \
                 {:.0}% of the wire bytes for a 16-byte reading, {:.0}% at 64 B and {:.1}% at \
                 1 KiB: send readings in batches of a few hundred bytes or more.",
                r.overhead_bytes,
                r.overhead_bytes_max,
                100.0 * o / (16.0 + o),
                100.0 * o / (64.0 + o),
                100.0 * o / (1024.0 + o)
            ),
            Spec::Lines(Lines {
                series: vec![
                    Line {
                        name: format!("measured: {} B per record", r.overhead_bytes),
                        points: pct(o),
                        dashed: false,
                    },
                    Line {
                        name: format!("largest header: {} B per record", r.overhead_bytes_max),
                        points: pct(m),
                        dashed: true,
                    },
                ],
                x_desc: "payload per record (bytes, log scale)".into(),
                y_desc: "overhead (% of wire bytes)".into(),
                log_x: true,
                log_y: false,
                markers: true,
                y_from_zero: true,
                legend: SeriesLabelPosition::UpperRight,
            }),
        )?;
    }
    pg.end();

    // Memory.
    let mem: Vec<_> = c
        .records
        .iter()
        .filter_map(|r| {
            r.session_rss_bytes.map(|b| {
                (
                    label(&r.provider, &r.aead, r.baseline),
                    b,
                    r.memory_sessions,
                )
            })
        })
        .collect();
    if mem.is_empty() {
        let how = if c.records.iter().all(|r| r.memory_sessions == 0) {
            "the crypto run left it out (it needs a process of its own: memory other work \
             freed would hide the sessions' cost); run `iotseal bench crypto --out DIR`"
        } else {
            "crypto.json has no RSS figures (no /proc on the machine that ran it)"
        };
        pg.missing("memory per session", how);
    } else {
        pg.h2("memory", "Memory per session");
        let lo = mem.iter().map(|m| m.1).fold(f64::INFINITY, f64::min);
        let hi = mem.iter().map(|m| m.1).fold(0.0, f64::max);
        pg.chart(
            "memory",
            "Memory per established session",
            format!(
                "Resident memory added per gateway session (RSS delta over {} established \
                 sessions / count): {:.0} to {:.0} bytes, of which size_of::<Session>() = {} \
                 bytes is inline; the rest is the provider's key objects on the heap. 100,000 \
                 idle sessions fit in about {:.0} MB.",
                mem[0].2,
                lo,
                hi,
                c.session_size_of,
                hi * 1e5 / 1e6
            ),
            Spec::HBars(HBars {
                categories: mem.iter().map(|m| m.0.clone()).collect(),
                series: vec![Bars {
                    name: String::new(),
                    values: mem.iter().map(|m| m.1).collect(),
                }],
                x_desc: "RSS per session (bytes)".into(),
                log_x: false,
                stacked: false,
                annotate: true,
                decimals: Some(0),
            }),
        )?;
        let rows: Vec<Vec<String>> = c
            .records
            .iter()
            .map(|r| {
                vec![
                    r.provider.clone(),
                    r.aead.clone(),
                    r.overhead_bytes.to_string(),
                    r.overhead_bytes_max.to_string(),
                    optf(r.session_rss_bytes, 0),
                    r.memory_sessions.to_string(),
                ]
            })
            .collect();
        pg.table(
            &[
                "provider",
                "record protection",
                "overhead B",
                "overhead max B",
                "RSS B / session",
                "sessions held",
            ],
            &rows,
            2,
        );
        pg.end();
    }

    // Ciphertext analysis.
    if c.analysis.is_empty() {
        pg.missing("ciphertext analysis", "crypto.json has no analysis rows");
    } else {
        pg.h2("analysis", "Ciphertext analysis");
        let cats: Vec<String> = c
            .analysis
            .iter()
            .map(|a| label(&a.provider, &a.aead, a.baseline))
            .collect();
        let real: Vec<_> = c.analysis.iter().filter(|a| !a.baseline).collect();
        let ct_lo = real
            .iter()
            .map(|a| a.ciphertext_entropy)
            .fold(8.0, f64::min);
        let p_lo = real.iter().map(|a| a.ciphertext_p).fold(1.0, f64::min);
        let pt = c.analysis[0].plaintext_entropy;
        pg.chart(
            "entropy",
            "Byte entropy: plaintext vs ciphertext",
            format!(
                "Entropy of {} KiB of record payloads whose plaintext is {} ({:.2} bits/byte). \
                 Every record protection yields ≥ {:.3} bits/byte (8 = uniform) and chi-square \
                 p-values ≥ {:.3} (uniform bytes give p spread over (0, 1); the plaintext gives \
                 p ≈ 0): ciphertext reveals nothing of the plaintext's structure. The baseline \
                 shows what an unencrypted record would leak.",
                c.analysis[0].bytes / 1024,
                c.analysis[0].plaintext,
                pt,
                ct_lo,
                p_lo
            ),
            Spec::HBars(HBars {
                categories: cats.clone(),
                series: vec![
                    Bars {
                        name: "plaintext".into(),
                        values: c.analysis.iter().map(|a| a.plaintext_entropy).collect(),
                    },
                    Bars {
                        name: "ciphertext".into(),
                        values: c.analysis.iter().map(|a| a.ciphertext_entropy).collect(),
                    },
                ],
                x_desc: "byte entropy (bits per byte; 8 = uniform)".into(),
                log_x: false,
                stacked: false,
                annotate: true,
                decimals: Some(3),
            }),
        )?;
        let tag_lo = real
            .iter()
            .map(|a| a.same_nonce_tag_bits_changed)
            .fold(1.0, f64::min);
        let tag_hi = real
            .iter()
            .map(|a| a.same_nonce_tag_bits_changed)
            .fold(0.0, f64::max);
        let ct_max = real
            .iter()
            .map(|a| a.same_nonce_ciphertext_bits_changed_count)
            .fold(0.0, f64::max);
        pg.chart(
            "bitflip",
            "One plaintext bit flipped: bits changed in ciphertext and tag",
            format!(
                "Same key and nonce, one plaintext bit flipped: at most {ct_max:.0} ciphertext \
                 bit changes, because every mode here is a stream cipher (CTR in GCM and \
                 AES-CTR, ChaCha20). Ciphertext is malleable; integrity rests on the tag, of \
                 which {:.0}–{:.0}% of the bits change (≈ 50% is ideal). The record layer never \
                 reuses a nonce, so the next record's ciphertext differs in ≈ 50% of its bits \
                 even for nearly equal readings.",
                tag_lo * 100.0,
                tag_hi * 100.0
            ),
            Spec::HBars(HBars {
                categories: cats,
                series: vec![
                    Bars {
                        name: "same nonce: ciphertext bits changed (%)".into(),
                        values: c
                            .analysis
                            .iter()
                            .map(|a| a.same_nonce_ciphertext_bits_changed * 100.0)
                            .collect(),
                    },
                    Bars {
                        name: "same nonce: tag bits changed (%)".into(),
                        values: c
                            .analysis
                            .iter()
                            .map(|a| a.same_nonce_tag_bits_changed * 100.0)
                            .collect(),
                    },
                    Bars {
                        name: "next record: ciphertext bits changed (%)".into(),
                        values: c
                            .analysis
                            .iter()
                            .map(|a| a.next_record_ciphertext_bits_changed * 100.0)
                            .collect(),
                    },
                ],
                x_desc: "bits changed (%)".into(),
                log_x: false,
                stacked: false,
                annotate: true,
                decimals: Some(3),
            }),
        )?;
        let rows: Vec<Vec<String>> = c
            .analysis
            .iter()
            .map(|a| {
                vec![
                    a.provider.clone(),
                    a.aead.clone(),
                    a.bytes.to_string(),
                    format!("{:.4}", a.plaintext_entropy),
                    format!("{:.4}", a.ciphertext_entropy),
                    format!("{:.0}", a.plaintext_chi2),
                    format!("{:.2e}", a.plaintext_p),
                    format!("{:.1}", a.ciphertext_chi2),
                    format!("{:.3}", a.ciphertext_p),
                    format!("{:.2}", a.same_nonce_ciphertext_bits_changed_count),
                    format!("{:.4}", a.same_nonce_tag_bits_changed),
                    format!("{:.4}", a.next_record_ciphertext_bits_changed),
                ]
            })
            .collect();
        pg.table(
            &[
                "provider",
                "record protection",
                "bytes",
                "H(plaintext)",
                "H(ciphertext)",
                "χ² plaintext",
                "p plaintext",
                "χ² ciphertext",
                "p ciphertext",
                "ct bits changed",
                "tag bits changed",
                "next record changed",
            ],
            &rows,
            2,
        );
        pg.end();
    }

    // Latency CDFs.
    const CDF_KINDS: [&str; 3] = ["handshake_device", "handshake_gateway", "record_seal_open"];
    if !c
        .samples
        .iter()
        .any(|s| CDF_KINDS.contains(&s.kind.as_str()))
    {
        pg.missing(
            "latency distributions",
            "crypto.json has no per-iteration samples",
        );
        return Ok(());
    }
    pg.h2("latency", "Latency distributions");
    let cdf = |sets: Vec<&SampleSet>, with_provider_label: bool| -> Vec<Line> {
        sets.iter()
            .map(|s| {
                let mut v = s.values.clone();
                v.sort_by(f64::total_cmp);
                let n = v.len().max(1) as f64;
                Line {
                    name: if with_provider_label {
                        format!("{} {}", s.provider, s.label)
                    } else {
                        s.label.clone()
                    },
                    points: v
                        .iter()
                        .enumerate()
                        .map(|(i, x)| (*x, (i + 1) as f64 / n))
                        .collect(),
                    dashed: s.provider != "aws-lc",
                }
            })
            .collect()
    };
    let spread = |sets: &[&SampleSet]| -> String {
        let mut worst = (String::new(), 0.0);
        for s in sets {
            let mut v = s.values.clone();
            v.sort_by(f64::total_cmp);
            let r = percentile_sorted(&v, 0.99) / percentile_sorted(&v, 0.5).max(1e-9);
            if r > worst.1 {
                worst = (format!("{} {}", s.provider, s.label), r);
            }
        }
        format!("the widest p99/p50 spread is {:.1}× ({})", worst.1, worst.0)
    };
    for (kind, id, title, unit) in [
        (
            "handshake_device",
            "cdf-handshake-device",
            "Handshake latency CDF — device side",
            "µs",
        ),
        (
            "handshake_gateway",
            "cdf-handshake-gateway",
            "Handshake latency CDF — gateway side",
            "µs",
        ),
        (
            "record_seal_open",
            "cdf-record",
            "Record seal + open latency CDF (1 KiB)",
            "ns",
        ),
    ] {
        let sets: Vec<&SampleSet> = c.samples.iter().filter(|s| s.kind == kind).collect();
        if sets.is_empty() {
            continue;
        }
        let n = sets[0].values.len();
        let cap = format!(
            "Cumulative share of {n} individually timed iterations at or below each latency \
             (solid: aws-lc, dashed: rustcrypto). A steep curve is a predictable cost; {}. {}",
            spread(&sets),
            if kind.starts_with("handshake") {
                "ML-DSA signing repeats until a candidate passes its rejection checks (about 5 \
                 tries on average for ML-DSA-65), so suites that sign with it have long tails \
                 by design; other tails are preemption on the shared machine."
            } else {
                "Every record costs the same work, so tails here are preemption on the shared \
                 machine; individually timed records include the clock reads (~20 ns)."
            }
        );
        pg.chart(
            id,
            title,
            cap,
            Spec::Lines(Lines {
                series: cdf(sets, true),
                x_desc: format!("latency ({unit}, log scale)"),
                y_desc: "fraction of iterations ≤ latency".into(),
                log_x: true,
                log_y: false,
                markers: false,
                y_from_zero: true,
                legend: SeriesLabelPosition::LowerRight,
            }),
        )?;
    }
    pg.end();
    Ok(())
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn load_section(pg: &mut Page<'_>, load: Option<&[super::LoadRun]>) -> Result<()> {
    let Some(runs) = load.filter(|r| !r.is_empty()) else {
        pg.missing(
            "gateway load test",
            "run `iotseal bench load --json` against a gateway and put its output in the input \
             directory as load.json",
        );
        return Ok(());
    };
    pg.h2("load", "Gateway load test");
    let best = runs
        .iter()
        .filter(|r| r.readings_per_s.is_some())
        .max_by(|a, b| {
            a.readings_per_s
                .unwrap_or(0.0)
                .total_cmp(&b.readings_per_s.unwrap_or(0.0))
        });
    let errors: u64 = runs.iter().filter_map(|r| r.errors).sum();
    if let Some(b) = best {
        pg.headline(
            "load",
            format!(
                "best {:.0} readings/s stored and acknowledged ({}), p99 {} ms; {errors} failed \
                 requests in {} runs",
                b.readings_per_s.unwrap_or(0.0),
                b.name(),
                optf(b.p99_ms, 2),
                runs.len()
            ),
        );
    }
    let cap = match best {
        Some(b) => format!(
            "Readings stored and acknowledged per second per run. Best: {:.0} readings/s ({}), \
             p50 {} ms, p99 {} ms; {} failed requests in all runs{}.",
            b.readings_per_s.unwrap_or(0.0),
            b.name(),
            optf(b.p50_ms, 2),
            optf(b.p99_ms, 2),
            errors,
            if errors == 0 {
                " — no request failed"
            } else {
                " — see the table"
            }
        ),
        None => "Readings per second per run.".into(),
    };
    pg.chart(
        "load-throughput",
        "Gateway throughput under load",
        cap,
        Spec::HBars(HBars {
            categories: runs.iter().map(|r| r.name()).collect(),
            series: vec![
                Bars {
                    name: "readings/s".into(),
                    values: runs
                        .iter()
                        .map(|r| r.readings_per_s.unwrap_or(0.0))
                        .collect(),
                },
                Bars {
                    name: "requests/s".into(),
                    values: runs
                        .iter()
                        .map(|r| r.requests_per_s.unwrap_or(0.0))
                        .collect(),
                },
            ],
            x_desc: "per second".into(),
            log_x: false,
            stacked: false,
            annotate: true,
            decimals: Some(0),
        }),
    )?;
    let p99_hi = runs.iter().filter_map(|r| r.p99_ms).fold(0.0, f64::max);
    pg.chart(
        "load-latency",
        "Request latency under load",
        format!(
            "Median and 99th-percentile request latency per run (ms). The worst p99 is \
             {p99_hi:.1} ms: where p99 grows much faster than p50 the gateway is saturated."
        ),
        Spec::HBars(HBars {
            categories: runs.iter().map(|r| r.name()).collect(),
            series: vec![
                Bars {
                    name: "p50".into(),
                    values: runs.iter().map(|r| r.p50_ms.unwrap_or(0.0)).collect(),
                },
                Bars {
                    name: "p99".into(),
                    values: runs.iter().map(|r| r.p99_ms.unwrap_or(0.0)).collect(),
                },
            ],
            x_desc: "request latency (ms)".into(),
            log_x: false,
            stacked: false,
            annotate: true,
            decimals: Some(2),
        }),
    )?;
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.name(),
                r.mode.clone().unwrap_or_else(|| "—".into()),
                r.transport().unwrap_or_else(|| "—".into()),
                opt(r.connections),
                opt(r.batch),
                optf(r.readings_per_s, 0),
                optf(r.requests_per_s, 0),
                optf(r.p50_ms, 2),
                optf(r.p99_ms, 2),
                opt(r.errors),
                optf(r.gateway_cpu_percent, 0),
            ]
        })
        .collect();
    pg.table(
        &[
            "run",
            "mode",
            "transport",
            "connections",
            "batch",
            "readings/s",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "gateway CPU %",
        ],
        &rows,
        3,
    );
    pg.end();
    Ok(())
}

/// The verdict of one target and what it rests on, for the threat-lab table.
fn verdict_text(x: Option<&Attack>) -> String {
    let Some(x) = x else {
        return "not run".into();
    };
    if !x.applicable {
        return format!(
            "does not apply: {}",
            x.reason.trim_start_matches("not applicable: ")
        );
    }
    let word = match x.verdict() {
        Some(true) => "blocked",
        Some(false) => "NOT blocked",
        None => "no verdict",
    };
    let mut parts = Vec::new();
    if x.stored_forgeries > 0 {
        parts.push(format!("{} forged readings stored", x.stored_forgeries));
    }
    parts.push(match &x.service {
        Some(s) => format!("honest device: {}", s.summary()),
        None if x.judged_by_service() => "honest device: not measured".into(),
        None => format!("{}/{} attempts stopped", x.blocked, x.attempts),
    });
    // The lab's reason repeats the verdict first.
    let reason = x.reason.trim_start_matches("NOT blocked; ");
    if !reason.is_empty() {
        parts.push(reason.to_string());
    }
    format!("{word} — {}", parts.join("; "))
}

/// The chart cell of one target.
fn verdict_cell(x: Option<&Attack>) -> VerdictCell {
    let Some(x) = x else {
        return VerdictCell {
            mark: Mark::NotRun,
            note: String::new(),
        };
    };
    let mark = match (x.applicable, x.verdict()) {
        (false, _) => Mark::NotApplicable,
        (_, Some(true)) => Mark::Blocked,
        (_, Some(false)) => Mark::NotBlocked,
        (_, None) => Mark::NoVerdict,
    };
    let served = |s: &super::AttackService| {
        format!(
            "{}/{} sessions, {}/{} stored",
            s.handshakes_completed, s.handshakes_attempted, s.readings_stored, s.readings_sent
        )
    };
    let note = match mark {
        Mark::NotApplicable | Mark::NotRun => String::new(),
        Mark::NoVerdict => x.reason.clone(),
        Mark::Blocked => match &x.service {
            Some(s) => served(s),
            None => format!("{}/{} attempts stopped", x.blocked, x.attempts),
        },
        Mark::NotBlocked => match (&x.service, x.failed_checks.first()) {
            _ if x.stored_forgeries > 0 => format!("{} forged stored", x.stored_forgeries),
            (Some(s), _) if s.requests_refused > 0 => format!(
                "honest devices: {} requests refused; {}",
                s.requests_refused,
                served(s)
            ),
            (Some(s), _) if !s.all_served() => format!("honest: {}", served(s)),
            (_, Some(c)) => format!("failed: {c}"),
            _ => format!("{} of {} through", x.attempts - x.blocked, x.attempts),
        },
    };
    VerdictCell { mark, note }
}

fn attacks_section(pg: &mut Page<'_>, attacks: Option<&super::Attacks>) -> Result<()> {
    let Some(a) = attacks else {
        pg.missing(
            "threat lab",
            "run `iotseal attack --json > DIR/attacks.json` and `iotseal attack --target legacy \
             --json >> DIR/attacks.json` (or `iotseal demo`, which writes it)",
        );
        return Ok(());
    };
    pg.h2("threats", "Threat lab: iotseal vs the legacy design");
    let legacy = a.legacy.as_deref().unwrap_or(&[]);
    let mut names: Vec<String> = a.iotseal.iter().map(|x| x.name.clone()).collect();
    for l in legacy {
        if !names.contains(&l.name) {
            names.push(l.name.clone());
        }
    }
    let find = |list: &'_ [Attack], n: &str| list.iter().find(|x| x.name == n).cloned();
    let tally = |list: &[Attack]| {
        let applicable = list.iter().filter(|x| x.applicable).count();
        let blocked = list.iter().filter(|x| x.verdict() == Some(true)).count();
        let forged: u64 = list.iter().map(|x| x.stored_forgeries).sum();
        (blocked, applicable, forged)
    };
    let (ib, ia, isf) = tally(&a.iotseal);
    let mut cap = format!(
        "Whether each attack was blocked, against each target, and what \"blocked\" means for \
         it (the same criterion for both targets). iotseal blocked {ib} of {ia} applicable \
         attacks and stored {isf} forged or replayed readings."
    );
    let mut line = format!(
        "iotseal blocked {ib} of {ia} applicable attacks and stored {isf} forged or replayed \
         readings"
    );
    if a.legacy.is_some() {
        let (lb, la, lsf) = tally(legacy);
        let _ = write!(
            cap,
            " The legacy design blocked {lb} of {la} and stored {lsf}."
        );
        let _ = write!(
            line,
            "; the legacy design blocked {lb} of {la} and stored {lsf}"
        );
    } else {
        cap.push_str(" The legacy design was not attacked in this run.");
    }
    pg.headline("threats", line);
    let floods: Vec<&Attack> = a.iotseal.iter().filter(|x| x.judged_by_service()).collect();
    if !floods.is_empty() {
        let _ = write!(
            cap,
            " Floods and slow clients are judged by whether honest devices running during the \
             attack were served (none of their requests refused, every reading stored within \
             5 s), not by the share of the attacker's requests refused{}.",
            floods
                .iter()
                .filter_map(|x| x
                    .service
                    .as_ref()
                    .map(|s| format!("{}: {}", x.name, s.summary())))
                .map(|t| format!("; iotseal {t}"))
                .collect::<String>()
        );
    }
    let mut columns = vec!["iotseal".to_string()];
    if a.legacy.is_some() {
        columns.push("legacy".into());
    }
    let rows: Vec<VerdictRow> = names
        .iter()
        .map(|n| {
            let i = find(&a.iotseal, n);
            let l = find(legacy, n);
            let criterion = i
                .as_ref()
                .or(l.as_ref())
                .map_or(COUNT_CRITERION.to_string(), |x| {
                    x.criterion_or_default().to_string()
                });
            let service = i
                .as_ref()
                .or(l.as_ref())
                .is_some_and(Attack::judged_by_service);
            let mut cells = vec![verdict_cell(i.as_ref())];
            if a.legacy.is_some() {
                cells.push(verdict_cell(l.as_ref()));
            }
            VerdictRow {
                name: if service { format!("{n} *") } else { n.clone() },
                criterion,
                cells,
            }
        })
        .collect();
    pg.chart(
        "threats",
        "Attacks blocked per target",
        cap,
        Spec::Verdicts(Verdicts {
            columns,
            rows,
            footnote: "* judged by the legitimate traffic served while the attack ran: honest \
                       devices' requests refused, sessions opened, readings stored"
                .into(),
        }),
    )?;
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|n| {
            let i = find(&a.iotseal, n);
            let l = find(legacy, n);
            let criterion = i
                .as_ref()
                .or(l.as_ref())
                .map_or(COUNT_CRITERION.to_string(), |x| {
                    x.criterion_or_default().to_string()
                });
            let lv = if a.legacy.is_some() {
                verdict_text(l.as_ref())
            } else {
                "not run: the legacy design was not attacked".into()
            };
            vec![n.clone(), criterion, verdict_text(i.as_ref()), lv]
        })
        .collect();
    pg.table_wrapped(
        &["attack", "blocked means", "iotseal", "legacy"],
        &rows,
        1,
        &[1, 2, 3],
    );
    pg.end();
    Ok(())
}

fn simulation_section(pg: &mut Page<'_>, sim: Option<&serde_json::Value>) -> Result<()> {
    let Some(s) = sim else {
        pg.missing(
            "device simulation",
            "run `iotseal simulate --json > DIR/simulation.json` (or `iotseal demo`, which writes it)",
        );
        return Ok(());
    };
    pg.h2("simulation", "Device simulation");
    let num = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_f64());
    let text = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let groups: Vec<&serde_json::Value> = s
        .get("groups")
        .and_then(|g| g.as_array())
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    pg.headline(
        "simulation",
        format!(
            "{} readings sent by {} device groups, {} stored, {} verified byte for byte, {} lost, \
             {} duplicates",
            optf(num(s, "readings_sent"), 0),
            groups.len(),
            optf(num(s, "readings_stored"), 0),
            optf(num(s, "readings_verified"), 0),
            optf(num(s, "lost"), 0),
            optf(num(s, "duplicates"), 0),
        ),
    );
    pg.p(&esc(&format!(
        "{} readings sent, {} acknowledged, {} stored, {} verified byte for byte, {} lost, {} \
         duplicates; {} readings/s over {} s; acknowledgement latency p50 {} ms, p99 {} ms.",
        optf(num(s, "readings_sent"), 0),
        optf(num(s, "readings_acknowledged"), 0),
        optf(num(s, "readings_stored"), 0),
        optf(num(s, "readings_verified"), 0),
        optf(num(s, "lost"), 0),
        optf(num(s, "duplicates"), 0),
        optf(num(s, "readings_per_s"), 0),
        optf(num(s, "elapsed_secs"), 1),
        optf(num(s, "p50_ms"), 2),
        optf(num(s, "p99_ms"), 2),
    )));
    if !groups.is_empty() {
        let names: Vec<String> = groups
            .iter()
            .map(|g| format!("{} ({})", text(g, "name"), text(g, "suite")))
            .collect();
        let slow = groups
            .iter()
            .max_by(|a, b| {
                num(a, "p99_ms")
                    .unwrap_or(0.0)
                    .total_cmp(&num(b, "p99_ms").unwrap_or(0.0))
            })
            .map(|g| (text(g, "name"), num(g, "p99_ms").unwrap_or(0.0)));
        pg.chart(
            "simulation-latency",
            "Acknowledgement latency per device group",
            format!(
                "Time from sending a reading to its acknowledgement (stored durably), per group \
                 of simulated devices. The slowest group at p99 is {} ({:.1} ms): network \
                 impairments and batching, not cryptography, set these latencies.",
                slow.as_ref().map_or("—".into(), |s| s.0.clone()),
                slow.map_or(0.0, |s| s.1)
            ),
            Spec::HBars(HBars {
                categories: names,
                series: vec![
                    Bars {
                        name: "p50".into(),
                        values: groups
                            .iter()
                            .map(|g| num(g, "p50_ms").unwrap_or(0.0))
                            .collect(),
                    },
                    Bars {
                        name: "p99".into(),
                        values: groups
                            .iter()
                            .map(|g| num(g, "p99_ms").unwrap_or(0.0))
                            .collect(),
                    },
                ],
                x_desc: "acknowledgement latency (ms)".into(),
                log_x: false,
                stacked: false,
                annotate: true,
                decimals: Some(1),
            }),
        )?;
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|g| {
                let mut r = vec![text(g, "name"), text(g, "suite")];
                for k in [
                    "devices",
                    "sent",
                    "acknowledged",
                    "stored",
                    "verified",
                    "handshakes",
                    "retries",
                    "refusals",
                ] {
                    r.push(optf(num(g, k), 0));
                }
                r.push(optf(num(g, "p50_ms"), 2));
                r.push(optf(num(g, "p99_ms"), 2));
                r
            })
            .collect();
        pg.table(
            &[
                "group",
                "suite",
                "devices",
                "sent",
                "acked",
                "stored",
                "verified",
                "handshakes",
                "retries",
                "refusals",
                "p50 ms",
                "p99 ms",
            ],
            &rows,
            2,
        );
    }
    pg.end();
    Ok(())
}

/// Most devices drawn per sensor chart.
const MAX_DEVICES_PER_CHART: usize = 8;

fn series_section(pg: &mut Page<'_>, series: Option<&[SensorSeries]>) -> Result<()> {
    let Some(series) = series.filter(|s| s.iter().any(|x| !x.points.is_empty())) else {
        pg.missing(
            "sensor time series",
            "give a gateway database that holds readings: `iotseal report --db gateway.db`",
        );
        return Ok(());
    };
    pg.h2(
        "series",
        "Simulated sensor data from the gateway's database",
    );
    for ((sensor, unit), list) in by_sensor(series) {
        let t0 = list
            .iter()
            .flat_map(|s| s.points.first().map(|p| p.0))
            .min()
            .unwrap_or(0);
        let t1 = list
            .iter()
            .flat_map(|s| s.points.last().map(|p| p.0))
            .max()
            .unwrap_or(t0);
        let shown: Vec<&&SensorSeries> = list.iter().take(MAX_DEVICES_PER_CHART).collect();
        let n: usize = list.iter().map(|s| s.points.len()).sum();
        let (lo, hi) = list
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        let unit_txt = if unit.is_empty() {
            String::new()
        } else {
            format!(" ({unit})")
        };
        let cap = format!(
            "{n} stored readings of {sensor} from {} devices{} over {:.0} s, values {}–{}{}: \
             every point was authenticated, decrypted and stored by the gateway; gaps are \
             readings the simulator dropped or delayed on purpose, not losses (the simulator \
             verifies every acknowledged reading byte for byte).",
            list.len(),
            if list.len() > shown.len() {
                format!(" (the first {} drawn)", shown.len())
            } else {
                String::new()
            },
            (t1 - t0) as f64 / 1000.0,
            fmt_num(lo),
            fmt_num(hi),
            unit_txt
        );
        pg.chart(
            &format!("series-{}", slug(&sensor)),
            &format!("Sensor data: {sensor}"),
            cap,
            Spec::Lines(Lines {
                series: shown
                    .iter()
                    .map(|s| Line {
                        name: s.device.clone(),
                        points: s
                            .points
                            .iter()
                            .map(|p| ((p.0 - t0) as f64 / 1000.0, p.1))
                            .collect(),
                        dashed: false,
                    })
                    .collect(),
                x_desc: "device time since the first reading (s)".into(),
                y_desc: format!("{sensor}{unit_txt}"),
                log_x: false,
                log_y: false,
                markers: false,
                y_from_zero: false,
                legend: SeriesLabelPosition::UpperRight,
            }),
        )?;
    }
    pg.end();
    Ok(())
}
