//! The de-duplication pipeline: block → estimate → score → cluster.
//!
//! 1. **Blocking** unions the rules' candidate pairs.
//! 2. **Estimation** (unless weights are given): `u` from random pairs; `m` and the
//!    prior λ by EM over *all* pairs — the candidates plus the random pairs outside
//!    them, scaled to stand for every pair ([`super::weights`]) — with guards; when
//!    the guards refuse that fit, `m` from training sessions ([`super::training`])
//!    and λ from the random pairs or, failing enough matches there, the candidates.
//!    Exact agreements on names are then adjusted by term frequency
//!    ([`super::frequency`]).
//! 3. **Scoring** compares every candidate pair (on all cores) and keeps those at or
//!    above the threshold — by default the weight where the posterior is one half.
//! 4. **Clustering** joins the kept links without chaining (see [`super::cluster`]).
//!
//! Everything is deterministic for a given input, configuration and seed.

use super::blocking::{BlockingRule, BlockingSettings, RuleStats, candidate_pairs, default_rules};
use super::cluster::{ClusterSettings, ClusterStats, cluster};
use super::error::DedupeError;
use super::frequency::TermFrequencies;
use super::kind::FieldKind;
use super::model::{Comparator, Model};
use super::record::{Dataset, Record, Schema};
use super::training::{
    SessionReport, anchor_rule, anchor_sets, fit_match_share, fit_match_share_free_u,
    plain_session, train_m,
};
use super::weights::{
    EmSettings, FieldWeights, LevelCounts, SplitMix64, Weights, fit_all_pairs, level_at,
    u_from_counts,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Instant;

/// The steps of a run, as reported to a [`Progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Running the blocking rules (counted in rules).
    Blocking,
    /// Comparing random pairs for `u` (counted in pairs).
    RandomPairs,
    /// Comparing candidate pairs for the EM (counted in pairs).
    Training,
    /// Scoring every candidate pair (counted in pairs).
    Scoring,
    /// Clustering the matching links (counted in links).
    Clustering,
}

impl Stage {
    /// The stage's name for humans.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Blocking => "blocking",
            Stage::RandomPairs => "random pairs",
            Stage::Training => "training",
            Stage::Scoring => "scoring",
            Stage::Clustering => "clustering",
        }
    }
}

/// Receives progress; called from several threads.
pub trait Progress: Sync {
    /// A stage starts, with `total` units of work.
    fn start(&self, stage: Stage, total: u64);
    /// `done` more units of the current stage are done.
    fn advance(&self, done: u64);
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _stage: Stage, _total: u64) {}
    fn advance(&self, _done: u64) {}
}

/// Everything a run can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DedupeConfig {
    /// Blocking rules; `None` chooses them from the schema ([`default_rules`]).
    pub blocking_rules: Option<Vec<BlockingRule>>,
    /// Block size cap and link-only mode.
    pub blocking: BlockingSettings,
    /// Fixed weights; `None` estimates them from the data.
    pub weights: Option<Weights>,
    /// Estimation settings.
    pub em: EmSettings,
    /// The match-weight threshold; `None` uses the weight where the posterior
    /// match probability is one half.
    pub threshold: Option<f64>,
    /// Clustering settings.
    pub clustering: ClusterSettings,
    /// Worker threads for comparisons; 0 uses every core.
    pub threads: usize,
    /// Count household-shared agreements once unless given name and date of
    /// birth agree (see [`Model::with_household_guard`]).
    pub household_guard: bool,
    /// Adjust exact agreements on names by how common the value is in the data
    /// (see [`super::frequency`]).
    pub term_frequency: bool,
}

impl Default for DedupeConfig {
    fn default() -> Self {
        DedupeConfig {
            blocking_rules: None,
            blocking: BlockingSettings::default(),
            weights: None,
            em: EmSettings::default(),
            threshold: None,
            clustering: ClusterSettings::default(),
            threads: 0,
            household_guard: true,
            term_frequency: true,
        }
    }
}

/// Where the prior (the chance that two random records match) came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorSource {
    /// Given with the weights.
    #[default]
    Given,
    /// Fitted with `m` by the EM over all pairs (candidates and random pairs).
    AllPairs,
    /// Fitted on random pairs (enough matches among them to count).
    RandomPairs,
    /// Fitted on the candidate pairs, their non-matches' `u` re-estimated.
    Candidates,
}

