//! `tessera-bench audiences`: Tessera's audience engine against DuckDB on the same
//! generated data, in the same run.
//!
//! 1. Generates the data set ([`crate::audience_data`]) and writes it as CSV for DuckDB.
//! 2. Builds Tessera's in-memory audience index from it (the same structures the
//!    server builds from its store) and reports its memory per event and per profile.
//! 3. Times each of the ten definitions: **preview** (parse, compile, evaluate over
//!    every profile, count, sample 10 with their traits) and **full** (the same, then
//!    the complete member id list), median and minimum of `--repeat` runs after a
//!    warm-up.
//! 4. Times three insights on the same index ([`crate::insight_bench`]: a daily
//!    trend by country, a 3-step funnel, an 8-week retention).
//! 5. Frees the index and runs `bench/audiences/duckdb_side.py` (the equivalent SQL
//!    over typed tables, same thread count), then checks that every member count and
//!    every insight's rows are equal and reports each ratio (DuckDB time / Tessera
//!    time).

use crate::audience_data::{AUDIENCE_CASES, Dataset, GenEvent, generate, write_csv};
use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tessera_audience::batch::{Parallelism, evaluate};
use tessera_audience::computed::ComputedTrait;
use tessera_audience::eval::{Context as EvalContext, Plan};
use tessera_audience::index::{EventInput, ProfileIndex, ProfileInput};
use tessera_audience::language::parse_definition;
use tessera_audience::rfm::{RfmConfig, RfmModel};

