//! The insights of `tessera-bench audiences`: a daily trend broken down by country,
//! a 3-step funnel with a 7-day window and an 8-week retention table, answered by
//! Tessera's index and by equivalent DuckDB SQL in the same run.
//!
//! Both sides answer rows of `(key, count)` — `day|country`, `step1..3`,
//! `cohort week|period` — and the run fails when they differ. The SQL follows the
//! definitions of docs/analytics.md for this data: the funnel's three steps have
//! different event names, so "each step's earliest event not before the previous
//! one, within 7 days of the entering add" is exact; ranges are `[from, to)`; days
//! and Monday weeks are UTC (the reporting zone of the run).

use anyhow::{Result, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Instant;
use tessera_audience::index::ProfileIndex;
use tessera_audience::insights::funnels::FunnelRequest;
use tessera_audience::insights::retention::RetentionRequest;
use tessera_audience::insights::trends::{SeriesRequest, TrendsRequest};
use tessera_audience::insights::{InsightInput, InsightRequest, ReportingZone};

const DAY_MS: i64 = 86_400_000;
/// The trend's and the funnel's range: the 30 days before now.
const RECENT_DAYS: i64 = 30;
/// The retention's range: the 8 weeks before now.
const RETENTION_DAYS: i64 = 56;
const WINDOW_MS: i64 = 7 * DAY_MS;

/// The SQL of each insight, for the DuckDB side (`insights.json`).
pub fn sql_cases(now_ms: i64) -> Vec<Value> {
    let recent = now_ms - RECENT_DAYS * DAY_MS;
    let weeks = now_ms - RETENTION_DAYS * DAY_MS;
    vec![
        json!({"key": "trend_daily_by_country", "sql": format!(
            "SELECT strftime(CAST(epoch_ms(e.ts_ms) AS DATE), '%Y-%m-%d') || '|' || coalesce(p.country, '') AS k, \
                    count(*) AS v \
             FROM events e LEFT JOIN profiles p USING (profile_id) \
             WHERE e.name = 'Order Completed' AND e.ts_ms >= {recent} AND e.ts_ms < {now_ms} \
             GROUP BY 1")}),
        json!({"key": "funnel_3_steps_7d", "sql": format!(
            "WITH a AS (SELECT profile_id, ts_ms AS t0 FROM events \
                        WHERE name = 'Product Added' AND ts_ms >= {recent} AND ts_ms < {now_ms}), \
                  b AS (SELECT a.profile_id, a.t0, min(e.ts_ms) AS t1 FROM a LEFT JOIN events e \
                        ON e.profile_id = a.profile_id AND e.name = 'Checkout Started' \
                        AND e.ts_ms >= a.t0 AND e.ts_ms <= a.t0 + {WINDOW_MS} GROUP BY a.profile_id, a.t0), \
                  c AS (SELECT b.profile_id, b.t0, b.t1, min(e.ts_ms) AS t2 FROM b LEFT JOIN events e \
                        ON e.profile_id = b.profile_id AND e.name = 'Order Completed' AND b.t1 IS NOT NULL \
                        AND e.ts_ms >= b.t1 AND e.ts_ms <= b.t0 + {WINDOW_MS} GROUP BY b.profile_id, b.t0, b.t1), \
                  per AS (SELECT profile_id, \
                          max(1 + CAST(t1 IS NOT NULL AS INTEGER) + CAST(t2 IS NOT NULL AS INTEGER)) AS reached \
                          FROM c GROUP BY profile_id) \
             SELECT 'step' || s.step AS k, count(*) FILTER (WHERE per.reached >= s.step) AS v \
             FROM per, (VALUES (1), (2), (3)) s(step) GROUP BY s.step")}),
        json!({"key": "retention_8_weeks", "sql": format!(
            "WITH f AS (SELECT profile_id, min(ts_ms) AS t FROM events \
                        WHERE name = 'Product Added' AND ts_ms >= {weeks} AND ts_ms < {now_ms} GROUP BY profile_id), \
                  c AS (SELECT profile_id, date_trunc('week', epoch_ms(t)) AS w FROM f), \
                  r AS (SELECT DISTINCT profile_id, date_trunc('week', epoch_ms(ts_ms)) AS w FROM events \
                        WHERE name = 'Order Completed' AND ts_ms >= {weeks} AND ts_ms < {now_ms}), \
                  n AS (SELECT c.w AS cw, CAST((epoch_ms(r.w) - epoch_ms(c.w)) / 604800000 AS BIGINT) AS period \
                        FROM c JOIN r USING (profile_id) WHERE r.w > c.w) \
             SELECT strftime(cw, '%Y-%m-%d') || '|' || period AS k, count(*) AS v FROM n \
             WHERE period <= 8 GROUP BY cw, period \
             UNION ALL \
             SELECT strftime(w, '%Y-%m-%d') || '|0' AS k, count(*) AS v FROM c GROUP BY w")}),
    ]
}

/// Tessera's answer to one insight, as rows, and its timings.
pub struct TesseraInsight {
    /// The insight.
    pub key: &'static str,
    /// `key -> count`, zero counts left out.
    pub rows: BTreeMap<String, u64>,
    /// Milliseconds of each timed run (check and run the request).
    pub times: Vec<f64>,
}

fn time_text(ms: i64) -> String {
    ReportingZone::UTC.format(ms)
}

/// Checks and runs a request over the whole index (no `where`).
fn answer<R: InsightRequest>(index: &ProfileIndex, request: &R, now_ms: i64) -> Result<R::Answer> {
    let query = request
        .compile(ReportingZone::UTC, now_ms)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let input = InsightInput {
        index,
        members: None,
        now_ms,
    };
    R::run(&query, &input).map_err(|e| anyhow::anyhow!("{e}"))
}

fn timed<T>(repeat: usize, mut run: impl FnMut() -> Result<T>) -> Result<(T, Vec<f64>)> {
    let mut result = run()?;
    let mut times = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let started = Instant::now();
        result = run()?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((result, times))
}

/// Runs the three insights on Tessera's index: a warm-up, then `repeat` timed runs.
pub fn run_tessera(
    index: &ProfileIndex,
    now_ms: i64,
    repeat: usize,
) -> Result<Vec<TesseraInsight>> {
    let recent = time_text(now_ms - RECENT_DAYS * DAY_MS);
    let weeks = time_text(now_ms - RETENTION_DAYS * DAY_MS);
    let now = time_text(now_ms);
    let mut out = Vec::new();

    let trend = TrendsRequest {
        series: vec![SeriesRequest::Step("Order Completed".into())],
        from: Some(recent.clone()),
        to: Some(now.clone()),
        interval: Some("day".into()),
        by_trait: Some("country".into()),
        limit: Some(100),
        ..TrendsRequest::default()
    };
    let (answer_trend, times) = timed(repeat, || answer(index, &trend, now_ms))?;
    let mut rows = BTreeMap::new();
    for series in &answer_trend.series {
        if series.other {
            bail!("the trend has an \"other\" row: raise its limit above the number of countries");
        }
        let country = match &series.breakdown {
            Some(Value::String(c)) => c.clone(),
            _ => String::new(),
        };
        for (bucket, value) in answer_trend.buckets.iter().zip(&series.values) {
            let n = value.as_u64().unwrap_or(0);
            if n > 0 {
                rows.insert(format!("{}|{country}", &bucket[..10]), n);
            }
        }
    }
    out.push(TesseraInsight {
        key: "trend_daily_by_country",
        rows,
        times,
    });

    let funnel = FunnelRequest {
        steps: vec![
            "Product Added".into(),
            "Checkout Started".into(),
            "Order Completed".into(),
        ],
        window: Some("7d".into()),
        from: Some(recent),
        to: Some(now.clone()),
        ..FunnelRequest::default()
    };
    let (answer_funnel, times) = timed(repeat, || answer(index, &funnel, now_ms))?;
    let rows = answer_funnel
        .steps
        .iter()
        .filter(|s| s.count > 0)
        .map(|s| (format!("step{}", s.step), s.count))
        .collect();
    out.push(TesseraInsight {
        key: "funnel_3_steps_7d",
        rows,
        times,
    });

    let retention = RetentionRequest {
        start: "Product Added".into(),
        returning: Some("Order Completed".into()),
        interval: Some("week".into()),
        periods: Some(8),
        from: Some(weeks),
        to: Some(now),
        ..RetentionRequest::default()
    };
    let (answer_retention, times) = timed(repeat, || answer(index, &retention, now_ms))?;
    let mut rows = BTreeMap::new();
    for cohort in &answer_retention.cohorts {
        for (period, returned) in cohort.returned.iter().enumerate() {
            if let Some(n) = returned.filter(|n| *n > 0) {
                rows.insert(format!("{}|{period}", &cohort.cohort[..10]), n);
            }
        }
    }
    out.push(TesseraInsight {
        key: "retention_8_weeks",
        rows,
        times,
    });
    Ok(out)
}

/// Compares Tessera's rows with DuckDB's (`duckdb.json`'s `insights`) and gives
/// the report's entries; fails on the first insight whose answers differ.
pub fn compare(tessera: &[TesseraInsight], duckdb: &Value) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for t in tessera {
        let d = duckdb["insights"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["key"] == t.key))
            .cloned()
            .unwrap_or(Value::Null);
        if !d.is_null() {
            let duck: BTreeMap<String, u64> = d["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|row| Some((row[0].as_str()?.to_owned(), row[1].as_u64()?)))
                .filter(|(_, v)| *v > 0)
                .collect();
            if duck != t.rows {
                let differing: Vec<String> = t
                    .rows
                    .keys()
                    .chain(duck.keys())
                    .filter(|k| t.rows.get(*k) != duck.get(*k))
                    .take(5)
                    .map(|k| format!("{k}: tessera {:?}, duckdb {:?}", t.rows.get(k), duck.get(k)))
                    .collect();
                bail!(
                    "{}: Tessera and DuckDB disagree ({} vs {} rows), e.g. {differing:?}",
                    t.key,
                    t.rows.len(),
                    duck.len()
                );
            }
        }
        let mut sorted = t.times.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
        let ratio = d["median_ms"]
            .as_f64()
            .map(|duck| (duck / median.max(1e-6) * 10.0).round() / 10.0);
        out.push(json!({
            "key": t.key,
            "rows": t.rows.len(),
            "tessera_ms": {"median_ms": (median * 1000.0).round() / 1000.0,
                           "min_ms": (sorted.first().copied().unwrap_or(0.0) * 1000.0).round() / 1000.0},
            "duckdb_ms": {"median_ms": d["median_ms"], "min_ms": d["min_ms"]},
            "ratio": ratio,
        }));
    }
    Ok(out)
}