/// What the EM over all pairs (the candidates and the random pairs outside them)
/// found, and whether its `m` and prior were used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AllPairsReport {
    /// The matches it expects among all pairs.
    pub expected_matches: f64,
    /// Of those, among the candidate pairs.
    pub matches_among_candidates: f64,
    /// Of those, among the pairs blocking did not propose.
    pub matches_outside_candidates: f64,
    /// EM iterations.
    pub iterations: u64,
    /// Whether the guards accepted it (else `m` comes from the training sessions).
    pub used: bool,
}

/// A fit over all pairs that puts more than this share of its matches outside
/// the candidates is refused: blocking finds far more of the true pairs than that.
const MAX_MATCHES_OUTSIDE_SHARE: f64 = 0.3;

/// Random pairs must hold at least this many (fitted) matches for the prior to be
/// taken from them: fewer would make it a guess.
const MIN_RANDOM_PAIR_MATCHES: f64 = 20.0;

/// A candidate pair at or above the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoredPair {
    /// The first record's index.
    pub left: u32,
    /// The second record's index.
    pub right: u32,
    /// The match weight.
    pub weight: f32,
}

/// Figures of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DedupeStats {
    /// Records read.
    pub records: u64,
    /// Distinct candidate pairs after blocking.
    pub candidate_pairs: u64,
    /// Per blocking rule.
    pub blocking: Vec<RuleStats>,
    /// Random pairs compared for `u` (0 with fixed weights).
    pub random_pairs: u64,
    /// Candidate pairs the EM ran on (0 with fixed weights).
    pub training_pairs: u64,
    /// The training sessions that estimated `m`.
    pub em_sessions: Vec<SessionReport>,
    /// Iterations of the prior's fit.
    pub em_iterations: u64,
    /// The estimated share of matches among candidate pairs.
    pub candidate_match_share: f64,
    /// Matches the prior's fit found among the random pairs compared.
    pub random_pair_matches: f64,
    /// The expected matches over all pairs estimated from the random pairs, then
    /// from the candidates.
    pub expected_matches_by_source: [f64; 2],
    /// Which estimate set the prior.
    pub prior_from: PriorSource,
    /// The EM over all pairs, when estimated.
    pub all_pairs: Option<AllPairsReport>,
    /// The estimated number of matching pairs in the data.
    pub expected_matches: f64,
    /// The threshold used.
    pub threshold: f64,
    /// Candidate pairs at or above the threshold.
    pub matched_pairs: u64,
    /// Clustering figures.
    pub clustering: ClusterStats,
    /// Seconds spent per stage.
    pub seconds: Vec<(Stage, f64)>,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct DedupeOutcome {
    /// Per record (by index), its cluster number; records alone get their own.
    pub clusters: Vec<u32>,
    /// The candidate pairs at or above the threshold, as scored.
    pub links: Vec<ScoredPair>,
    /// The model used (fitted or given), for scoring and explaining more pairs.
    pub model: Model,
    /// Figures of the run.
    pub stats: DedupeStats,
}

/// De-duplicates records given as [`Record`]s; returns the normalized dataset (for
/// ids and explanations) with the outcome.
///
/// # Errors
/// As [`Dataset::from_records`] and [`dedupe`].
pub fn dedupe_records(
    schema: Schema,
    records: &[Record],
    config: &DedupeConfig,
) -> Result<(Dataset, DedupeOutcome), DedupeError> {
    let data = Dataset::from_records(schema, records)?;
    let outcome = dedupe(&data, config, &NoProgress)?;
    Ok((data, outcome))
}

