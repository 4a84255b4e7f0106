//! Measures de-duplication accuracy and speed on labelled record sets.
//!
//! ```text
//! cargo run --release -p tessera-identity --example dedupe_eval -- "$TESSERA_FEBRL_DIR"
//! cargo run --release -p tessera-identity --example dedupe_eval -- --csv /tmp/synth_1m.csv
//! ```
//!
//! For each FEBRL set found in the folder (febrl1–4; febrl4 is linked across its
//! sources A and B) and each `--csv` file (with `record_id`, `cluster_id` and columns
//! named after their kinds, as `synth_people` writes), prints: blocking pair
//! completeness, pairwise precision/recall/F1 of the links and of the clusters over
//! all true pairs, B-cubed precision/recall/F1, the share of exactly recovered
//! clusters, records per second and the process's peak memory. The truth columns
//! are used for scoring only.
//!
//! Options: `--only NAME` (repeatable) runs only those FEBRL sets;
//! `--threshold W` fixes the match weight; `--show-errors N` explains up to N false
//! links and missed pairs of each set; `--no-linkage-check` clusters by plain
//! connected components; `--blocking-only` reports only the blocking rules' pairs
//! and completeness; `--explain ID,ID` (repeatable) explains that pair field by
//! field.
#![allow(clippy::print_stdout)]

#[path = "support/labelled.rs"]
mod labelled;

use labelled::{Labelled, load_csv, load_febrl, peak_rss_mib};
use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;
use tessera_identity::dedupe::evaluate::{
    bcubed, exact_cluster_ratio, pair_completeness, pairwise, pairwise_links,
};
use tessera_identity::dedupe::{DedupeConfig, NoProgress, blocking, dedupe};

struct Options {
    dir: Option<PathBuf>,
    only: Vec<String>,
    csv: Vec<PathBuf>,
    threshold: Option<f64>,
    show_errors: usize,
    linkage_check: bool,
    blocking_only: bool,
    explain: Vec<(String, String)>,
}

fn parse_options() -> Result<Options, Box<dyn Error>> {
    let mut options = Options {
        dir: None,
        only: Vec::new(),
        csv: Vec::new(),
        threshold: None,
        show_errors: 0,
        linkage_check: true,
        blocking_only: false,
        explain: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--only" => options.only.push(value("--only")?),
            "--csv" => options.csv.push(PathBuf::from(value("--csv")?)),
            "--threshold" => options.threshold = Some(value("--threshold")?.parse()?),
            "--show-errors" => options.show_errors = value("--show-errors")?.parse()?,
            "--no-linkage-check" => options.linkage_check = false,
            "--blocking-only" => options.blocking_only = true,
            "--explain" => {
                let pair = value("--explain")?;
                let (a, b) = pair.split_once(',').ok_or("--explain needs ID,ID")?;
                options.explain.push((a.to_owned(), b.to_owned()));
            }
            other if other.starts_with("--") => {
                return Err(format!("unknown option {other}").into());
            }
            other => options.dir = Some(PathBuf::from(other)),
        }
    }
    if options.dir.is_none() && options.csv.is_empty() {
        return Err("usage: dedupe_eval [DATASET_DIR] [--only febrlN] [--csv FILE] [--threshold W] [--show-errors N] [--no-linkage-check] [--blocking-only] [--explain ID,ID]".into());
    }
    Ok(options)
}

fn main() -> Result<(), Box<dyn Error>> {
    let options = parse_options()?;
    let mut sets: Vec<(String, Labelled, bool)> = Vec::new();
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model()
    );
    if let Some(dir) = &options.dir {
        for name in ["febrl1", "febrl2", "febrl3", "febrl4"] {
            if !options.only.is_empty() && !options.only.iter().any(|o| o == name) {
                continue;
            }
            if !dir.join(format!("{name}_records.csv")).exists() {
                println!("{name}: not found in {}, skipped", dir.display());
                continue;
            }
            let link = name == "febrl4";
            sets.push((name.to_owned(), load_febrl(dir, name)?, link));
        }
    }
    for path in &options.csv {
        let started = Instant::now();
        let set = load_csv(path, None)?;
        println!(
            "{}: read {} records in {:.1} s",
            path.display(),
            set.data.len(),
            started.elapsed().as_secs_f64()
        );
        sets.push((path.display().to_string(), set, false));
    }
    for (name, set, link) in &sets {
        evaluate(name, set, *link, &options)?;
    }
    Ok(())
}

