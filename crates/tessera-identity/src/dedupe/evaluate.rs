//! Accuracy measures against a ground truth: pairwise precision/recall/F1 over *all*
//! true pairs, B-cubed precision/recall/F1, the share of exactly recovered clusters,
//! and blocking pair completeness. Clusterings are given as one label per record.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// Precision, recall and F1 with the counts behind them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PairScores {
    /// Pairs that truly match.
    pub true_pairs: u64,
    /// Pairs predicted to match.
    pub predicted_pairs: u64,
    /// Pairs both true and predicted.
    pub true_positives: u64,
    /// true_positives / predicted_pairs (1 when nothing is predicted).
    pub precision: f64,
    /// true_positives / true_pairs (1 when nothing is true).
    pub recall: f64,
    /// The harmonic mean of precision and recall.
    pub f1: f64,
}

impl PairScores {
    fn new(true_pairs: u64, predicted_pairs: u64, true_positives: u64) -> Self {
        let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        let precision = ratio(true_positives, predicted_pairs);
        let recall = ratio(true_positives, true_pairs);
        PairScores {
            true_pairs,
            predicted_pairs,
            true_positives,
            precision,
            recall,
            f1: harmonic(precision, recall),
        }
    }
}

fn harmonic(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

fn choose2(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// Pairwise scores of a predicted clustering against a true one: every pair of
/// records in one true cluster is a true pair, every pair in one predicted cluster
/// a predicted pair. Counted from cluster sizes, so large clusters cost nothing.
///
/// # Panics
/// When the two label lists differ in length.
pub fn pairwise(truth: &[u32], predicted: &[u32]) -> PairScores {
    assert_eq!(
        truth.len(),
        predicted.len(),
        "one label per record on both sides"
    );
    let mut true_sizes: HashMap<u32, u64> = HashMap::new();
    let mut predicted_sizes: HashMap<u32, u64> = HashMap::new();
    let mut both: HashMap<(u32, u32), u64> = HashMap::new();
    for (&t, &p) in truth.iter().zip(predicted) {
        *true_sizes.entry(t).or_default() += 1;
        *predicted_sizes.entry(p).or_default() += 1;
        *both.entry((t, p)).or_default() += 1;
    }
    PairScores::new(
        true_sizes.values().map(|&n| choose2(n)).sum(),
        predicted_sizes.values().map(|&n| choose2(n)).sum(),
        both.values().map(|&n| choose2(n)).sum(),
    )
}

/// Pairwise scores of predicted *links* (not closed into clusters) against true ones.
pub fn pairwise_links(true_pairs: &[(u32, u32)], predicted: &[(u32, u32)]) -> PairScores {
    let norm = |&(a, b): &(u32, u32)| (a.min(b), a.max(b));
    let truth: HashSet<(u32, u32)> = true_pairs.iter().map(norm).collect();
    let predicted: HashSet<(u32, u32)> = predicted.iter().map(norm).collect();
    let hits = predicted.iter().filter(|p| truth.contains(p)).count() as u64;
    PairScores::new(truth.len() as u64, predicted.len() as u64, hits)
}

/// B-cubed precision, recall and F1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BCubed {
    /// Mean over records of |predicted ∩ true cluster| / |predicted cluster|.
    pub precision: f64,
    /// Mean over records of |predicted ∩ true cluster| / |true cluster|.
    pub recall: f64,
    /// The harmonic mean of the two.
    pub f1: f64,
}

/// B-cubed scores of a predicted clustering against a true one.
///
/// # Panics
/// When the two label lists differ in length.
pub fn bcubed(truth: &[u32], predicted: &[u32]) -> BCubed {
    assert_eq!(
        truth.len(),
        predicted.len(),
        "one label per record on both sides"
    );
    if truth.is_empty() {
        return BCubed {
            precision: 1.0,
            recall: 1.0,
            f1: 1.0,
        };
    }
    let mut true_sizes: HashMap<u32, f64> = HashMap::new();
    let mut predicted_sizes: HashMap<u32, f64> = HashMap::new();
    let mut both: HashMap<(u32, u32), f64> = HashMap::new();
    for (&t, &p) in truth.iter().zip(predicted) {
        *true_sizes.entry(t).or_default() += 1.0;
        *predicted_sizes.entry(p).or_default() += 1.0;
        *both.entry((t, p)).or_default() += 1.0;
    }
    let (mut precision, mut recall) = (0.0, 0.0);
    for (&t, &p) in truth.iter().zip(predicted) {
        let overlap = both[&(t, p)];
        precision += overlap / predicted_sizes[&p];
        recall += overlap / true_sizes[&t];
    }
    let n = truth.len() as f64;
    let (precision, recall) = (precision / n, recall / n);
    BCubed {
        precision,
        recall,
        f1: harmonic(precision, recall),
    }
}

/// The share of true clusters recovered exactly (same members, nothing more).
pub fn exact_cluster_ratio(truth: &[u32], predicted: &[u32]) -> f64 {
    let mut members: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut predicted_sizes: HashMap<u32, usize> = HashMap::new();
    for (i, (&t, &p)) in truth.iter().zip(predicted).enumerate() {
        members.entry(t).or_default().push(i);
        *predicted_sizes.entry(p).or_default() += 1;
    }
    if members.is_empty() {
        return 1.0;
    }
    let exact = members
        .values()
        .filter(|m| {
            let label = predicted[m[0]];
            m.iter().all(|&i| predicted[i] == label) && predicted_sizes[&label] == m.len()
        })
        .count();
    exact as f64 / members.len() as f64
}

/// The share of true pairs that blocking kept as candidates (`candidates` sorted,
/// each pair `(min, max)`).
pub fn pair_completeness(candidates: &[(u32, u32)], true_pairs: &[(u32, u32)]) -> f64 {
    if true_pairs.is_empty() {
        return 1.0;
    }
    let found = true_pairs
        .iter()
        .filter(|&&(a, b)| candidates.binary_search(&(a.min(b), a.max(b))).is_ok())
        .count();
    found as f64 / true_pairs.len() as f64
}

/// Every pair of records sharing a label, `(min, max)`; for ground truths of small
/// clusters (the pairs of a cluster of n records are n(n-1)/2).
pub fn pairs_of_clusters(labels: &[u32]) -> Vec<(u32, u32)> {
    let mut members: HashMap<u32, Vec<u32>> = HashMap::new();
    for (i, &label) in labels.iter().enumerate() {
        members.entry(label).or_default().push(i as u32);
    }
    let mut pairs = Vec::new();
    for group in members.values() {
        for (x, &a) in group.iter().enumerate() {
            for &b in &group[x + 1..] {
                pairs.push((a.min(b), a.max(b)));
            }
        }
    }
    pairs.sort_unstable();
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_clustering_scores_one() {
        let labels = [0, 0, 1, 2, 2, 2];
        let s = pairwise(&labels, &labels);
        assert_eq!((s.true_pairs, s.true_positives), (4, 4));
        assert_eq!(s.f1, 1.0);
        assert_eq!(bcubed(&labels, &labels).f1, 1.0);
        assert_eq!(exact_cluster_ratio(&labels, &labels), 1.0);
    }

    #[test]
    fn merged_clusters_lose_precision_not_recall() {
        let truth = [0, 0, 1, 1];
        let predicted = [0, 0, 0, 0];
        let s = pairwise(&truth, &predicted);
        assert_eq!((s.predicted_pairs, s.true_positives), (6, 2));
        assert!((s.precision - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.recall, 1.0);
        let b = bcubed(&truth, &predicted);
        assert!((b.precision - 0.5).abs() < 1e-12);
        assert_eq!(b.recall, 1.0);
        assert_eq!(exact_cluster_ratio(&truth, &predicted), 0.0);
    }

    #[test]
    fn completeness_counts_true_pairs_among_candidates() {
        let candidates = vec![(0, 1), (2, 3)];
        assert_eq!(pair_completeness(&candidates, &[(1, 0), (3, 4)]), 0.5);
        assert_eq!(
            pairs_of_clusters(&[5, 5, 7, 5]),
            vec![(0, 1), (0, 3), (1, 3)]
        );
        let links = pairwise_links(&[(0, 1), (1, 3)], &[(1, 0), (2, 3)]);
        assert_eq!((links.true_positives, links.predicted_pairs), (1, 2));
    }

    proptest::proptest! {
        /// Blocking recall equals a plain count: the share of true pairs (in any
        /// order) found in the candidate list.
        #[test]
        fn pair_completeness_matches_a_plain_count(
            candidates in proptest::collection::btree_set((0u32..30, 0u32..30), 0..80),
            labels in proptest::collection::vec(0u32..8, 2..30),
        ) {
            let candidates: Vec<(u32, u32)> = candidates
                .into_iter()
                .filter(|(a, b)| a != b)
                .map(|(a, b)| (a.min(b), a.max(b)))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut truth = Vec::new();
            for a in 0..labels.len() {
                for b in a + 1..labels.len() {
                    if labels[a] == labels[b] {
                        // Given in either order.
                        truth.push(if (a + b) % 2 == 0 { (a as u32, b as u32) } else { (b as u32, a as u32) });
                    }
                }
            }
            let found = truth
                .iter()
                .filter(|&&(a, b)| candidates.iter().any(|&c| c == (a.min(b), a.max(b))))
                .count();
            let expected = if truth.is_empty() { 1.0 } else { found as f64 / truth.len() as f64 };
            proptest::prop_assert!((pair_completeness(&candidates, &truth) - expected).abs() < 1e-12);
            let mut from_labels = pairs_of_clusters(&labels);
            from_labels.sort_unstable();
            let mut plain: Vec<(u32, u32)> = truth.iter().map(|&(a, b)| (a.min(b), a.max(b))).collect();
            plain.sort_unstable();
            proptest::prop_assert_eq!(from_labels, plain);
        }
    }
}