/// Options of `audiences`.
#[derive(Args, Clone)]
pub struct AudienceBenchArgs {
    /// Profiles to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub profiles: usize,
    /// Events to generate.
    #[arg(long, default_value_t = 20_000_000)]
    pub events: usize,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Threads for both engines.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Timed runs per definition (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Directory for the CSVs and the reports.
    #[arg(long)]
    pub out: PathBuf,
    /// Python with the `duckdb` package (see bench/audiences/requirements.txt).
    #[arg(long, default_value = "bench/.venv/bin/python")]
    pub python: PathBuf,
    /// Skip the DuckDB side (Tessera's figures only).
    #[arg(long)]
    pub skip_duckdb: bool,
}

/// Median and minimum of timings, in ms.
fn summary(mut times: Vec<f64>) -> Value {
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(0.0);
    let min = times.first().copied().unwrap_or(0.0);
    json!({"median_ms": (median * 1000.0).round() / 1000.0, "min_ms": (min * 1000.0).round() / 1000.0})
}

fn event_input(event: &GenEvent) -> EventInput {
    EventInput {
        timestamp_ms: event.timestamp_ms,
        name: event.name.to_owned(),
        properties: event.properties(),
        consent: Vec::new(),
    }
}

/// Builds the index profile by profile, as the server's start-up load does.
fn build_index(dataset: &Dataset) -> ProfileIndex {
    let n = dataset.profiles.len();
    // Group event positions by profile (ids are 1..=n) with a counting sort.
    let mut offsets = vec![0usize; n + 2];
    for event in &dataset.events {
        offsets[event.profile as usize + 1] += 1;
    }
    for i in 1..offsets.len() {
        offsets[i] += offsets[i - 1];
    }
    let mut next = offsets.clone();
    let mut order = vec![0u32; dataset.events.len()];
    for (i, event) in dataset.events.iter().enumerate() {
        let p = event.profile as usize;
        order[next[p]] = i as u32;
        next[p] += 1;
    }
    let mut index = ProfileIndex::new();
    for profile in &dataset.profiles {
        let p = profile.id as usize;
        let mut traits = profile.traits.clone();
        let mut identifier_types = vec!["user_id".to_owned()];
        if let Some(email) = &profile.email {
            traits.insert("email".into(), Value::String(email.clone()));
            identifier_types.push("email".to_owned());
        }
        let events = order[offsets[p]..offsets[p + 1]]
            .iter()
            .map(|i| event_input(&dataset.events[*i as usize]))
            .collect();
        index.upsert_profile(&ProfileInput {
            id: profile.id,
            traits,
            identifier_types,
            events,
        });
    }
    for text in RfmModel::strings() {
        index.symbols.intern(&text);
    }
    index.compact();
    index
}

struct TesseraCase {
    key: &'static str,
    count: u64,
    preview: Value,
    full: Value,
}

fn run_tessera(
    index: &ProfileIndex,
    now_ms: i64,
    threads: usize,
    repeat: usize,
) -> Result<Vec<TesseraCase>> {
    let computed: HashMap<String, ComputedTrait> = ComputedTrait::presets()
        .into_iter()
        .map(|c| (c.key.clone(), c))
        .collect();
    let rfm = RfmModel::compute(index, RfmConfig::default(), now_ms);
    let memberships = HashMap::new();
    let context = EvalContext {
        index,
        now_ms,
        computed: &computed,
        rfm: Some(&rfm),
        memberships: &memberships,
    };
    let parallelism = Parallelism::threads(threads);
    let mut out = Vec::new();
    for case in AUDIENCE_CASES.iter() {
        let run = |full: bool| -> Result<(u64, usize)> {
            let condition =
                parse_definition(case.text).map_err(|e| anyhow::anyhow!("{}: {e}", case.key))?;
            let plan = Plan::compile(&condition, &context);
            let members = evaluate(&plan, index, now_ms, parallelism);
            let count = members.count() as u64;
            let listed = if full {
                members
                    .iter()
                    .map(|slot| index.profile_id(slot))
                    .collect::<Vec<i64>>()
                    .len()
            } else {
                let sample: Vec<(i64, Map<String, Value>)> = members
                    .iter()
                    .take(10)
                    .map(|slot| {
                        let traits = ["plan", "country", "email"]
                            .iter()
                            .filter_map(|t| index.trait_json(slot, t).map(|v| ((*t).to_owned(), v)))
                            .collect();
                        (index.profile_id(slot), traits)
                    })
                    .collect();
                sample.len()
            };
            Ok((count, listed))
        };
        let timings = |full: bool| -> Result<(u64, Vec<f64>)> {
            let (count, _) = run(full)?;
            let mut times = Vec::with_capacity(repeat);
            for _ in 0..repeat {
                let started = Instant::now();
                let (again, _) = run(full)?;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
                if again != count {
                    bail!("{}: the count changed between runs", case.key);
                }
            }
            Ok((count, times))
        };
        let (count, preview) = timings(false)?;
        let (full_count, full) = timings(true)?;
        if count != full_count {
            bail!("{}: preview {count} and full {full_count} differ", case.key);
        }
        eprintln!(
            "  tessera {:<22} {:>9} members  preview {:>9.3} ms  full {:>9.3} ms",
            case.key,
            count,
            summary(preview.clone())["median_ms"]
                .as_f64()
                .unwrap_or(0.0),
            summary(full.clone())["median_ms"].as_f64().unwrap_or(0.0),
        );
        out.push(TesseraCase {
            key: case.key,
            count,
            preview: summary(preview),
            full: summary(full),
        });
    }
    Ok(out)
}

fn run_duckdb(a: &AudienceBenchArgs, data: &Path) -> Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("audiences/duckdb_side.py");
    let report = data.join("duckdb.json");
    let status = std::process::Command::new(&a.python)
        .arg(&script)
        .arg("--data")
        .arg(data)
        .arg("--threads")
        .arg(a.threads.to_string())
        .arg("--repeat")
        .arg(a.repeat.to_string())
        .arg("--out")
        .arg(&report)
        .status()
        .with_context(|| {
            format!(
                "running {} (create it: python3 -m venv bench/.venv && bench/.venv/bin/pip install -r bench/audiences/requirements.txt)",
                a.python.display()
            )
        })?;
    if !status.success() {
        bail!("the DuckDB side failed ({status})");
    }
    let text = std::fs::read_to_string(&report)?;
    Ok(serde_json::from_str(&text)?)
}

