//! Estimating `m` and the prior from the candidate pairs, robustly: the fallback
//! when the EM over all pairs (see [`super::weights`]) is refused by its guards, and
//! the source of `m` for fields left out of it (an email, which follows from the
//! names).
//!
//! One EM over all candidate pairs assumes the fields disagree independently among
//! non-matches. Real data breaks that: relatives share a surname, an address and a
//! landline, so "same household" is a latent class as strong as "same person", and
//! a single EM may learn the wrong one. So, as Splink does, `m` is learnt in
//! *sessions*, each on the candidates that agree exactly on anchor fields that a
//! household does not share (both names; the date of birth; else email or national
//! id), with those anchors left out of that session's model. Every other field's
//! `m` is the average over the sessions where it was free, weighted by the matches
//! each session found.
//!
//! Guards: a session with a single free field is skipped (its share of matches and
//! that field's `m` cannot be told apart), and so is one whose fit found almost no
//! matches or matches that agree no more than random pairs.
//!
//! The prior is then fitted alone, with `m` held: on random pairs (with `u` held)
//! when they hold enough matches, else on the candidates with their own `u`
//! re-estimated — holding the random-pair `u` there counts blocked lookalikes as
//! matches.

use super::blocking::{BlockingRule, KeyPart, KeyTransform};
use super::kind::FieldKind;
use super::record::Schema;
use super::weights::{EmSettings, fit_em, level_at};
use serde::{Deserialize, Serialize};

/// Sessions with fewer candidate pairs than this are skipped.
const MIN_SESSION_PAIRS: u64 = 30;

/// What one training session saw and found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionReport {
    /// The anchor fields, joined by `+`.
    pub anchors: String,
    /// Candidate pairs agreeing exactly on the anchors.
    pub pairs: u64,
    /// EM iterations.
    pub iterations: u64,
    /// The share of matches the session found among its pairs.
    pub match_share: f64,
}

/// Sessions with fewer free fields than this are skipped: degenerate.
const MIN_FREE_FIELDS: usize = 2;

/// Whether a session's fit is usable: some matches and some non-matches, and on
/// every free field matches agree (exactly or very similarly) more often than
/// non-matches.
fn plausible(fit: &super::weights::EmFit, free: &[bool], u: &[[f64; 4]], pairs: u64) -> bool {
    let matches = fit.match_share * pairs as f64;
    let non_matches = (1.0 - fit.match_share) * pairs as f64;
    let agree = |p: &[f64; 4]| p[2] + p[3];
    matches >= 5.0
        && non_matches >= 1.0
        && free
            .iter()
            .enumerate()
            .filter(|&(_, &is_free)| is_free)
            .all(|(f, _)| agree(&fit.m[f]) > agree(&u[f]))
}

/// The anchor sets for `schema`: fields a household does not share.
pub(crate) fn anchor_sets(schema: &Schema) -> Vec<Vec<usize>> {
    let first = schema.first_of(FieldKind::FirstName);
    let last = schema.first_of(FieldKind::LastName);
    let full = schema.first_of(FieldKind::FullName);
    let dob = schema.first_of(FieldKind::DateOfBirth);
    let mut sets = Vec::new();
    match (first, last, full) {
        (Some(f), Some(l), _) => sets.push(vec![f, l]),
        (_, _, Some(n)) => sets.push(vec![n]),
        _ => {}
    }
    if let Some(d) = dob {
        sets.push(vec![d]);
    }
    if sets.len() < 2 {
        for kind in [FieldKind::Email, FieldKind::NationalId] {
            if let Some(f) = schema.first_of(kind) {
                sets.push(vec![f]);
            }
        }
    }
    sets
}

