//! Estimating `m` and the prior from the candidate pairs, robustly.
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
//! The prior — the share of matches among candidates — is then fitted alone, with
//! `m` and `u` held, on the weights the model will actually score with.

use super::blocking::{BlockingRule, KeyPart, KeyTransform};
use super::kind::FieldKind;
use super::record::Schema;
use super::weights::{EmSettings, fit_em};
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
        // Anchored pairs are blocked apart from any other field, so their
        // non-matches disagree like random pairs: `u` is held.
        let fit = fit_em(schema, patterns, u_random, &free, false, settings);
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
