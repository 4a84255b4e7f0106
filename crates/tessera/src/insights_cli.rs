//! `tessera insights trends|funnel|retention ...`: the insights of
//! `/api/v1/insights/*` from the command line.
//!
//! Like `tessera audiences preview`, it builds the audience index from the data
//! directory itself (with a progress bar), so it works with or without a server;
//! the reporting time zone is the configured one (`[insights] time_zone`). It
//! prints a table, `--csv` the API's CSV, or `--json` the API's JSON answer.

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::process::ExitCode;
use std::sync::Arc;
use tessera_audience::analytics::{answer, save_dropped};
use tessera_audience::engine::AudienceEngine;
use tessera_audience::insights::InsightRequest;
use tessera_audience::insights::funnels::{FunnelRequest, SaveDropped};
use tessera_audience::insights::retention::RetentionRequest;
use tessera_audience::insights::trends::{SeriesRequest, TrendsRequest};

use crate::options::Settings;

/// Insight subcommands.
#[derive(Debug, Subcommand)]
pub enum InsightsCommand {
    /// Events, people, or the sum or average of a property per hour, day, week or month
    Trends {
        /// A series: an event name, or 'event "Order Completed" where total > 50' (repeat for several)
        #[arg(long = "series", required = true)]
        series: Vec<String>,
        /// events (default), people, sum or avg
        #[arg(long)]
        measure: Option<String>,
        /// The numeric event property sum and avg read, e.g. revenue
        #[arg(long)]
        property: Option<String>,
        /// hour, day (default), week or month
        #[arg(long)]
        interval: Option<String>,
        #[command(flatten)]
        breakdown: BreakdownArgs,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// How many people go through ordered steps within a conversion window
    Funnel {
        /// A step: an event name or an 'event "..." where ...' atom (repeat, in order; 2 to 10)
        #[arg(long = "step", required = true)]
        steps: Vec<String>,
        /// The conversion window from the first step, e.g. 7d [default: 14d]
        #[arg(long)]
        window: Option<String>,
        /// ordered (default: in order, anything in between), strict (nothing in between) or any
        #[arg(long)]
        order: Option<String>,
        /// Save the people who reached the step before STEP but not STEP as a new audience (with --audience-key)
        #[arg(long, value_name = "STEP", requires = "audience_key")]
        save_dropped: Option<usize>,
        /// The key of the audience --save-dropped creates
        #[arg(long, requires = "save_dropped")]
        audience_key: Option<String>,
        #[command(flatten)]
        breakdown: BreakdownArgs,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Cohorts by first occurrence of an event, and how many come back per period
    Retention {
        /// The cohort event (its first occurrence in the range places a person)
        #[arg(long)]
        start: String,
        /// The return event [default: the cohort event]
        #[arg(long = "return")]
        returning: Option<String>,
        /// day, week (default) or month
        #[arg(long)]
        interval: Option<String>,
        /// Periods after the cohort's own [default: 8]
        #[arg(long)]
        periods: Option<usize>,
        #[command(flatten)]
        common: CommonArgs,
    },
}

/// A breakdown.
#[derive(Debug, Args)]
pub struct BreakdownArgs {
    /// Break down by this event property (funnels: of the first step's event)
    #[arg(long)]
    by_property: Option<String>,
    /// Break down by this trait
    #[arg(long, conflicts_with = "by_property")]
    by_trait: Option<String>,
    /// Breakdown values shown, the rest summed as "other" [default: 10]
    #[arg(long)]
    limit: Option<usize>,
}

/// Range, filter and output of every insight.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// First day (2026-03-01, local midnight) or RFC 3339 instant [default: 30 days before --to]
    #[arg(long)]
    from: Option<String>,
    /// Last day (included) or first instant after [default: today]
    #[arg(long)]
    to: Option<String>,
    /// Only people for whom this audience condition holds, e.g. 'trait country = "DE"'
    #[arg(long = "where")]
    filter: Option<String>,
    /// Print the API's JSON answer
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV
    #[arg(long)]
    csv: bool,
}

/// Runs an insight subcommand.
pub fn run(settings: &Settings, command: InsightsCommand) -> anyhow::Result<ExitCode> {
    match command {
        InsightsCommand::Trends {
            series,
            measure,
            property,
            interval,
            breakdown,
            common,
        } => {
            let request = TrendsRequest {
                series: series.into_iter().map(SeriesRequest::Step).collect(),
                from: common.from.clone(),
                to: common.to.clone(),
                interval,
                measure,
                property,
                by_property: breakdown.by_property,
                by_trait: breakdown.by_trait,
                limit: breakdown.limit,
                filter: common.filter.clone().map(Value::String),
                format: None,
            };
            print(settings, &request, &common)
        }
        InsightsCommand::Funnel {
            steps,
            window,
            order,
            save_dropped,
            audience_key,
            breakdown,
            common,
        } => {
            let request = FunnelRequest {
                steps,
                window,
                order,
                from: common.from.clone(),
                to: common.to.clone(),
                by_property: breakdown.by_property,
                by_trait: breakdown.by_trait,
                limit: breakdown.limit,
                filter: common.filter.clone().map(Value::String),
                format: None,
                save_dropped: save_dropped
                    .zip(audience_key)
                    .map(|(step, key)| SaveDropped {
                        step,
                        key,
                        name: String::new(),
                    }),
            };
            if request.save_dropped.is_some() {
                return save(settings, &request, &common);
            }
            print(settings, &request, &common)
        }
        InsightsCommand::Retention {
            start,
            returning,
            interval,
            periods,
            common,
        } => {
            let request = RetentionRequest {
                start,
                returning,
                interval,
                periods,
                from: common.from.clone(),
                to: common.to.clone(),
                filter: common.filter.clone().map(Value::String),
                format: None,
            };
            print(settings, &request, &common)
        }
    }
}

fn print<R: InsightRequest>(
    settings: &Settings,
    request: &R,
    common: &CommonArgs,
) -> anyhow::Result<ExitCode> {
    let (engine, _) = loaded_engine(settings)?;
    let answered = answer(&engine, request).map_err(crate::cli_error::coded)?;
    for warning in &answered.warnings {
        eprintln!("warning [{}]: {}", warning.code, warning.message);
    }
    if common.json {
        let json = serde_json::to_value(&answered.answer)?;
        println!(
            "{}",
            serde_json::to_string_pretty(&tessera_server::audiences::with_warnings(
                json,
                &answered.warnings
            ))?
        );
    } else if common.csv {
        print!("{}", R::table(&answered.answer).csv());
    } else {
        print!("{}", R::table(&answered.answer).text());
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a funnel, saves its drop-offs as an audience (audited), and prints the
/// funnel; the audience's summary goes to stderr.
fn save(
    settings: &Settings,
    request: &FunnelRequest,
    common: &CommonArgs,
) -> anyhow::Result<ExitCode> {
    let (engine, catalog) = loaded_engine(settings)?;
    let saved = save_dropped(&engine, request).map_err(crate::cli_error::coded)?;
    let audience = &saved.audience;
    tessera_runtime::audit::record_audit(
        catalog.as_ref(),
        &crate::cli_actor(),
        "audience.create",
        &audience.key,
        None,
        Some(
            &serde_json::json!({"key": audience.key, "name": audience.name,
                                 "description": audience.description, "definition": audience.text()}),
        ),
    );
    for warning in &saved.warnings {
        eprintln!("warning [{}]: {}", warning.code, warning.message);
    }
    eprintln!(
        "created audience {} with {} people; a running server computes its members within a second",
        audience.key, saved.members
    );
    if common.json {
        let json = serde_json::to_value(&saved.answer)?;
        println!(
            "{}",
            serde_json::to_string_pretty(&tessera_server::audiences::with_warnings(
                json,
                &saved.warnings
            ))?
        );
    } else if common.csv {
        print!("{}", saved.answer.table().csv());
    } else {
        print!("{}", saved.answer.table().text());
    }
    Ok(ExitCode::SUCCESS)
}

/// The engine over the data directory, its index built, and the catalog.
fn loaded_engine(
    settings: &Settings,
) -> anyhow::Result<(AudienceEngine, Arc<dyn tessera_store::Catalog>)> {
    let (engine, catalog) =
        crate::audiences_cli::engine_with(&settings.data_dir, settings.audiences)?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} events")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("loading");
    engine
        .load(&mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .map_err(crate::cli_error::coded)?;
    bar.finish_and_clear();
    Ok((engine, catalog))
}