/// Whether field `f` follows from the anchors, so that pairs sharing the anchors
/// agree on it more than random pairs even when they are different people: an
/// email address or a sex given the names, the parts of a date given the date.
fn derived_from(schema: &Schema, anchors: &[usize], f: usize) -> bool {
    let kind = schema.fields()[f].kind;
    anchors.iter().any(|&a| match schema.fields()[a].kind {
        FieldKind::FirstName | FieldKind::LastName | FieldKind::FullName => matches!(
            kind,
            FieldKind::Email | FieldKind::Sex | FieldKind::FullName | FieldKind::FirstName
        ),
        FieldKind::DateOfBirth => matches!(
            kind,
            FieldKind::BirthYear | FieldKind::BirthMonth | FieldKind::BirthDay
        ),
        _ => false,
    })
}

/// The blocking rule that pairs records agreeing exactly on `anchors`.
pub(crate) fn anchor_rule(schema: &Schema, anchors: &[usize]) -> BlockingRule {
    let parts = anchors
        .iter()
        .map(|&f| KeyPart::new(schema.fields()[f].name.clone(), KeyTransform::Exact))
        .collect();
    BlockingRule::same_key("training", parts)
}

/// A training session: its anchor fields and the comparison patterns (with counts)
/// of the pairs agreeing exactly on them.
pub(crate) type Session = (Vec<usize>, Vec<(u64, u64)>);

/// `m` per field, learnt in sessions: each is a set of anchor fields and the
/// comparison patterns of pairs agreeing exactly on them. Fields no session could
/// learn get `fallback` (a plain EM over the candidates).
pub(crate) fn train_m(
    schema: &Schema,
    sessions: &[Session],
    fallback: &dyn Fn() -> (Vec<[f64; 4]>, SessionReport),
    u_random: &[[f64; 4]],
    settings: &EmSettings,
) -> (Vec<[f64; 4]>, Vec<SessionReport>) {
    let n = schema.len();
    let mut sum = vec![[0.0f64; 4]; n];
    let mut weight = vec![0.0f64; n];
    let mut reports = Vec::new();
    for (anchors, patterns) in sessions {
        let pairs: u64 = patterns.iter().map(|(_, c)| c).sum();
        if pairs < MIN_SESSION_PAIRS {
            continue;
        }
        let free: Vec<bool> = (0..n)
            .map(|f| !anchors.contains(&f) && !derived_from(schema, anchors, f))
            .collect();
        // Guard: with one free field, the share of matches and that field's `m`
        // cannot be told apart (any mix of `m` and `u` fits its level counts), so
        // such a session would return whatever the starting point suggests.
        if free.iter().filter(|&&f| f).count() < MIN_FREE_FIELDS {
            continue;
        }
        // Anchored pairs are blocked apart from any other field, so their
        // non-matches disagree like random pairs: `u` is held.
        let fit = fit_em(schema, patterns, u_random, &free, false, settings);
        // Guard: a session that found (almost) no matches or nothing but matches,
        // or matches that agree no more than non-matches, learnt nothing.
        if !plausible(&fit, &free, u_random, pairs) {
            continue;
        }
        let matches = fit.match_share * pairs as f64;
        for f in (0..n).filter(|&f| free[f]) {
            for (total, m) in sum[f].iter_mut().zip(fit.m[f]) {
                *total += m * matches;
            }
            weight[f] += matches;
        }
        reports.push(SessionReport {
            anchors: anchors
                .iter()
                .map(|&f| schema.fields()[f].name.as_str())
                .collect::<Vec<_>>()
                .join("+"),
            pairs,
            iterations: fit.iterations as u64,
            match_share: fit.match_share,
        });
    }
    if weight.iter().any(|&w| w <= 0.0) {
        let (m, report) = fallback();
        for f in 0..n {
            if weight[f] <= 0.0 {
                sum[f] = m[f];
                weight[f] = 1.0;
            }
        }
        reports.push(report);
    }
    let m = sum
        .iter()
        .zip(&weight)
        .map(|(row, &w)| row.map(|total| total / w))
        .collect();
    (m, reports)
}

