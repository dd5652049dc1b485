//! What a peers run writes: every raw sample as a JSON line (`results.jsonl`), the table
//! (`table.md`) and the plots (`failover-*.png`, `churn-rss.png`); with `--docs`, the same into
//! `docs/benchmarks.md` (between its `peers:begin`/`peers:end` markers) and `docs/benchmarks/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::SubjectKind;
use crate::plot;

/// One raw measurement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// [`SubjectKind::label`].
    pub subject: String,
    pub metric: String,
    pub value: f64,
    /// What the sample is of (a node, a process, the failover's owners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<usize>,
    /// Seconds since the series started (RSS over churn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t_s: Option<f64>,
}

/// Every sample of a run, in the order taken.
#[derive(Debug, Clone, Default)]
pub struct Results {
    pub samples: Vec<Sample>,
}

impl Results {
    pub fn push(&mut self, sample: Sample) {
        self.samples.push(sample);
    }

    /// The subjects that have samples, in the order they ran.
    fn subjects(&self) -> Vec<String> {
        let mut subjects: Vec<String> = Vec::new();
        for sample in &self.samples {
            if !subjects.contains(&sample.subject) {
                subjects.push(sample.subject.clone());
            }
        }
        subjects
    }

    fn values(&self, subject: &str, metric: &str) -> Vec<f64> {
        self.samples
            .iter()
            .filter(|s| s.subject == subject && s.metric == metric)
            .map(|s| s.value)
            .collect()
    }

    fn values_of(&self, subject: &str, metric: &str, detail: &str) -> Vec<f64> {
        self.samples
            .iter()
            .filter(|s| {
                s.subject == subject && s.metric == metric && s.detail.as_deref() == Some(detail)
            })
            .map(|s| s.value)
            .collect()
    }

    /// The JSON lines of every sample.
    pub fn jsonl(&self) -> String {
        self.samples
            .iter()
            .filter_map(|s| serde_json::to_string(s).ok())
            .map(|line| line + "\n")
            .collect()
    }

    pub fn from_jsonl(text: &str) -> anyhow::Result<Results> {
        let samples = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| serde_json::from_str(line).with_context(|| format!("sample {line}")))
            .collect::<anyhow::Result<_>>()?;
        Ok(Results { samples })
    }
}

/// Nearest-rank percentile of `values` (`q` in 0..=1); `None` when empty.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn max(values: &[f64]) -> Option<f64> {
    values.iter().copied().reduce(f64::max)
}

fn mib(kib: f64) -> String {
    format!("{:.1}", kib / 1024.0)
}

/// The table: one row per measurement, one column per subject, as Markdown.
pub fn table(results: &Results) -> String {
    let subjects = results.subjects();
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let cell = |f: &dyn Fn(&str) -> Option<String>| -> Vec<String> {
        subjects
            .iter()
            .map(|s| f(s).unwrap_or_else(|| "–".to_string()))
            .collect()
    };
    for (metric, what) in [
        (
            "failover_link_down_ms",
            "L2 failover, owner's switch port down",
        ),
        (
            "failover_speaker_kill_ms",
            "L2 failover, owner's speaker SIGKILLed",
        ),
    ] {
        let trials = subjects
            .iter()
            .map(|s| results.values(s, metric).len())
            .max()
            .unwrap_or(0);
        rows.push((
            format!("{what} ({trials} trials), p50 / p90 / p99 ms"),
            cell(&|s| {
                let values = results.values(s, metric);
                Some(format!(
                    "{:.0} / {:.0} / {:.0}",
                    percentile(&values, 0.5)?,
                    percentile(&values, 0.9)?,
                    percentile(&values, 0.99)?
                ))
            }),
        ));
    }
    let services = results
        .samples
        .iter()
        .find(|s| s.metric == "burst_all_assigned_s")
        .and_then(|s| s.detail.clone())
        .unwrap_or_else(|| "N Services".to_string());
    rows.push((
        format!("{services} Pending, then their pool is created: all assigned, s (API server floor, ratio)"),
        cell(&|s| {
            let assigned = *results.values(s, "burst_all_assigned_s").first()?;
            let floor = *results.values(s, "floor_status_patches_s").first()?;
            Some(format!(
                "{assigned:.2} (floor {floor:.2}, {:.1}×)",
                assigned / floor
            ))
        }),
    ));
    rows.push((
        format!("controller RSS with {services} Pending / assigned / peak, MiB"),
        cell(&|s| {
            let pending = results.values(s, "controller_rss_pending_kib");
            let at = results.values(s, "controller_rss_kib");
            let peak = results.values(s, "controller_peak_rss_kib");
            Some(format!(
                "{} / {} / {}",
                mib(*pending.first()?),
                mib(*at.first()?),
                mib(*peak.first()?)
            ))
        }),
    ));
    rows.push((
        format!("speaker RSS with {services} announced, max of the nodes, MiB"),
        cell(&|s| max(&results.values(s, "speaker_rss_kib")).map(mib)),
    ));
    rows.push((
        "of which anonymous (heap, stacks): controller / speaker max, MiB".to_string(),
        cell(&|s| {
            Some(format!(
                "{} / {}",
                mib(*results.values(s, "controller_rss_anon_kib").first()?),
                mib(max(&results.values(s, "speaker_rss_anon_kib"))?)
            ))
        }),
    ));
    rows.push((
        format!("speaker idle CPU with {services}, mean of the nodes, % of one core"),
        cell(&|s| mean(&results.values(s, "speaker_idle_cpu_percent")).map(|v| format!("{v:.2}"))),
    ));
    rows.push((
        "controller idle CPU, % of one core".to_string(),
        cell(&|s| {
            mean(&results.values(s, "controller_idle_cpu_percent")).map(|v| format!("{v:.2}"))
        }),
    ));
    for (process, what) in [
        ("controller", "controller"),
        ("speaker-node1", "speaker (node1)"),
    ] {
        rows.push((
            format!("{what} RSS over the churn rounds: first / last / max, MiB"),
            cell(&|s| {
                let series = results.values_of(s, "churn_rss_kib", process);
                Some(format!(
                    "{} / {} / {}",
                    mib(*series.first()?),
                    mib(*series.last()?),
                    mib(max(&series)?)
                ))
            }),
        ));
    }

    let mut out = String::new();
    let _ = writeln!(out, "| what | {} |", subjects.join(" | "));
    let _ = writeln!(out, "| --- |{}", " --- |".repeat(subjects.len()));
    for (what, cells) in rows {
        let _ = writeln!(out, "| {what} | {} |", cells.join(" | "));
    }
    out
}

