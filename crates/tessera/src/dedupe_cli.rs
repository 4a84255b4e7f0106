//! `tessera dedupe FILE.csv`: finds the records of one person in a CSV that share no
//! identifier (typos, nicknames, swapped or missing fields), with the probabilistic
//! engine of `tessera_identity::dedupe`, and writes `record_id,cluster_id`.
//!
//! Needs no data directory: it reads the file and writes the clusters. A progress
//! bar shows each stage on a terminal; a summary goes to stderr. Bad input (a
//! missing column, an unknown kind) is reported with what to do, exit code 1.

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use tessera_identity::dedupe::{
    Dataset, DedupeConfig, FieldKind, FieldSpec, Progress, Schema, Stage, dedupe,
};

/// Arguments of `tessera dedupe`.
#[derive(Debug, Args)]
pub struct DedupeArgs {
    /// The CSV file (a header row, then one record per row)
    pub file: PathBuf,
    /// The column holding each record's id (echoed in the output)
    #[arg(long)]
    pub id: String,
    /// A compared column and its kind, as COLUMN=KIND (repeat, or separate with
    /// commas). Kinds: first_name, middle_name, last_name, full_name, email, phone,
    /// date_of_birth, birth_year, birth_month, birth_day, sex, street_number, street,
    /// unit, city, postcode, state, country, national_id, text, exact
    #[arg(long = "field", value_delimiter = ',', required = true)]
    pub fields: Vec<String>,
    /// Where to write `record_id,cluster_id`
    #[arg(long)]
    pub out: PathBuf,
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

/// Runs `tessera dedupe`.
pub fn run(args: &DedupeArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let specs = args
        .fields
        .iter()
        .map(|f| parse_field(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
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
        .with_context(|| format!("cannot read the header row of {}", args.file.display()))?
        .clone();
    let column = |name: &str| -> anyhow::Result<usize> {
        headers.iter().position(|h| h == name).with_context(|| {
            format!(
                "{} has no column {name:?}; its columns are: {}",
                args.file.display(),
                headers.iter().collect::<Vec<_>>().join(", ")
            )
        })
    };
    let id_column = column(&args.id)?;
    let source_column = args.link_across.as_deref().map(column).transpose()?;
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
    let mut row = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut row) {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => bail!("{}: {error}", args.file.display()),
        }
        let values: Vec<&str> = columns
            .iter()
            .map(|&c| row.get(c).unwrap_or_default())
            .collect();
        let source = source_column.and_then(|c| row.get(c));
        data.push(row.get(id_column).unwrap_or_default(), source, &values)?;
    }
    let read_seconds = started.elapsed().as_secs_f64();
    // Output files are created before the work, so a bad path fails fast.
    let out =
        File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let links_out = match &args.links {
        Some(path) => {
            Some(File::create(path).with_context(|| format!("cannot create {}", path.display()))?)
        }
        None => None,
    };

    let mut config = DedupeConfig {
        threshold: args.threshold,
        household_guard: !args.no_household_guard,
        ..DedupeConfig::default()
    };
    config.blocking.max_block_size = args.max_block_size;
    config.blocking.link_only_across_sources = source_column.is_some();
    let outcome = dedupe(&data, &config, &Bar(bar.clone()))?;
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

    let stats = &outcome.stats;
    let mut sizes = std::collections::HashMap::<u32, u64>::new();
    for &c in &outcome.clusters {
        *sizes.entry(c).or_default() += 1;
    }
    let grouped: u64 = sizes.values().filter(|&&n| n > 1).sum();
    let groups = sizes.values().filter(|&&n| n > 1).count();
    let seconds = started.elapsed().as_secs_f64();
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
    eprintln!(
        "wrote {} in {seconds:.1} s ({:.0} records/s)",
        args.out.display(),
        data.len() as f64 / seconds.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
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