fn evaluate(
    name: &str,
    set: &Labelled,
    link: bool,
    options: &Options,
) -> Result<(), Box<dyn Error>> {
    let mut config = DedupeConfig::default();
    config.blocking.link_only_across_sources = link;
    config.threshold = options.threshold;
    config.clustering.average_linkage = options.linkage_check;

    if options.blocking_only {
        let started = Instant::now();
        let rules = blocking::default_rules(set.data.schema());
        let candidates =
            blocking::candidate_pairs(&set.data, &rules, &config.blocking, &mut |_| {})?;
        println!(
            "\n== {name}: {} candidate pairs in {:.2} s, pair completeness {:.4}",
            candidates.pairs.len(),
            started.elapsed().as_secs_f64(),
            pair_completeness(&candidates.pairs, &set.true_pairs)
        );
        for rule in &candidates.stats {
            println!(
                "  rule {:<34} pairs {:>10}  new {:>10}  largest block {:>6}  capped blocks {}",
                rule.rule, rule.pairs, rule.new_pairs, rule.largest_block, rule.capped_blocks
            );
        }
        return Ok(());
    }
    let started = Instant::now();
    let outcome = dedupe(&set.data, &config, &NoProgress)?;
    let seconds = started.elapsed().as_secs_f64();

    // Blocking again, apart, only to measure its completeness.
    let rules = blocking::default_rules(set.data.schema());
    let candidates = blocking::candidate_pairs(&set.data, &rules, &config.blocking, &mut |_| {})?;
    let completeness = pair_completeness(&candidates.pairs, &set.true_pairs);
    let unblocked: Vec<(u32, u32)> = set
        .true_pairs
        .iter()
        .filter(|p| candidates.pairs.binary_search(p).is_err())
        .copied()
        .collect();
    drop(candidates);

    let links: Vec<(u32, u32)> = outcome.links.iter().map(|l| (l.left, l.right)).collect();
    let link_scores = pairwise_links(&set.true_pairs, &links);
    let cluster_scores = pairwise(&set.truth, &outcome.clusters);
    let b3 = bcubed(&set.truth, &outcome.clusters);
    let exact = exact_cluster_ratio(&set.truth, &outcome.clusters);
    let stats = &outcome.stats;

    println!(
        "\n== {name}{}",
        if link {
            " (linking sources A and B)"
        } else {
            ""
        }
    );
    println!(
        "records {}  true pairs {}  candidate pairs {}  pair completeness {:.4}",
        set.data.len(),
        set.true_pairs.len(),
        stats.candidate_pairs,
        completeness
    );
    for session in &stats.em_sessions {
        println!(
            "EM session on {}: {} pairs, match share {:.4}, {} iterations",
            if session.anchors.is_empty() {
                "all candidates"
            } else {
                &session.anchors
            },
            session.pairs,
            session.match_share,
            session.iterations
        );
    }
    println!(
        "prior fit: match share among candidates {:.4}, expected matches {:.0}, threshold {:.2}",
        stats.candidate_match_share, stats.expected_matches, stats.threshold
    );
    println!(
        "links    P {:.4}  R {:.4}  F1 {:.4}  ({} predicted, {} correct)",
        link_scores.precision,
        link_scores.recall,
        link_scores.f1,
        link_scores.predicted_pairs,
        link_scores.true_positives
    );
    println!(
        "clusters P {:.4}  R {:.4}  F1 {:.4}  ({} predicted pairs, {} correct)",
        cluster_scores.precision,
        cluster_scores.recall,
        cluster_scores.f1,
        cluster_scores.predicted_pairs,
        cluster_scores.true_positives
    );
    println!(
        "B-cubed  P {:.4}  R {:.4}  F1 {:.4}  exact clusters {:.4}  (refused links {}, largest cluster {})",
        b3.precision,
        b3.recall,
        b3.f1,
        exact,
        stats.clustering.refused_links,
        stats.clustering.largest
    );
    for rule in &stats.blocking {
        println!(
            "  rule {:<34} pairs {:>10}  new {:>10}  largest block {:>6}  capped blocks {}",
            rule.rule, rule.pairs, rule.new_pairs, rule.largest_block, rule.capped_blocks
        );
    }
    let stages: Vec<String> = stats
        .seconds
        .iter()
        .map(|(stage, s)| format!("{} {:.2}s", stage.name(), s))
        .collect();
    println!(
        "time {:.2} s ({}), {:.0} records/s, peak memory {}",
        seconds,
        stages.join(", "),
        set.data.len() as f64 / seconds,
        peak_rss_mib().map_or("unknown".to_owned(), |m| format!("{m:.0} MiB"))
    );
    for (a, b) in &options.explain {
        let find = |id: &str| (0..set.data.len()).find(|&i| set.data.id(i) == id);
        if let (Some(i), Some(j)) = (find(a), find(b)) {
            print!("{}", outcome.model.explain(&set.data, i, &set.data, j));
        }
    }
    if options.show_errors > 0 {
        println!("-- weights (m / u / weight) for different, similar, very similar, exact:");
        for f in &outcome.model.weights().fields {
            let cells: Vec<String> = (0..4)
                .map(|l| {
                    let level = tessera_identity::dedupe::Level::from_index(l);
                    format!("{:.4}/{:.5}/{:+.1}", f.m[l], f.u[l], f.weight(level))
                })
                .collect();
            println!("  {:<16} {}", f.field, cells.join("  "));
        }
        show_errors(set, &outcome, &links, options.show_errors);
        println!("-- true pairs that no blocking rule proposed:");
        for &(a, b) in unblocked.iter().take(options.show_errors) {
            let data = &set.data;
            print!(
                "{}",
                outcome.model.explain(data, a as usize, data, b as usize)
            );
        }
    }
    Ok(())
}

/// Explains some false links and some missed true pairs.
fn show_errors(
    set: &Labelled,
    outcome: &tessera_identity::dedupe::DedupeOutcome,
    links: &[(u32, u32)],
    max: usize,
) {
    let truth: std::collections::HashSet<(u32, u32)> = set.true_pairs.iter().copied().collect();
    let data = &set.data;
    println!("-- false links (clusters):");
    let mut shown = 0;
    for &(a, b) in links {
        if set.truth[a as usize] != set.truth[b as usize] && shown < max {
            print!(
                "{}",
                outcome.model.explain(data, a as usize, data, b as usize)
            );
            shown += 1;
        }
    }
    println!("-- missed pairs (not in one cluster):");
    let mut shown = 0;
    for &(a, b) in &truth {
        if outcome.clusters[a as usize] != outcome.clusters[b as usize] && shown < max {
            print!(
                "{}",
                outcome.model.explain(data, a as usize, data, b as usize)
            );
            shown += 1;
        }
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}
