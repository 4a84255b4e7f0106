//! The Fellegi–Sunter weights and their estimation.
//!
//! For each field and comparison level, `m` is the probability of that level among
//! true matches and `u` among non-matches; the level's weight is `log2(m / u)` and a
//! pair's match weight is the sum over fields (missing values add nothing). With the
//! prior probability `λ` that two random records match, the posterior is
//! `λ·2^W / (λ·2^W + 1 − λ)`, so the weight where it reaches one half,
//! `log2((1 − λ) / λ)`, is the natural threshold.
//!
//! Estimation: `u` is counted on random pairs (nearly all non-matches). `m` and the
//! prior come from expectation–maximisation over *all* pairs ([`fit_all_pairs`]:
//! the candidates plus the random pairs outside them, `u` held), started from priors
//! (matches mostly agree exactly). Sessions over anchored candidate pairs
//! ([`fit_em`], [`super::training`]) are the fallback; there, blocking makes
//! candidate non-matches agree more often than random ones, so a plain EM over the
//! candidates keeps its own `u` as a nuisance parameter; the reported weights use
//! the random-pair `u`.

use super::kind::{FieldKind, Level};
use super::record::Schema;
use serde::{Deserialize, Serialize};

/// Bits per field in a comparison pattern.
pub(crate) const LEVEL_BITS: u32 = 3;

/// The level of `field` in a packed comparison pattern.
pub(crate) fn level_at(pattern: u64, field: usize) -> Level {
    Level::from_index(((pattern >> (LEVEL_BITS as usize * field)) & 0b111) as usize)
}

/// Sets the level of `field` in a packed comparison pattern.
pub(crate) fn with_level(pattern: u64, field: usize, level: Level) -> u64 {
    let shift = LEVEL_BITS as usize * field;
    (pattern & !(0b111 << shift)) | ((level.index() as u64) << shift)
}

/// Smallest probability kept, so that no weight is infinite.
const FLOOR: f64 = 1e-9;

/// `m` and `u` of one field, per compared level (indexed by [`Level::index`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldWeights {
    /// The field's name.
    pub field: String,
    /// The field's kind.
    pub kind: FieldKind,
    /// P(level | match) for Different, Similar, VerySimilar, Exact.
    pub m: [f64; 4],
    /// P(level | non-match) for Different, Similar, VerySimilar, Exact.
    pub u: [f64; 4],
}

impl FieldWeights {
    /// The weight `log2(m/u)` of `level`; zero for `Missing`.
    pub fn weight(&self, level: Level) -> f64 {
        match level {
            Level::Missing => 0.0,
            level => {
                let i = level.index();
                (self.m[i].max(FLOOR) / self.u[i].max(FLOOR)).log2()
            }
        }
    }
}

/// The model's parameters: per-field `m`/`u` and the prior match probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// One entry per schema field, in schema order.
    pub fields: Vec<FieldWeights>,
    /// P(match) for two records drawn at random (λ).
    pub prior: f64,
}

impl Weights {
    /// The weight of `level` on field `field`.
    pub fn weight(&self, field: usize, level: Level) -> f64 {
        self.fields.get(field).map_or(0.0, |f| f.weight(level))
    }

    /// The posterior match probability of a pair with match weight `weight`.
    pub fn match_probability(&self, weight: f64) -> f64 {
        let prior = self.prior.clamp(FLOOR, 1.0 - FLOOR);
        let odds = prior / (1.0 - prior) * weight.exp2();
        if odds.is_infinite() {
            1.0
        } else {
            odds / (1.0 + odds)
        }
    }

    /// The match weight at which the posterior probability is `probability`.
    pub fn weight_for_probability(&self, probability: f64) -> f64 {
        let p = probability.clamp(FLOOR, 1.0 - FLOOR);
        let prior = self.prior.clamp(FLOOR, 1.0 - FLOOR);
        (p / (1.0 - p)).log2() - (prior / (1.0 - prior)).log2()
    }