/// A plain EM over every candidate pattern (when no anchored session applies).
pub(crate) fn plain_session(
    schema: &Schema,
    patterns: &[(u64, u64)],
    u_random: &[[f64; 4]],
    settings: &EmSettings,
) -> (Vec<[f64; 4]>, SessionReport) {
    let fit = fit_em(
        schema,
        patterns,
        u_random,
        &vec![true; schema.len()],
        true,
        settings,
    );
    let report = SessionReport {
        anchors: String::new(),
        pairs: patterns.iter().map(|(_, c)| c).sum(),
        iterations: fit.iterations as u64,
        match_share: fit.match_share,
    };
    (fit.m, report)
}

/// The share of matches among candidate pairs, given each pattern's match weight:
/// EM on the prior alone.
pub(crate) fn fit_match_share(
    patterns: &[(u64, u64)],
    weight_of: &dyn Fn(u64) -> f64,
    settings: &EmSettings,
) -> (f64, u64) {
    let factors: Vec<(f64, f64)> = patterns
        .iter()
        .map(|&(p, c)| (weight_of(p).exp2(), c as f64))
        .collect();
    let total: f64 = factors.iter().map(|(_, c)| c).sum();
    if total <= 0.0 {
        return (0.0, 0);
    }
    let mut share = 0.1;
    let mut iterations = 0;
    while iterations < settings.max_iterations {
        iterations += 1;
        let odds = share / (1.0 - share);
        let matches: f64 = factors
            .iter()
            .map(|&(bf, c)| {
                let o = odds * bf;
                let g = if o.is_infinite() { 1.0 } else { o / (1.0 + o) };
                g * c
            })
            .sum();
        let next = (matches / total).clamp(1e-9, 1.0 - 1e-9);
        let change = (next - share).abs();
        share = next;
        if change < settings.tolerance {
            break;
        }
    }
    (share, iterations as u64)
}

/// The share of matches among candidate pairs with `m` held and the non-matches'
/// `u` re-estimated among these pairs: blocked non-matches agree on the blocking
/// fields far more often than random pairs, so holding the random-pair `u` here
/// would count lookalikes as matches.
pub(crate) fn fit_match_share_free_u(
    patterns: &[(u64, u64)],
    m: &[[f64; 4]],
    u_random: &[[f64; 4]],
    settings: &EmSettings,
) -> (f64, u64) {
    let n = m.len();
    let levels: Vec<Vec<usize>> = patterns
        .iter()
        .map(|&(p, _)| (0..n).map(|f| level_at(p, f).index()).collect())
        .collect();
    let mut u = u_random.to_vec();
    let mut share = 0.01;
    let mut iterations = 0;
    while iterations < settings.max_iterations {
        iterations += 1;
        let mut u_counts = vec![[0.0f64; 4]; n];
        let (mut matches, mut total) = (0.0, 0.0);
        for (&(_, count), pattern) in patterns.iter().zip(&levels) {
            let (mut pm, mut pu) = (share, 1.0 - share);
            for (f, &l) in pattern.iter().enumerate() {
                if l < 4 {
                    pm *= m[f][l].max(1e-12);
                    pu *= u[f][l].max(1e-12);
                }
            }
            let g = if pm + pu > 0.0 { pm / (pm + pu) } else { 0.0 };
            let c = count as f64;
            matches += g * c;
            total += c;
            for (f, &l) in pattern.iter().enumerate() {
                if l < 4 {
                    u_counts[f][l] += (1.0 - g) * c;
                }
            }
        }
        if total <= 0.0 {
            return (0.0, iterations as u64);
        }
        let mut change: f64 = 0.0;
        for f in 0..n {
            let sum: f64 = u_counts[f].iter().sum::<f64>() + 1.0;
            for l in 0..4 {
                let new = ((u_counts[f][l] + u_random[f][l]) / sum).max(1e-12);
                change = change.max((new - u[f][l]).abs());
                u[f][l] = new;
            }
        }
        let next = (matches / total).clamp(1e-9, 1.0 - 1e-9);
        change = change.max((next - share).abs());
        share = next;
        if change < settings.tolerance {
            break;
        }
    }
    (share, iterations as u64)
}
