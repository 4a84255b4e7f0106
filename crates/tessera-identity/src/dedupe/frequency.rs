//! Term-frequency adjustment: agreeing on a rare name is stronger evidence than
//! agreeing on a common one.
//!
//! The plain model gives every exact agreement on a field one weight,
//! `log2(m_exact / u_exact)`, where `u_exact` is the chance that two random records
//! agree — an average over all values. Two records that are both "smith" agree by
//! chance far more often than two that are both "okonkwo". For a value `v` held by
//! `k` of the `N` records, the chance that a random other record agrees with one of
//! them is `p_v = (k − 1) / (N − 1)` (at least `1 / (N − 1)`), so the
//! exact-agreement weight becomes `log2(m_exact / p_v)`: the plain
//! weight plus the *adjustment* `log2(u_exact / p_v)` (negative for common values,
//! positive for rare ones), bounded by [`MAX_ADJUSTMENT`] either way.
//!
//! Frequencies are counted on the data being de-duplicated (other duplicates of the
//! same person included, which lowers rare names' adjustment a little — the safe
//! side) and are not saved with a model: a reused model adjusts by the frequencies
//! of the new data.

use super::kind::{FieldKind, Level};
use super::record::Dataset;
use super::weights::Weights;
use std::collections::HashMap;

/// The largest adjustment, in bits, either way.
pub const MAX_ADJUSTMENT: f64 = 8.0;

/// Fields whose exact agreements are adjusted by frequency: names, where a few
/// values are very common and most are rare.
pub fn adjusts(kind: FieldKind) -> bool {
    matches!(
        kind,
        FieldKind::FirstName | FieldKind::MiddleName | FieldKind::LastName
    )
}

/// Per adjusted field, the adjustment of each value seen in the data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TermFrequencies {
    /// Indexed by field; `None` for fields not adjusted.
    fields: Vec<Option<FieldFrequencies>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct FieldFrequencies {
    /// Value → adjustment in bits.
    adjustments: HashMap<String, f64>,
    /// The adjustment of a value not in the table (seen once).
    unseen: f64,
}

impl TermFrequencies {
    /// Counts the values of every adjusted field of `data` and derives their
    /// adjustments from the weights' `u_exact`.
    pub fn count(data: &Dataset, weights: &Weights) -> Self {
        let fields = data
            .schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(f, spec)| {
                if !adjusts(spec.kind) {
                    return None;
                }
                let u_exact = weights.fields.get(f)?.u[Level::Exact.index()];
                let mut counts: HashMap<&str, u64> = HashMap::new();
                let mut total = 0u64;
                for i in 0..data.len() {
                    let value = data.value(i, f);
                    if !value.is_empty() {
                        *counts.entry(value).or_default() += 1;
                        total += 1;
                    }
                }
                if total < 2 || u_exact <= 0.0 {
                    return None;
                }
                // Leave one out: the chance that a random *other* record holds the
                // value. A value held by one person's two records is rarer than
                // 2 in N among other people.
                let adjustment = |count: u64| {
                    adjustment(
                        u_exact,
                        count.saturating_sub(1).max(1) as f64 / (total - 1) as f64,
                    )
                };
                Some(FieldFrequencies {
                    adjustments: counts
                        .into_iter()
                        .map(|(value, count)| (value.to_owned(), adjustment(count)))
                        .collect(),
                    unseen: adjustment(1),
                })
            })
            .collect();
        TermFrequencies { fields }
    }

    /// Whether no field is adjusted.
    pub fn is_empty(&self) -> bool {
        self.fields.iter().all(Option::is_none)
    }

    /// The adjustment, in bits, of an exact agreement on `value` in field `field`
    /// (0 for fields not adjusted).
    pub fn adjustment(&self, field: usize, value: &str) -> f64 {
        match self.fields.get(field) {
            Some(Some(frequencies)) => frequencies
                .adjustments
                .get(value)
                .copied()
                .unwrap_or(frequencies.unseen),
            _ => 0.0,
        }
    }

    /// Per adjusted field, each record's adjustment (`None` for other fields), for
    /// scoring many pairs without hashing values.
    pub(crate) fn per_record(&self, data: &Dataset) -> Vec<Option<Vec<f32>>> {
        self.fields
            .iter()
            .enumerate()
            .map(|(f, frequencies)| {
                frequencies.as_ref().map(|_| {
                    (0..data.len())
                        .map(|i| self.adjustment(f, data.value(i, f)) as f32)
                        .collect()
                })
            })
            .collect()
    }
}

/// `log2(u_exact / share)`, bounded.
fn adjustment(u_exact: f64, share: f64) -> f64 {
    (u_exact / share.max(1e-12))
        .log2()
        .clamp(-MAX_ADJUSTMENT, MAX_ADJUSTMENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedupe::record::{FieldSpec, Schema};
    use crate::dedupe::weights::FieldWeights;

    fn data(last_names: &[&str]) -> (Dataset, Weights) {
        let schema = Schema::new(vec![
            FieldSpec::new("last", FieldKind::LastName),
            FieldSpec::new("dob", FieldKind::DateOfBirth),
        ])
        .expect("schema");
        let mut data = Dataset::new(schema.clone());
        for (i, name) in last_names.iter().enumerate() {
            data.push(&i.to_string(), None, &[name, "1980-01-01"])
                .expect("push");
        }
        let fields = schema
            .fields()
            .iter()
            .map(|f| FieldWeights {
                field: f.name.clone(),
                kind: f.kind,
                m: [0.05, 0.05, 0.1, 0.8],
                u: [0.9, 0.05, 0.04, 0.01],
            })
            .collect();
        (
            data,
            Weights {
                fields,
                prior: 1e-3,
            },
        )
    }

    #[test]
    fn a_rare_name_weighs_more_than_a_common_one() {
        let mut names = vec!["smith"; 50];
        names.extend(["okonkwo", "zielinski"]);
        names.extend(vec!["jones"; 48]);
        let (data, weights) = data(&names);
        let tf = TermFrequencies::count(&data, &weights);
        // smith: 49 other records of 99, log2(0.01 / (49/99)); okonkwo: one in 99.
        let smith = (0.01f64 / (49.0 / 99.0)).log2();
        assert!((tf.adjustment(0, "smith") - smith).abs() < 1e-9);
        assert!((tf.adjustment(0, "okonkwo") - (0.01f64 * 99.0).log2()).abs() < 1e-9);
        assert!(tf.adjustment(0, "smith") < tf.adjustment(0, "okonkwo"));
        // Not a name: not adjusted.
        assert_eq!(tf.adjustment(1, "19800101"), 0.0);
        let per_record = tf.per_record(&data);
        assert!(per_record[1].is_none());
        assert_eq!(per_record[0].as_ref().map(Vec::len), Some(100));
    }

    #[test]
    fn adjustments_are_bounded() {
        let mut names = vec!["smith"; 100_000];
        names.push("rare");
        let (data, weights) = data(&names);
        let tf = TermFrequencies::count(&data, &weights);
        assert!(tf.adjustment(0, "rare") <= MAX_ADJUSTMENT);
        assert!(tf.adjustment(0, "smith") >= -MAX_ADJUSTMENT);
    }
}