    /// Checks that the weights name the schema's fields, in order, with valid
    /// probabilities.
    pub(crate) fn check(&self, schema: &Schema) -> Result<(), String> {
        if self.fields.len() != schema.len() {
            return Err(format!(
                "the weights have {} fields, the schema {}",
                self.fields.len(),
                schema.len()
            ));
        }
        for (w, f) in self.fields.iter().zip(schema.fields()) {
            if w.field != f.name || w.kind != f.kind {
                return Err(format!(
                    "weights for {} ({}) given where the schema has {} ({})",
                    w.field, w.kind, f.name, f.kind
                ));
            }
            let valid = |p: &f64| (0.0..=1.0).contains(p);
            if !w.m.iter().all(valid) || !w.u.iter().all(valid) {
                return Err(format!(
                    "weights for {}: m and u must lie in 0..=1",
                    w.field
                ));
            }
        }
        if !(self.prior > 0.0 && self.prior < 1.0) {
            return Err(format!(
                "prior {} must lie strictly between 0 and 1",
                self.prior
            ));
        }
        Ok(())
    }

    /// The weight of every field and level, packed for the scoring loop.
    pub(crate) fn table(&self) -> Vec<[f64; 5]> {
        self.fields
            .iter()
            .map(|f| {
                let mut row = [0.0; 5];
                for level in Level::COMPARED {
                    row[level.index()] = f.weight(level);
                }
                row
            })
            .collect()
    }
}

/// Settings of the estimation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EmSettings {
    /// Random pairs compared to estimate `u`.
    pub random_pairs: usize,
    /// Candidate pairs (an even sample when there are more) the EM runs on.
    pub max_training_pairs: usize,
    /// Iterations at most.
    pub max_iterations: usize,
    /// Stop when no parameter moves more than this.
    pub tolerance: f64,
    /// Seed of the random-pair sampler (runs are reproducible).
    pub seed: u64,
}

impl Default for EmSettings {
    fn default() -> Self {
        EmSettings {
            random_pairs: 1_000_000,
            max_training_pairs: 5_000_000,
            max_iterations: 200,
            tolerance: 1e-7,
            seed: 0x7e55e7a,
        }
    }
}

/// Prior share of each level among matches, before any data is seen.
fn m_prior(kind: FieldKind) -> [f64; 4] {
    match kind {
        // Fields that can only agree or not.
        FieldKind::Sex | FieldKind::Country | FieldKind::Exact => [0.05, 0.0, 0.0, 0.95],
        _ => [0.04, 0.03, 0.08, 0.85],
    }
}

/// Pseudo-counts with which the priors enter every M step.
const PRIOR_STRENGTH: f64 = 2.0;

/// Level counts of one field over a set of pairs (index 4 counts missing).
pub(crate) type LevelCounts = [u64; 5];

/// `u` from level counts on random pairs, lightly smoothed.
pub(crate) fn u_from_counts(counts: &LevelCounts) -> [f64; 4] {
    let compared: u64 = counts[..4].iter().sum();
    let mut u = [0.0; 4];
    for (l, value) in u.iter_mut().enumerate() {
        *value = (counts[l] as f64 + 0.5) / (compared as f64 + 2.0);
    }
    u
}

/// What the EM found.
#[derive(Debug, Clone)]
pub(crate) struct EmFit {
    pub m: Vec<[f64; 4]>,
    /// The share of matches among the training pairs.
    pub match_share: f64,
    pub iterations: usize,
}

