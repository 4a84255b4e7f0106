//! `tessera dedupe FILE.csv`: finds the records of one person in a CSV that share no
//! identifier (typos, nicknames, swapped or missing fields), with the probabilistic
//! engine of `tessera_identity::dedupe`, and writes `record_id,cluster_id`.
//!
//! Needs no data directory: it reads the file and writes the clusters. A progress
//! bar shows each stage on a terminal; a summary goes to stderr. Bad input (a
//! missing column, an unknown kind) is reported with what to do, exit code 1.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use tessera_identity::dedupe::blocking::{candidate_pairs, default_rules};
use tessera_identity::dedupe::evaluate::{
    bcubed, pair_completeness, pairs_of_clusters, pairwise, pairwise_links,
};
use tessera_identity::dedupe::generate::{GenerateSettings, Scenario, generate};
use tessera_identity::dedupe::{
    Dataset, DedupeConfig, DedupeOutcome, FieldKind, FieldSpec, Level, Model, PriorSource,
    Progress, Schema, Stage, dedupe,
};

/// Arguments of `tessera dedupe`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DedupeArgs {
    /// Instead of de-duplicating a file, write a labelled test population
    #[command(subcommand)]
    pub command: Option<DedupeCommand>,
    /// The CSV file (a header row, then one record per row)
    #[arg(required = true)]
    pub file: Option<PathBuf>,
    /// The column holding each record's id (echoed in the output)
    #[arg(long, required = true)]
    pub id: Option<String>,
    /// A compared column and its kind, as COLUMN=KIND (repeat, or separate with
    /// commas). Kinds: first_name, middle_name, last_name, full_name, email, phone,
    /// date_of_birth, birth_year, birth_month, birth_day, sex, street_number, street,
    /// unit, city, postcode, state, country, national_id, text, exact
    #[arg(long = "field", value_delimiter = ',', required = true)]
    pub fields: Vec<String>,
    /// Where to write `record_id,cluster_id`
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    /// Match-weight threshold (log2 odds); by default the weight where the estimated
    /// match probability reaches one half
    #[arg(long, allow_negative_numbers = true)]
    pub threshold: Option<f64>,
    /// Link across sources only: never pair two records with the same value in this
    /// column (e.g. two customer lists to link)
    #[arg(long)]
    pub link_across: Option<String>,
    /// Also write the matching pairs as `left_id,right_id,weight,probability`
    #[arg(long)]
    pub links: Option<PathBuf>,
    /// Blocks larger than this are compared within a sliding window only
    #[arg(long, default_value_t = 200)]
    pub max_block_size: usize,
    /// Let agreement on last name, phone and address fields add up even when given
    /// names or dates of birth disagree (off by default: relatives share them)
    #[arg(long)]
    pub no_household_guard: bool,
    /// Weigh every exact agreement on a name alike (by default agreeing on a rare
    /// name weighs more than on a common one)
    #[arg(long)]
    pub no_term_frequency: bool,
    /// Score with the parameters saved by an earlier run's --save-model instead of
    /// estimating them (the fields must be the same, in the same order)
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Write the parameters used (m, u, prior, threshold) as JSON, for --model
    #[arg(long)]
    pub save_model: Option<PathBuf>,
    /// A column holding the true person of each record (a labelled set): also
    /// report the blocking recall and pairwise and B-cubed precision, recall and F1.
    /// The column is read for scoring only
    #[arg(long)]
    pub truth: Option<String>,
}

/// Subcommands of `tessera dedupe`.
#[derive(Debug, Subcommand)]
pub enum DedupeCommand {
    /// Write a labelled population (CSV with a `person_id` truth column) whose
    /// duplicates carry typos, nicknames, swapped and missing values
    Generate(GenerateArgs),
}

/// Arguments of `tessera dedupe generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// names-dob (first name, last name, date of birth), names-phone (names and a
    /// phone) or multi-source (three systems with different fields and error rates)
    #[arg(long, default_value = "names-dob")]
    pub scenario: Scenario,
    /// Records to write
    #[arg(long, default_value_t = 10_000)]
    pub records: usize,
    /// The share of records that duplicate another record's person (single-source
    /// scenarios)
    #[arg(long, default_value_t = 0.10)]
    pub duplicate_share: f64,
    /// The seed: the same seed and settings write the same file
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where to write the CSV
    #[arg(long)]
    pub out: PathBuf,
}