/// Runs the comparison; the report (JSON) goes to `out/report.json` and stdout.
pub fn run(a: &AudienceBenchArgs) -> Result<Value> {
    std::fs::create_dir_all(&a.out)?;
    let started = Instant::now();
    let dataset = generate(
        a.profiles,
        a.events,
        a.seed,
        crate::audience_data::DEFAULT_NOW_MS,
    );
    let generate_s = started.elapsed().as_secs_f64();
    eprintln!(
        "generated {} profiles and {} events in {generate_s:.1} s",
        dataset.profiles.len(),
        dataset.events.len()
    );
    if !a.skip_duckdb {
        let started = Instant::now();
        write_csv(&dataset, &a.out)?;
        let cases: Vec<Value> = AUDIENCE_CASES
            .iter()
            .map(|c| json!({"key": c.key, "kind": c.kind, "text": c.text, "sql": c.sql_at(dataset.now_ms)}))
            .collect();
        std::fs::write(
            a.out.join("cases.json"),
            serde_json::to_string_pretty(&cases)?,
        )?;
        std::fs::write(
            a.out.join("insights.json"),
            serde_json::to_string_pretty(&crate::insight_bench::sql_cases(dataset.now_ms))?,
        )?;
        eprintln!("wrote CSVs in {:.1} s", started.elapsed().as_secs_f64());
    }
    let started = Instant::now();
    let index = build_index(&dataset);
    let build_s = started.elapsed().as_secs_f64();
    let memory = index.memory();
    eprintln!(
        "built the index in {build_s:.1} s: {} events, {:.1} bytes/event ({} property sets), {:.1} bytes/profile of traits",
        memory.events,
        memory.bytes_per_event(),
        memory.property_sets,
        memory.bytes_per_profile()
    );
    let now_ms = dataset.now_ms;
    drop(dataset);
    let tessera = run_tessera(&index, now_ms, a.threads, a.repeat)?;
    let insights = crate::insight_bench::run_tessera(&index, now_ms, a.repeat)?;
    for i in &insights {
        eprintln!(
            "  tessera insight {:<24} {:>6} rows  {:?} ms",
            i.key,
            i.rows.len(),
            i.times
        );
    }
    drop(index);
    let duckdb = if a.skip_duckdb {
        Value::Null
    } else {
        run_duckdb(a, &a.out)?
    };
    let mut cases = Vec::new();
    for t in &tessera {
        let d = duckdb["cases"]
            .as_array()
            .and_then(|cases| cases.iter().find(|c| c["key"] == t.key))
            .cloned()
            .unwrap_or(Value::Null);
        if !d.is_null() && d["count"].as_u64() != Some(t.count) {
            bail!(
                "{}: Tessera counts {} members, DuckDB {}: the engines disagree",
                t.key,
                t.count,
                d["count"]
            );
        }
        let ratio = |what: &str| {
            let tessera_ms = t.preview_or_full(what);
            d[what]["median_ms"]
                .as_f64()
                .map(|duck| (duck / tessera_ms.max(1e-6) * 10.0).round() / 10.0)
        };
        cases.push(json!({
            "key": t.key,
            "count": t.count,
            "tessera": {"preview": t.preview, "full": t.full},
            "duckdb": {"preview": d["preview"], "full": d["full"]},
            "ratio": {"preview": ratio("preview"), "full": ratio("full")},
        }));
    }
    let insights = crate::insight_bench::compare(&insights, &duckdb)?;
    let report = json!({
        "insights": insights,
        "profiles": a.profiles,
        "events": a.events,
        "threads": a.threads,
        "repeat": a.repeat,
        "generate_s": generate_s,
        "index_build_s": build_s,
        "memory": memory,
        "bytes_per_event": memory.bytes_per_event(),
        "bytes_per_profile": memory.bytes_per_profile(),
        "duckdb_version": duckdb["duckdb_version"],
        "duckdb_load": duckdb["load"],
        "cases": cases,
    });
    std::fs::write(
        a.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    eprintln!(
        "\n| definition | members | Tessera preview ms | DuckDB preview ms | ratio | Tessera full ms | DuckDB full ms | ratio |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|");
    for c in report["cases"].as_array().into_iter().flatten() {
        eprintln!(
            "| {} | {} | {} | {} | {}× | {} | {} | {}× |",
            c["key"].as_str().unwrap_or(""),
            c["count"],
            c["tessera"]["preview"]["median_ms"],
            c["duckdb"]["preview"]["median_ms"],
            c["ratio"]["preview"],
            c["tessera"]["full"]["median_ms"],
            c["duckdb"]["full"]["median_ms"],
            c["ratio"]["full"],
        );
    }
    eprintln!("\n| insight | rows | Tessera ms | DuckDB ms | ratio |");
    eprintln!("|---|---|---|---|---|");
    for i in report["insights"].as_array().into_iter().flatten() {
        eprintln!(
            "| {} | {} | {} | {} | {}× |",
            i["key"].as_str().unwrap_or(""),
            i["rows"],
            i["tessera_ms"]["median_ms"],
            i["duckdb_ms"]["median_ms"],
            i["ratio"],
        );
    }
    Ok(report)
}

impl TesseraCase {
    fn preview_or_full(&self, what: &str) -> f64 {
        let v = if what == "preview" {
            &self.preview
        } else {
            &self.full
        };
        v["median_ms"].as_f64().unwrap_or(0.0)
    }
}