/// Expectation–maximisation over distinct comparison patterns and their counts,
/// on the fields where `free` is true (the others are ignored, as if missing). `u`
/// starts at the random-pair estimate; with `nuisance_u` it is re-estimated among
/// these pairs (candidate non-matches agree more often than random ones), otherwise
/// it is held.
pub(crate) fn fit_em(
    schema: &Schema,
    patterns: &[(u64, u64)],
    u_random: &[[f64; 4]],
    free: &[bool],
    nuisance_u: bool,
    settings: &EmSettings,
) -> EmFit {
    let n = schema.len();
    let priors: Vec<[f64; 4]> = schema.fields().iter().map(|f| m_prior(f.kind)).collect();
    let mut m = priors.clone();
    let mut u = u_random.to_vec();
    let mut share = 0.1;
    let levels: Vec<Vec<usize>> = patterns
        .iter()
        .map(|&(p, _)| {
            (0..n)
                .map(|f| if free[f] { level_at(p, f).index() } else { 4 })
                .collect()
        })
        .collect();
    let mut iterations = 0;
    while iterations < settings.max_iterations {
        iterations += 1;
        let mut m_counts = vec![[0.0f64; 4]; n];
        let mut u_counts = vec![[0.0f64; 4]; n];
        let mut matches = 0.0;
        let mut total = 0.0;
        for (&(_, count), pattern) in patterns.iter().zip(&levels) {
            let mut pm = share;
            let mut pu = 1.0 - share;
            for (f, &l) in pattern.iter().enumerate() {
                if l < 4 {
                    pm *= m[f][l];
                    pu *= u[f][l];
                }
            }
            let g = if pm + pu > 0.0 { pm / (pm + pu) } else { 0.0 };
            let c = count as f64;
            matches += g * c;
            total += c;
            for (f, &l) in pattern.iter().enumerate() {
                if l < 4 {
                    m_counts[f][l] += g * c;
                    u_counts[f][l] += (1.0 - g) * c;
                }
            }
        }
        let mut change: f64 = 0.0;
        for f in 0..n {
            let m_total: f64 = m_counts[f].iter().sum::<f64>() + PRIOR_STRENGTH;
            let u_total: f64 = u_counts[f].iter().sum::<f64>() + PRIOR_STRENGTH;
            for l in 0..4 {
                let new_m = ((m_counts[f][l] + PRIOR_STRENGTH * priors[f][l]) / m_total).max(FLOOR);
                let new_u = if nuisance_u {
                    ((u_counts[f][l] + PRIOR_STRENGTH * u_random[f][l]) / u_total).max(FLOOR)
                } else {
                    u[f][l]
                };
                change = change
                    .max((new_m - m[f][l]).abs())
                    .max((new_u - u[f][l]).abs());
                m[f][l] = new_m;
                u[f][l] = new_u;
            }
        }
        let new_share = if total > 0.0 {
            (matches / total).clamp(FLOOR, 1.0 - FLOOR)
        } else {
            share
        };
        change = change.max((new_share - share).abs());
        share = new_share;
        if change < settings.tolerance {
            break;
        }
    }
    EmFit {
        m,
        match_share: share,
        iterations,
    }
}

/// What the EM over all pairs found.
#[derive(Debug, Clone)]
pub(crate) struct AllPairsFit {
    pub m: Vec<[f64; 4]>,
    /// The share of matches among all pairs: the prior λ.
    pub prior: f64,
    /// The matches the fit finds among the first `inside` entries of the
    /// population (the candidates) and among the rest.
    pub matches_inside: f64,
    pub matches_outside: f64,
    pub iterations: usize,
}