/// De-duplicates (or, with `link_only_across_sources`, links) `data`.
///
/// # Errors
/// [`DedupeError::Blocking`] for a rule that does not fit the schema,
/// [`DedupeError::Config`] for given weights that do not fit it or a bad threshold,
/// [`DedupeError::TooLarge`] past 2^32 records.
pub fn dedupe(
    data: &Dataset,
    config: &DedupeConfig,
    progress: &dyn Progress,
) -> Result<DedupeOutcome, DedupeError> {
    let schema = data.schema();
    let threads = match config.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let mut stats = DedupeStats {
        records: data.len() as u64,
        ..DedupeStats::default()
    };
    let comparator = Comparator::new(schema);

    // 1. Blocking.
    let started = Instant::now();
    let rules = match &config.blocking_rules {
        Some(rules) => rules.clone(),
        None => default_rules(schema),
    };
    progress.start(Stage::Blocking, rules.len() as u64);
    let mut done_rules = 0;
    let candidates = candidate_pairs(data, &rules, &config.blocking, &mut |done| {
        progress.advance((done - done_rules) as u64);
        done_rules = done;
    })?;
    stats.candidate_pairs = candidates.pairs.len() as u64;
    stats.blocking = candidates.stats;
    stats
        .seconds
        .push((Stage::Blocking, started.elapsed().as_secs_f64()));
    let pairs = candidates.pairs;
    let total_pairs = total_pairs(data, config.blocking.link_only_across_sources);

    // 2. Weights.
    let weights = match &config.weights {
        Some(weights) => weights.clone(),
        None => {
            let started = Instant::now();
            let random = random_pairs(data, &pairs, &comparator, config, threads, progress);
            stats.random_pairs = random.compared;
            let u: Vec<[f64; 4]> = random.levels.iter().map(u_from_counts).collect();
            stats
                .seconds
                .push((Stage::RandomPairs, started.elapsed().as_secs_f64()));

            let started = Instant::now();
            let training = training_sample(&pairs, config.em.max_training_pairs);
            stats.training_pairs = training.len() as u64;
            let patterns = pattern_counts(data, &comparator, &training, threads, progress);
            drop(training);
            let mut sessions = Vec::new();
            for anchors in anchor_sets(schema) {
                let rule = anchor_rule(schema, &anchors);
                // Large blocks (a common name, a busy birthday) are skipped, not
                // windowed: a window sorted by name and date would pair lookalikes
                // and make the session's non-matches agree more than random pairs.
                let settings = BlockingSettings {
                    max_block_size: TRAINING_BLOCK_SIZE,
                    capped_window: 0,
                    ..config.blocking
                };
                let blocked = candidate_pairs(data, &[rule], &settings, &mut |_| {})?;
                let sample = training_sample(&blocked.pairs, config.em.max_training_pairs);
                drop(blocked);
                let session_patterns =
                    pattern_counts(data, &comparator, &sample, threads, progress);
                sessions.push((anchors, session_patterns));
            }
            let fallback = || plain_session(schema, &patterns, &u, &config.em);
            let (m, sessions) = train_m(schema, &sessions, &fallback, &u, &config.em);
            stats.em_sessions = sessions;
            // Every pair of the data, represented by the candidates (scaled up
            // from the training sample) and the random pairs outside them.
            let sample_pairs: u64 = patterns.iter().map(|(_, c)| c).sum();
            let candidate_scale = pairs.len() as f64 / (sample_pairs.max(1)) as f64;
            let outside_sampled: u64 = random.outside.iter().map(|(_, c)| c).sum();
            let outside_scale =
                (total_pairs - pairs.len() as f64).max(0.0) / (outside_sampled.max(1)) as f64;
            let population: Vec<(u64, f64)> = patterns
                .iter()
                .map(|&(p, c)| (p, c as f64 * candidate_scale))
                .chain(
                    random
                        .outside
                        .iter()
                        .map(|&(p, c)| (p, c as f64 * outside_scale)),
                )
                .collect();
            // Fields that follow from others (an email from the names: two
            // namesakes often share a local part) break the independence the fit
            // needs; they are left out of it and keep `m` from the sessions.
            let free: Vec<bool> = schema
                .fields()
                .iter()
                .map(|f| !derived_from_names(schema, f.kind))
                .collect();
            let all_pairs =
                fit_all_pairs(schema, &population, patterns.len(), &free, &u, &config.em);
            let found = all_pairs.matches_inside + all_pairs.matches_outside;
            // Guard: a fit that puts many of its matches where blocking proposed
            // no pair, or agrees no better among matches than among random pairs,
            // has learnt some other structure (lookalike emails of namesakes, a
            // shared format) than duplicates.
            let all_pairs_usable = found >= 1.0
                && all_pairs.matches_outside <= MAX_MATCHES_OUTSIDE_SHARE * found
                && (0..schema.len()).filter(|&f| free[f]).all(|f| {
                    let agree = |p: &[f64; 4]| p[2] + p[3];
                    agree(&all_pairs.m[f]) > agree(&u[f])
                });
            stats.all_pairs = Some(AllPairsReport {
                expected_matches: all_pairs.prior * total_pairs,
                matches_among_candidates: all_pairs.matches_inside,
                matches_outside_candidates: all_pairs.matches_outside,
                iterations: all_pairs.iterations as u64,
                used: all_pairs_usable,
            });
            let m: Vec<[f64; 4]> = if all_pairs_usable {
                m.into_iter()
                    .zip(&all_pairs.m)
                    .zip(&free)
                    .map(|((session, fitted), &free)| if free { *fitted } else { session })
                    .collect()
            } else {
                m
            };
            let (m_all, u_all) = (m.clone(), u.clone());
            let fields: Vec<FieldWeights> = schema
                .fields()
                .iter()
                .zip(m)
                .zip(u)
                .map(|((spec, m), u)| FieldWeights {
                    field: spec.name.clone(),
                    kind: spec.kind,
                    m,
                    u,
                })
                .collect();
            // The prior among candidates, fitted on the weights scoring will use.
            let provisional = Model::new(
                schema.clone(),
                Weights {
                    fields: fields.clone(),
                    prior: 0.5,
                },
                0.0,
            )?
            .with_household_guard(config.household_guard);
            // Without a usable fit over all pairs, the prior is the share of
            // matches among random pairs, fitted with `m` and `u` held, when the
            // sample holds enough matches to count; otherwise (large files, where
            // a match among random pairs is rare) the share among candidates, with
            // the candidates' own `u` (blocked lookalikes agree more than random
            // pairs, and counting them as matches inflated the prior many times).
            let (random_share, _) = fit_match_share(
                &random.patterns,
                &|p| provisional.pattern_weight(p),
                &config.em,
            );
            let (share, iterations) = fit_match_share_free_u(&patterns, &m_all, &u_all, &config.em);
            stats.em_iterations = iterations;
            stats.candidate_match_share = share;
            stats.random_pair_matches = random_share * random.compared as f64;
            let from_candidates = share * pairs.len() as f64;
            let from_random = random_share * total_pairs;
            stats.expected_matches_by_source = [from_random, from_candidates];
            let expected = if all_pairs_usable {
                stats.prior_from = PriorSource::AllPairs;
                all_pairs.prior * total_pairs
            } else if stats.random_pair_matches >= MIN_RANDOM_PAIR_MATCHES {
                stats.prior_from = PriorSource::RandomPairs;
                from_random
            } else {
                stats.prior_from = PriorSource::Candidates;
                from_candidates
            };
            let prior = if total_pairs > 0.0 {
                (expected / total_pairs).clamp(1e-12, 0.5)
            } else {
                0.5
            };
            stats
                .seconds
                .push((Stage::Training, started.elapsed().as_secs_f64()));
            Weights { fields, prior }
        }
    };
    let threshold = config
        .threshold
        .unwrap_or_else(|| weights.weight_for_probability(0.5));
    let mut model = Model::new(schema.clone(), weights, threshold)?
        .with_household_guard(config.household_guard);
    if config.term_frequency {
        let frequencies = TermFrequencies::count(data, model.weights());
        model = model.with_term_frequencies(frequencies);
    }
    let per_record = model
        .term_frequencies()
        .map(|tf| tf.per_record(data))
        .unwrap_or_default();
    let adjusted = |pattern: u64, i: u32| {
        if per_record.is_empty() {
            model.pattern_weight(pattern)
        } else {
            model.adjusted_weight(pattern, &|f| {
                per_record
                    .get(f)
                    .and_then(Option::as_ref)
                    .map_or(0.0, |v| f64::from(v[i as usize]))
            })
        }
    };
    stats.threshold = threshold;
    stats.expected_matches = model.weights().prior * total_pairs;

    // 3. Scoring.
    let started = Instant::now();
    progress.start(Stage::Scoring, pairs.len() as u64);
    let mut links: Vec<(u32, u32, f32)> = parallel_chunks(&pairs, threads, progress, |chunk| {
        chunk
            .iter()
            .filter_map(|&(i, j)| {
                let (pattern, _) = comparator.compare(data, i as usize, data, j as usize);
                let weight = adjusted(pattern, i);
                (weight >= threshold).then_some((i, j, weight as f32))
            })
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect();
    drop(pairs);
    stats.matched_pairs = links.len() as u64;
    stats
        .seconds
        .push((Stage::Scoring, started.elapsed().as_secs_f64()));

    // 4. Clustering.
    let started = Instant::now();
    progress.start(Stage::Clustering, links.len() as u64);
    let probability = |i: u32, j: u32| {
        let (pattern, _) = comparator.compare(data, i as usize, data, j as usize);
        model.match_probability(adjusted(pattern, i))
    };
    let (clusters, cluster_stats) =
        cluster(data.len(), &mut links, &config.clustering, &probability);
    progress.advance(links.len() as u64);
    stats.clustering = cluster_stats;
    stats
        .seconds
        .push((Stage::Clustering, started.elapsed().as_secs_f64()));
    tracing::info!(
        records = stats.records,
        candidate_pairs = stats.candidate_pairs,
        matched_pairs = stats.matched_pairs,
        clusters = stats.clustering.clusters,
        threshold = stats.threshold,
        "de-duplication done"
    );

    let links = links
        .into_iter()
        .map(|(left, right, weight)| ScoredPair {
            left,
            right,
            weight,
        })
        .collect();
    Ok(DedupeOutcome {
        clusters,
        links,
        model,
        stats,
    })
}

/// Whether a field of `kind` follows from the names in `schema` (an email address).
fn derived_from_names(schema: &Schema, kind: FieldKind) -> bool {
    let has_names = [
        FieldKind::FirstName,
        FieldKind::LastName,
        FieldKind::FullName,
    ]
    .into_iter()
    .any(|k| schema.first_of(k).is_some());
    has_names && kind == FieldKind::Email
}

/// The number of pairs a run could compare at most: all pairs, or in link mode all
/// pairs of different sources.
fn total_pairs(data: &Dataset, link_only: bool) -> f64 {
    let n = data.len() as f64;
    let all = n * (n - 1.0) / 2.0;
    if !link_only {
        return all;
    }
    let mut per_source: HashMap<u16, f64> = HashMap::new();
    for i in 0..data.len() {
        *per_source.entry(data.source_code(i)).or_default() += 1.0;
    }
    let same: f64 = per_source.values().map(|c| c * (c - 1.0) / 2.0).sum();
    all - same
}

/// What the random pairs showed: level counts per field (for `u`) and the distinct
/// comparison patterns with their counts (for the prior).
struct RandomPairs {
    levels: Vec<LevelCounts>,
    patterns: Vec<(u64, u64)>,
    /// The patterns of the random pairs that are not candidates.
    outside: Vec<(u64, u64)>,
    compared: u64,
}

/// Compares random pairs (every pair when there are few).
fn random_pairs(
    data: &Dataset,
    candidates: &[(u32, u32)],
    comparator: &Comparator,
    config: &DedupeConfig,
    threads: usize,
    progress: &dyn Progress,
) -> RandomPairs {
    let n = data.len();
    let link_only = config.blocking.link_only_across_sources;
    let wanted = config.em.random_pairs;
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    if n >= 2 && (n as u128 * (n as u128 - 1) / 2) <= wanted as u128 {
        for i in 0..n as u32 {
            for j in i + 1..n as u32 {
                if !link_only || data.source_code(i as usize) != data.source_code(j as usize) {
                    pairs.push((i, j));
                }
            }
        }
    } else if n >= 2 {
        let mut rng = SplitMix64::new(config.em.seed);
        let mut attempts = 0usize;
        while pairs.len() < wanted && attempts < wanted.saturating_mul(20) {
            attempts += 1;
            let i = rng.below(n as u64) as u32;
            let j = rng.below(n as u64) as u32;
            if i == j || (link_only && data.source_code(i as usize) == data.source_code(j as usize))
            {
                continue;
            }
            pairs.push((i.min(j), i.max(j)));
        }
    }
    progress.start(Stage::RandomPairs, pairs.len() as u64);
    let fields = data.schema().len();
    let partial = parallel_chunks(&pairs, threads, progress, |chunk| {
        let mut counts = vec![[0u64; 5]; fields];
        let mut patterns: HashMap<u64, u64> = HashMap::new();
        let mut outside: HashMap<u64, u64> = HashMap::new();
        for &(i, j) in chunk {
            let (pattern, _) = comparator.compare(data, i as usize, data, j as usize);
            for (f, c) in counts.iter_mut().enumerate() {
                c[level_at(pattern, f).index()] += 1;
            }
            *patterns.entry(pattern).or_default() += 1;
            if candidates.binary_search(&(i, j)).is_err() {
                *outside.entry(pattern).or_default() += 1;
            }
        }
        (counts, patterns, outside)
    });
    let mut counts = vec![[0u64; 5]; fields];
    let mut patterns: HashMap<u64, u64> = HashMap::new();
    let mut outside: HashMap<u64, u64> = HashMap::new();
    for (part, part_patterns, part_outside) in partial {
        for (total, c) in counts.iter_mut().zip(part) {
            for (t, v) in total.iter_mut().zip(c) {
                *t += v;
            }
        }
        for (pattern, count) in part_patterns {
            *patterns.entry(pattern).or_default() += count;
        }
        for (pattern, count) in part_outside {
            *outside.entry(pattern).or_default() += count;
        }
    }
    let sorted = |map: HashMap<u64, u64>| {
        let mut list: Vec<(u64, u64)> = map.into_iter().collect();
        list.sort_unstable();
        list
    };
    RandomPairs {
        levels: counts,
        patterns: sorted(patterns),
        outside: sorted(outside),
        compared: pairs.len() as u64,
    }
}

/// An even sample of at most `max` candidate pairs.
fn training_sample(pairs: &[(u32, u32)], max: usize) -> Vec<(u32, u32)> {
    if pairs.len() <= max || max == 0 {
        return pairs.to_vec();
    }
    let step = pairs.len() as f64 / max as f64;
    (0..max)
        .filter_map(|k| pairs.get((k as f64 * step) as usize).copied())
        .collect()
}

/// Distinct comparison patterns of `pairs` with their counts, sorted by pattern.
fn pattern_counts(
    data: &Dataset,
    comparator: &Comparator,
    pairs: &[(u32, u32)],
    threads: usize,
    progress: &dyn Progress,
) -> Vec<(u64, u64)> {
    progress.start(Stage::Training, pairs.len() as u64);
    let partial = parallel_chunks(pairs, threads, progress, |chunk| {
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for &(i, j) in chunk {
            let (pattern, _) = comparator.compare(data, i as usize, data, j as usize);
            *counts.entry(pattern).or_default() += 1;
        }
        counts
    });
    let mut counts: HashMap<u64, u64> = HashMap::new();
    for part in partial {
        for (pattern, count) in part {
            *counts.entry(pattern).or_default() += count;
        }
    }
    let mut patterns: Vec<(u64, u64)> = counts.into_iter().collect();
    patterns.sort_unstable();
    patterns
}

/// Blocks of a training session larger than this are skipped (a common name).
const TRAINING_BLOCK_SIZE: usize = 50;

/// Units of work between two progress reports.
const PROGRESS_STEP: usize = 1 << 14;

/// Runs `work` over `items` split among `threads` scoped threads, in order of the
/// items; each thread reports its progress as it goes.
fn parallel_chunks<T, R, F>(items: &[T], threads: usize, progress: &dyn Progress, work: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&[T]) -> R + Sync,
{
    let per_thread = items.len().div_ceil(threads.max(1)).max(1);
    let run = |slice: &[T]| -> Vec<R> {
        slice
            .chunks(PROGRESS_STEP)
            .map(|chunk| {
                let result = work(chunk);
                progress.advance(chunk.len() as u64);
                result
            })
            .collect()
    };
    if threads <= 1 || items.len() <= PROGRESS_STEP {
        return run(items);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per_thread)
            .map(|slice| scope.spawn(move || run(slice)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(results) => results,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedupe::record::FieldSpec;

    #[test]
    fn total_pairs_counts_only_cross_source_pairs_when_linking() {
        let schema = Schema::new(vec![FieldSpec::new("x", FieldKind::Text)]).expect("schema");
        let mut data = Dataset::new(schema);
        for (id, source) in [("a", "A"), ("b", "A"), ("c", "B"), ("d", "B"), ("e", "B")] {
            data.push(id, Some(source), &["x"]).expect("push");
        }
        assert_eq!(total_pairs(&data, false), 10.0);
        assert_eq!(total_pairs(&data, true), 6.0);
    }

    #[test]
    fn parallel_chunks_keeps_order() {
        let items: Vec<u32> = (0..100_000).collect();
        let sums = parallel_chunks(&items, 3, &NoProgress, |c| c.to_vec());
        let flat: Vec<u32> = sums.into_iter().flatten().collect();
        assert_eq!(flat, items);
    }
}