/// A `COLUMN=KIND` argument.
fn parse_field(text: &str) -> anyhow::Result<(String, FieldKind)> {
    let Some((column, kind)) = text.split_once('=') else {
        bail!("--field {text:?}: expected COLUMN=KIND, e.g. --field surname=last_name");
    };
    let kind = kind
        .parse::<FieldKind>()
        .with_context(|| format!("--field {text:?}"))?;
    Ok((column.trim().to_owned(), kind))
}

/// The progress bar, one stage after another.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, stage: Stage, total: u64) {
        self.0.set_length(total);
        self.0.set_position(0);
        self.0.set_message(stage.name());
    }

    fn advance(&self, done: u64) {
        self.0.inc(done);
    }
}

/// Runs `tessera dedupe` (or `tessera dedupe generate`).
pub fn run(args: &DedupeArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        Some(DedupeCommand::Generate(generate_args)) => run_generate(generate_args),
        None => run_dedupe(args),
    }
}

/// Writes a labelled population and prints the command that de-duplicates it.
fn run_generate(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let settings = GenerateSettings {
        scenario: args.scenario,
        records: args.records,
        duplicate_share: args.duplicate_share,
        seed: args.seed,
    };
    let population = generate(&settings).map_err(|message| anyhow::anyhow!("{message}"))?;
    let file =
        File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut out = BufWriter::new(file);
    population
        .write_csv(&mut out)
        .and_then(|()| out.flush())
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let truth = population.truth();
    let people = truth.iter().max().map_or(0, |&m| m as usize + 1);
    let true_pairs = pairs_of_clusters(&truth).len();
    eprintln!(
        "wrote {} records of {people} people ({true_pairs} true pairs; scenario {}, seed {}) to {} in {:.1} s",
        population.rows.len(),
        args.scenario,
        args.seed,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    let fields: Vec<String> = args
        .scenario
        .fields()
        .iter()
        .map(|(column, kind)| format!("{column}={kind}"))
        .collect();
    eprintln!(
        "de-duplicate and score it with:\n  tessera dedupe {} --id record_id --field {} --truth person_id --out clusters.csv",
        args.out.display(),
        fields.join(",")
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `tessera dedupe FILE`.
fn run_dedupe(args: &DedupeArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let (Some(path), Some(id_name), Some(out_path)) = (&args.file, &args.id, &args.out) else {
        bail!("tessera dedupe needs a FILE, --id, --field and --out (see tessera dedupe --help)");
    };
    let specs = args
        .fields
        .iter()
        .map(|f| parse_field(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let saved_model = args.model.as_deref().map(read_model).transpose()?;
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({eta})")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("reading");
    let mut reader = csv::Reader::from_reader(bar.wrap_read(file));
    let headers = reader
        .headers()
        .with_context(|| format!("cannot read the header row of {}", path.display()))?
        .clone();
    let column = |name: &str| -> anyhow::Result<usize> {
        headers.iter().position(|h| h == name).with_context(|| {
            format!(
                "{} has no column {name:?}; its columns are: {}",
                path.display(),
                headers.iter().collect::<Vec<_>>().join(", ")
            )
        })
    };
    let id_column = column(id_name)?;
    let source_column = args.link_across.as_deref().map(column).transpose()?;
    let truth_column = args.truth.as_deref().map(column).transpose()?;
    let columns = specs
        .iter()
        .map(|(name, _)| column(name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let schema = Schema::new(
        specs
            .iter()
            .map(|(name, kind)| FieldSpec::new(name.clone(), *kind))
            .collect(),
    )?;
    let mut data = Dataset::new(schema);
    let mut truth_labels: Vec<u32> = Vec::new();
    let mut truth_numbers: std::collections::HashMap<String, u32> =
        std::collections::HashMap::new();
    let mut row = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut row) {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => bail!("{}: {error}", path.display()),
        }
        let values: Vec<&str> = columns
            .iter()
            .map(|&c| row.get(c).unwrap_or_default())
            .collect();
        let source = source_column.and_then(|c| row.get(c));
        data.push(row.get(id_column).unwrap_or_default(), source, &values)?;
        if let Some(c) = truth_column {
            let label = row.get(c).unwrap_or_default();
            let next = truth_numbers.len() as u32;
            truth_labels.push(*truth_numbers.entry(label.to_owned()).or_insert(next));
        }
    }
    let read_seconds = started.elapsed().as_secs_f64();
    // Output files are created before the work, so a bad path fails fast.
    let out =
        File::create(out_path).with_context(|| format!("cannot create {}", out_path.display()))?;
    let links_out = match &args.links {
        Some(path) => {
            Some(File::create(path).with_context(|| format!("cannot create {}", path.display()))?)
        }
        None => None,
    };
    let model_out = match &args.save_model {
        Some(path) => {
            Some(File::create(path).with_context(|| format!("cannot create {}", path.display()))?)
        }
        None => None,
    };

    let mut config = DedupeConfig {
        threshold: args.threshold,
        household_guard: !args.no_household_guard,
        term_frequency: !args.no_term_frequency,
        weights: saved_model.as_ref().map(|m| m.weights().clone()),
        ..DedupeConfig::default()
    };
    config.blocking.max_block_size = args.max_block_size;
    config.blocking.link_only_across_sources = source_column.is_some();
    let outcome = dedupe(&data, &config, &Bar(bar.clone())).map_err(|error| match &args.model {
        Some(model) => anyhow::anyhow!(
            "{error} (the model {} was saved for other fields; run without --model to estimate new parameters)",
            model.display()
        ),
        None => error.into(),
    })?;
    bar.finish_and_clear();

    write_clusters(out, &data, &outcome.clusters)?;
    if let Some(file) = links_out {
        let mut out = BufWriter::new(file);
        writeln!(out, "left_id,right_id,weight,probability")?;
        let mut writer = csv::Writer::from_writer(out);
        for link in &outcome.links {
            let weight = f64::from(link.weight);
            writer.write_record([
                data.id(link.left as usize),
                data.id(link.right as usize),
                &format!("{weight:.3}"),
                &format!("{:.6}", outcome.model.match_probability(weight)),
            ])?;
        }
        writer.flush()?;
    }
    if let Some(file) = model_out {
        let mut out = BufWriter::new(file);
        serde_json::to_writer_pretty(&mut out, &outcome.model)?;
        writeln!(out)?;
        out.flush()?;
    }

    let stats = &outcome.stats;
    let mut sizes = std::collections::HashMap::<u32, u64>::new();
    for &c in &outcome.clusters {
        *sizes.entry(c).or_default() += 1;
    }
    let grouped: u64 = sizes.values().filter(|&&n| n > 1).sum();
    let groups = sizes.values().filter(|&&n| n > 1).count();
    let seconds = started.elapsed().as_secs_f64();
    print_parameters(&outcome.model, args.model.is_some());
    let [from_random, from_candidates] = stats.expected_matches_by_source;
    if let Some(fit) = &stats.all_pairs {
        eprintln!(
            "EM over all pairs: {:.0} expected matches, {:.0} among the candidates and {:.0} outside them ({})",
            fit.expected_matches,
            fit.matches_among_candidates,
            fit.matches_outside_candidates,
            if fit.used {
                "used: m and the prior come from it"
            } else {
                "refused by its guards: m comes from the training sessions"
            }
        );
    }
    match stats.prior_from {
        PriorSource::Given | PriorSource::AllPairs => {}
        PriorSource::RandomPairs => eprintln!(
            "prior from {} random pairs ({:.0} matches among them): {from_random:.0} expected matches; the candidates suggest {from_candidates:.0}",
            stats.random_pairs, stats.random_pair_matches
        ),
        PriorSource::Candidates => eprintln!(
            "prior from the candidates ({:.1} matches among {} random pairs were too few to count): {from_candidates:.0} expected matches",
            stats.random_pair_matches, stats.random_pairs
        ),
    }
    eprintln!(
        "{} records read in {read_seconds:.1} s; {} candidate pairs, {} matching (threshold {:.2}, {:.0} expected matches)",
        data.len(),
        stats.candidate_pairs,
        stats.matched_pairs,
        stats.threshold,
        stats.expected_matches
    );
    eprintln!(
        "{} clusters: {groups} with duplicates holding {grouped} records, the largest {}; {} links refused by the average-linkage check",
        stats.clustering.clusters, stats.clustering.largest, stats.clustering.refused_links
    );
    let capped: u64 = stats.blocking.iter().map(|r| r.capped_blocks).sum();
    if capped > 0 {
        eprintln!(
            "note: {capped} blocks larger than {} records were compared within a window only (--max-block-size)",
            args.max_block_size
        );
    }
    if truth_column.is_some() {
        report_accuracy(&data, &config, &outcome, &truth_labels)?;
    }
    eprintln!(
        "wrote {} in {seconds:.1} s ({:.0} records/s)",
        out_path.display(),
        data.len() as f64 / seconds.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads a model written by `--save-model`.
fn read_model(path: &std::path::Path) -> anyhow::Result<Model> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--model: cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "--model: {} is not a model written by --save-model",
            path.display()
        )
    })
}

/// Prints the parameters scoring used: per field and level `m`, `u` and the weight.
fn print_parameters(model: &Model, loaded: bool) {
    let weights = model.weights();
    eprintln!(
        "parameters ({}): prior {:.3e} (the chance that two random records match), threshold {:.2}",
        if loaded { "from --model" } else { "estimated" },
        weights.prior,
        model.threshold()
    );
    for field in &weights.fields {
        let levels: Vec<String> = [
            Level::Exact,
            Level::VerySimilar,
            Level::Similar,
            Level::Different,
        ]
        .iter()
        .map(|&level| {
            let i = level.index();
            format!(
                "{} {:+.2} (m {:.3}, u {:.4})",
                level,
                field.weight(level),
                field.m[i],
                field.u[i]
            )
        })
        .collect();
        eprintln!("  {:<16} {}", field.field, levels.join("  "));
    }
}

/// With a truth column: how many true pairs blocking reached, and the pairwise and
/// B-cubed scores of the links and of the clusters.
fn report_accuracy(
    data: &Dataset,
    config: &DedupeConfig,
    outcome: &DedupeOutcome,
    truth: &[u32],
) -> anyhow::Result<()> {
    let mut true_pairs = pairs_of_clusters(truth);
    if config.blocking.link_only_across_sources {
        true_pairs.retain(|&(a, b)| data.source(a as usize) != data.source(b as usize));
    }
    let rules = match &config.blocking_rules {
        Some(rules) => rules.clone(),
        None => default_rules(data.schema()),
    };
    let candidates = candidate_pairs(data, &rules, &config.blocking, &mut |_| {})?;
    let completeness = pair_completeness(&candidates.pairs, &true_pairs);
    let links: Vec<(u32, u32)> = outcome.links.iter().map(|l| (l.left, l.right)).collect();
    let link_scores = pairwise_links(&true_pairs, &links);
    let cluster_scores = pairwise(truth, &outcome.clusters);
    let b3 = bcubed(truth, &outcome.clusters);
    eprintln!(
        "truth: {} true pairs; blocking reached {:.4} of them with {} candidate pairs",
        true_pairs.len(),
        completeness,
        candidates.pairs.len()
    );
    // Each rule alone: the pairs it proposes, those no earlier rule did, and the
    // share of true pairs it would reach by itself.
    for (rule, rule_stats) in rules.iter().zip(&candidates.stats) {
        let alone = candidate_pairs(
            data,
            std::slice::from_ref(rule),
            &config.blocking,
            &mut |_| {},
        )?;
        eprintln!(
            "  rule {:<44} {:>10} pairs, {:>10} new, reaches {:.4} alone",
            rule.name,
            rule_stats.pairs,
            rule_stats.new_pairs,
            pair_completeness(&alone.pairs, &true_pairs)
        );
    }
    eprintln!(
        "  links    precision {:.4} recall {:.4} F1 {:.4}",
        link_scores.precision, link_scores.recall, link_scores.f1
    );
    eprintln!(
        "  clusters precision {:.4} recall {:.4} F1 {:.4} (pairwise); B-cubed precision {:.4} recall {:.4} F1 {:.4}",
        cluster_scores.precision,
        cluster_scores.recall,
        cluster_scores.f1,
        b3.precision,
        b3.recall,
        b3.f1
    );
    Ok(())
}

fn write_clusters(file: File, data: &Dataset, clusters: &[u32]) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_writer(BufWriter::new(file));
    writer.write_record(["record_id", "cluster_id"])?;
    for (i, cluster) in clusters.iter().enumerate() {
        writer.write_record([data.id(i), &cluster.to_string()])?;
    }
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_arguments_name_a_column_and_a_kind() {
        let (column, kind) = parse_field("surname=last_name").expect("valid");
        assert_eq!((column.as_str(), kind), ("surname", FieldKind::LastName));
        let missing = parse_field("surname").expect_err("must fail").to_string();
        assert!(missing.contains("COLUMN=KIND"), "{missing}");
        let unknown = format!("{:#}", parse_field("dob=birthday").expect_err("must fail"));
        assert!(
            unknown.contains("unknown field kind \"birthday\""),
            "{unknown}"
        );
    }
}