/// Writes `results.jsonl`, `table.md` and the plots into `dir`.
pub fn write(dir: &Path, results: &Results) -> anyhow::Result<()> {
    std::fs::write(dir.join("results.jsonl"), results.jsonl())
        .with_context(|| format!("writing {}", dir.join("results.jsonl").display()))?;
    std::fs::write(dir.join("table.md"), table(results))
        .with_context(|| format!("writing {}", dir.join("table.md").display()))?;
    plots(dir, results)
}

/// The PNG files [`write`] draws, by name.
pub const PLOTS: [&str; 3] = [
    "failover-link-down.png",
    "failover-speaker-kill.png",
    "churn-rss.png",
];

fn plots(dir: &Path, results: &Results) -> anyhow::Result<()> {
    let subjects = results.subjects();
    for ((metric, title), file) in [
        (
            "failover_link_down_ms",
            "L2 failover, owner's switch port down",
        ),
        (
            "failover_speaker_kill_ms",
            "L2 failover, owner's speaker SIGKILLed",
        ),
    ]
    .into_iter()
    .zip(PLOTS)
    {
        let groups: Vec<(String, Vec<f64>)> = subjects
            .iter()
            .map(|s| (s.clone(), results.values(s, metric)))
            .collect();
        match plot::box_plot_ms(
            &dir.join(file),
            title,
            "ms until another node answers ARP",
            &groups,
        ) {
            Ok(()) | Err(plot::PlotError::Empty) => {}
            Err(err) => return Err(err).context(file),
        }
    }
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for subject in &subjects {
        for process in ["controller", "speaker-node1"] {
            let points: Vec<(f64, f64)> = results
                .samples
                .iter()
                .filter(|s| {
                    &s.subject == subject
                        && s.metric == "churn_rss_kib"
                        && s.detail.as_deref() == Some(process)
                })
                .filter_map(|s| Some((s.t_s?, s.value / 1024.0)))
                .collect();
            series.push((format!("{subject} {process}"), points));
        }
    }
    match plot::line_plot(
        &dir.join(PLOTS[2]),
        "RSS over create/delete churn rounds",
        "s",
        "MiB",
        &series,
    ) {
        Ok(()) | Err(plot::PlotError::Empty) => Ok(()),
        Err(err) => Err(err).context(PLOTS[2]),
    }
}

const BEGIN: &str = "<!-- peers:begin (written by cargo xtask bench peers --docs) -->";
const END: &str = "<!-- peers:end -->";

/// The section `--docs` puts into `docs/benchmarks.md`.
pub fn docs_section(results: &Results, command: &str, when: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(
        out,
        "Measured {when} with `{command}`: each subject in a fresh 3-node lab of its own, one \
         after the other. Raw samples: [`benchmarks/peers/results.jsonl`](benchmarks/peers/results.jsonl).\n"
    );
    out.push_str(&table(results));
    out.push('\n');
    for file in PLOTS {
        let _ = writeln!(out, "![{file}](benchmarks/peers/{file})");
    }
    let _ = writeln!(out, "{END}");
    out
}