/// Expectation–maximisation of `m` and the prior over *all* pairs, `u` held.
///
/// `population` holds comparison patterns with weights that make it stand for
/// every pair of the data: the candidate pairs (each counting once, or scaled up
/// from a sample) and the random pairs that blocking did not propose (each
/// standing for `(all pairs − candidates) / sampled` pairs). Among all pairs, the
/// non-matches are random pairs, which is exactly what `u` describes, and their
/// fields disagree independently — unlike blocked pairs, whose lookalikes agree on
/// the blocking fields. So the latent-class model holds where it is fitted, and
/// three fields suffice to tell `m` from the prior.
pub(crate) fn fit_all_pairs(
    schema: &Schema,
    population: &[(u64, f64)],
    inside: usize,
    free: &[bool],
    u: &[[f64; 4]],
    settings: &EmSettings,
) -> AllPairsFit {
    let n = schema.len();
    let priors: Vec<[f64; 4]> = schema.fields().iter().map(|f| m_prior(f.kind)).collect();
    let mut m = priors.clone();
    let total: f64 = population.iter().map(|(_, w)| w).sum();
    let levels: Vec<Vec<usize>> = population
        .iter()
        .map(|&(p, _)| {
            (0..n)
                .map(|f| if free[f] { level_at(p, f).index() } else { 4 })
                .collect()
        })
        .collect();
    // Start from "a few matches": a tenth of a match per record.
    let mut prior = if total > 0.0 {
        (0.1 * (1.0 + (2.0 * total).sqrt()) / total).clamp(FLOOR, 0.5)
    } else {
        0.5
    };
    let posterior = |m: &[[f64; 4]], prior: f64, pattern: &[usize]| {
        // In log space: products of many small `u` underflow.
        let mut log_odds = (prior / (1.0 - prior)).ln();
        for (f, &l) in pattern.iter().enumerate() {
            if l < 4 {
                log_odds += (m[f][l].max(FLOOR) / u[f][l].max(FLOOR)).ln();
            }
        }
        1.0 / (1.0 + (-log_odds).exp())
    };
    let mut iterations = 0;
    while iterations < settings.max_iterations && total > 0.0 {
        iterations += 1;
        let mut m_counts = vec![[0.0f64; 4]; n];
        let mut matches = 0.0;
        for (&(_, weight), pattern) in population.iter().zip(&levels) {
            let g = posterior(&m, prior, pattern);
            matches += g * weight;
            for (f, &l) in pattern.iter().enumerate() {
                if l < 4 {
                    m_counts[f][l] += g * weight;
                }
            }
        }
        let mut change: f64 = 0.0;
        for f in 0..n {
            let m_total: f64 = m_counts[f].iter().sum::<f64>() + PRIOR_STRENGTH;
            for l in 0..4 {
                let new_m = ((m_counts[f][l] + PRIOR_STRENGTH * priors[f][l]) / m_total).max(FLOOR);
                change = change.max((new_m - m[f][l]).abs());
                m[f][l] = new_m;
            }
        }
        let new_prior = (matches / total).clamp(FLOOR * FLOOR, 0.5);
        change = change.max(((new_prior - prior) / prior).abs() * 1e-3);
        prior = new_prior;
        if change < settings.tolerance {
            break;
        }
    }
    let (mut matches_inside, mut matches_outside) = (0.0, 0.0);
    for (k, (&(_, weight), pattern)) in population.iter().zip(&levels).enumerate() {
        let g = posterior(&m, prior, pattern) * weight;
        if k < inside {
            matches_inside += g;
        } else {
            matches_outside += g;
        }
    }
    AllPairsFit {
        m,
        prior,
        matches_inside,
        matches_outside,
        iterations,
    }
}

/// A small deterministic generator (SplitMix64) for sampling random pairs.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedupe::record::FieldSpec;

    #[test]
    fn pattern_packing_round_trips() {
        let mut p = 0;
        p = with_level(p, 0, Level::Exact);
        p = with_level(p, 3, Level::Missing);
        p = with_level(p, 20, Level::Similar);
        assert_eq!(level_at(p, 0), Level::Exact);
        assert_eq!(level_at(p, 1), Level::Different);
        assert_eq!(level_at(p, 3), Level::Missing);
        assert_eq!(level_at(p, 20), Level::Similar);
        p = with_level(p, 3, Level::VerySimilar);
        assert_eq!(level_at(p, 3), Level::VerySimilar);
    }

    #[test]
    fn posterior_is_one_half_at_the_threshold_weight() {
        let weights = Weights {
            fields: vec![],
            prior: 0.001,
        };
        let w = weights.weight_for_probability(0.5);
        assert!((w - (999.0f64).log2()).abs() < 1e-9);
        assert!((weights.match_probability(w) - 0.5).abs() < 1e-9);
        assert!(weights.match_probability(1e6) <= 1.0);
    }

    #[test]
    fn em_separates_agreeing_from_disagreeing_pairs() {
        let schema = Schema::new(vec![
            FieldSpec::new("a", FieldKind::Text),
            FieldSpec::new("b", FieldKind::Text),
            FieldSpec::new("c", FieldKind::Text),
        ])
        .expect("schema");
        let all = |l: Level| (0..3).fold(0, |p, f| with_level(p, f, l));
        let mostly = with_level(all(Level::Exact), 2, Level::Different);
        // 100 matches (all agree, or 2 of 3), 900 non-matches (all disagree).
        let patterns = vec![
            (all(Level::Exact), 90),
            (mostly, 10),
            (all(Level::Different), 900),
        ];
        let u_random = vec![[0.97, 0.01, 0.01, 0.01]; 3];
        let fit = fit_em(
            &schema,
            &patterns,
            &u_random,
            &[true; 3],
            true,
            &EmSettings::default(),
        );
        assert!((fit.match_share - 0.1).abs() < 0.01, "{}", fit.match_share);
        assert!(fit.m[0][Level::Exact.index()] > 0.95);
        assert!(fit.m[2][Level::Different.index()] > 0.05);
    }
}