/// `doc` with its peers section replaced by `section` (appended when it has none).
pub fn replace_section(doc: &str, section: &str) -> String {
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(begin), Some(end)) if end > begin => {
            let after = end + END.len();
            let rest = doc[after..].strip_prefix('\n').unwrap_or(&doc[after..]);
            format!("{}{section}{rest}", &doc[..begin])
        }
        _ => format!(
            "{}\n{section}",
            doc.trim_end_matches('\n').to_string() + "\n"
        ),
    }
}

/// Copies the run in `dir` into the docs: the section into `docs/benchmarks.md`, the plots and
/// the samples into `docs/benchmarks/peers/`.
pub fn write_docs(dir: &Path, results: &Results, command: &str, when: &str) -> anyhow::Result<()> {
    let assets = super::docs_assets_dir().join("peers");
    std::fs::create_dir_all(&assets).with_context(|| format!("creating {}", assets.display()))?;
    for file in PLOTS.iter().copied().chain(["results.jsonl", "table.md"]) {
        let from = dir.join(file);
        if from.is_file() {
            std::fs::copy(&from, assets.join(file))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    let doc_path = super::benchmarks_doc();
    let doc = std::fs::read_to_string(&doc_path)
        .with_context(|| format!("reading {}", doc_path.display()))?;
    std::fs::write(
        &doc_path,
        replace_section(&doc, &docs_section(results, command, when)),
    )
    .with_context(|| format!("writing {}", doc_path.display()))
}

/// Subjects by label, for `--subjects`.
pub fn parse_subjects(list: &str) -> anyhow::Result<Vec<SubjectKind>> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            SubjectKind::parse(s.trim()).with_context(|| {
                format!(
                    "unknown subject {s:?} (one of ferrolb, {})",
                    SubjectKind::ALL.map(|k| k.label()).join(", ")
                )
            })
        })
        .collect()
}

/// Per metric, the number of samples per subject (a summary for the log).
pub fn counts(results: &Results) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for sample in &results.samples {
        *counts
            .entry((sample.subject.clone(), sample.metric.clone()))
            .or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(subject: &str, metric: &str, value: f64) -> Sample {
        Sample {
            subject: subject.into(),
            metric: metric.into(),
            value,
            ..Sample::default()
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), Some(10.0));
        assert_eq!(percentile(&values, 0.9), Some(18.0));
        assert_eq!(percentile(&values, 0.99), Some(20.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn the_table_has_a_column_per_subject_and_dashes_for_gaps() {
        let mut results = Results::default();
        for v in [200.0, 300.0, 250.0] {
            results.push(sample("ferrolb-release", "failover_link_down_ms", v));
        }
        results.push(sample("metallb-defaults", "failover_link_down_ms", 5800.0));
        results.push(Sample {
            detail: Some("1000 Services".into()),
            ..sample("ferrolb-release", "burst_all_assigned_s", 2.0)
        });
        results.push(sample("ferrolb-release", "floor_status_patches_s", 1.0));
        let table = table(&results);
        assert!(table.starts_with("| what | ferrolb-release | metallb-defaults |\n"));
        assert!(
            table.contains(
                "(3 trials), p50 / p90 / p99 ms | 250 / 300 / 300 | 5800 / 5800 / 5800 |"
            )
        );
        assert!(table.contains("1000 Services Pending"));
        assert!(table.contains("| 2.00 (floor 1.00, 2.0×) | – |"));
    }

    #[test]
    fn samples_round_trip_through_jsonl() {
        let mut results = Results::default();
        results.push(Sample {
            t_s: Some(1.5),
            detail: Some("controller".into()),
            ..sample("metallb-tuned", "churn_rss_kib", 70_000.0)
        });
        let text = results.jsonl();
        assert!(
            !text.contains("trial"),
            "absent fields are left out: {text}"
        );
        assert_eq!(Results::from_jsonl(&text).unwrap().samples, results.samples);
    }

    #[test]
    fn the_docs_section_is_replaced_in_place() {
        let doc = format!("# Benchmarks\n\nbefore\n{BEGIN}\nold\n{END}\nafter\n");
        let new = replace_section(&doc, &format!("{BEGIN}\nnew\n{END}\n"));
        assert_eq!(
            new,
            format!("# Benchmarks\n\nbefore\n{BEGIN}\nnew\n{END}\nafter\n")
        );
        let appended = replace_section("# B\n", &format!("{BEGIN}\nx\n{END}\n"));
        assert_eq!(appended, format!("# B\n\n{BEGIN}\nx\n{END}\n"));
    }

    #[test]
    fn subjects_parse_from_a_list() {
        assert_eq!(
            parse_subjects("ferrolb,metallb-tuned").unwrap(),
            vec![
                SubjectKind::Ferrolb,
                SubjectKind::Metallb(super::super::metallb::Memberlist::Tuned)
            ]
        );
        assert!(parse_subjects("frr").is_err());
    }
}
