//! The fitted model: compares two records field by field, turns the levels into a
//! match weight, and explains the weight field by field.
//!
//! Record-level rules live here, above the per-field comparators: when the schema
//! has a first and a last name, a pair whose names match better crosswise (given
//! name in the family-name field, a frequent data-entry slip) is compared crosswise,
//! capped at "very similar" since a swap is weaker evidence than agreement.

use super::compare::compare;
use super::error::DedupeError;
use super::kind::{FieldKind, Level};
use super::record::{Dataset, Record, Schema};
use super::weights::{Weights, level_at, with_level};
use serde::{Deserialize, Serialize};

/// Compares records of one schema into packed level patterns (3 bits per field).
#[derive(Debug, Clone)]
pub(crate) struct Comparator {
    kinds: Vec<FieldKind>,
    /// Positions of the first-name and last-name fields, when both exist.
    names: Option<(usize, usize)>,
}

impl Comparator {
    pub(crate) fn new(schema: &Schema) -> Self {
        let names = schema
            .first_of(FieldKind::FirstName)
            .zip(schema.first_of(FieldKind::LastName));
        Comparator {
            kinds: schema.fields().iter().map(|f| f.kind).collect(),
            names,
        }
    }

    /// The pattern of record `i` of `a` against record `j` of `b`, and whether the
    /// names were compared crosswise.
    pub(crate) fn compare(&self, a: &Dataset, i: usize, b: &Dataset, j: usize) -> (u64, bool) {
        let mut pattern = 0u64;
        for (f, &kind) in self.kinds.iter().enumerate() {
            let level = compare(kind, a.value(i, f), b.value(j, f));
            pattern = with_level(pattern, f, level);
        }
        let Some((first, last)) = self.names else {
            return (pattern, false);
        };
        let direct = (level_at(pattern, first), level_at(pattern, last));
        // Crosswise levels are capped at very similar, so they cannot beat a pair
        // whose names already agree that well.
        let strong = |l: Level| matches!(l, Level::Exact | Level::VerySimilar);
        if strong(direct.0) && strong(direct.1) {
            return (pattern, false);
        }
        let cross_first = compare(FieldKind::FirstName, a.value(i, first), b.value(j, last));
        let cross_last = compare(FieldKind::LastName, a.value(i, last), b.value(j, first));
        if (strong(cross_first) || strong(cross_last))
            && name_score(cross_first) + name_score(cross_last)
                > name_score(direct.0) + name_score(direct.1)
        {
            let cap = |l: Level| {
                if l == Level::Exact {
                    Level::VerySimilar
                } else {
                    l
                }
            };
            pattern = with_level(pattern, first, cap(cross_first));
            pattern = with_level(pattern, last, cap(cross_last));
            return (pattern, true);
        }
        (pattern, false)
    }
}

fn name_score(level: Level) -> u8 {
    match level {
        Level::Exact => 3,
        Level::VerySimilar => 2,
        Level::Similar => 1,
        Level::Different | Level::Missing => 0,
    }
}

/// One field's part in a pair's match weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldContribution {
    /// The field's name.
    pub field: String,
    /// The field's kind.
    pub kind: FieldKind,
    /// The first record's normalized value.
    pub left: String,
    /// The second record's normalized value.
    pub right: String,
    /// How alike the values are.
    pub level: Level,
    /// The weight this field adds (`log2(m/u)`; 0 when missing).
    pub weight: f64,
}

/// Why a pair scores what it does: every field's level and weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairExplanation {
    /// The first record's id.
    pub left_id: String,
    /// The second record's id.
    pub right_id: String,
    /// The match weight (the sum of the contributions).
    pub weight: f64,
    /// The posterior match probability.
    pub probability: f64,
    /// Whether the weight reaches the model's threshold.
    pub is_match: bool,
    /// Whether first and last names were compared crosswise (swapped names).
    pub names_swapped: bool,
    /// Per field, in schema order.
    pub fields: Vec<FieldContribution>,
}

impl std::fmt::Display for PairExplanation {
    /// A few lines for humans: the verdict, then one line per field.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} ~ {}: weight {:.2}, probability {:.4}{}{}",
            self.left_id,
            self.right_id,
            self.weight,
            self.probability,
            if self.is_match { ", match" } else { "" },
            if self.names_swapped {
                " (names swapped)"
            } else {
                ""
            }
        )?;
        for c in &self.fields {
            writeln!(
                f,
                "  {:<16} {:<12} {:+7.2}  {:?} / {:?}",
                c.field, c.level, c.weight, c.left, c.right
            )?;
        }
        Ok(())
    }
}

/// A fitted Fellegi–Sunter model: schema, weights and threshold. Serializable, so
/// that weights estimated once can be stored and reused on new records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    schema: Schema,
    weights: Weights,
    threshold: f64,
    #[serde(skip)]
    table: Vec<[f64; 5]>,
}

impl Model {
    /// A model of `weights` over `schema`, matching at `threshold` and above.
    ///
    /// # Errors
    /// [`DedupeError::Config`] when the weights do not fit the schema or the
    /// threshold is not finite.
    pub fn new(schema: Schema, weights: Weights, threshold: f64) -> Result<Self, DedupeError> {
        weights.check(&schema).map_err(DedupeError::Config)?;
        if !threshold.is_finite() {
            return Err(DedupeError::Config(format!(
                "threshold {threshold} is not a number"
            )));
        }
        let table = weights.table();
        Ok(Model {
            schema,
            weights,
            threshold,
            table,
        })
    }

    /// The compared fields.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The per-field weights and the prior.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The match weight at and above which a pair is a match.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The posterior match probability of a match weight.
    pub fn match_probability(&self, weight: f64) -> f64 {
        self.weights.match_probability(weight)
    }

    /// The match weight of a packed pattern.
    pub(crate) fn pattern_weight(&self, pattern: u64) -> f64 {
        let table = if self.table.is_empty() {
            // A deserialized model: the table is rebuilt on the fly.
            return (0..self.schema.len())
                .map(|f| self.weights.weight(f, level_at(pattern, f)))
                .sum();
        } else {
            &self.table
        };
        table
            .iter()
            .enumerate()
            .map(|(f, row)| row[level_at(pattern, f).index()])
            .sum()
    }

    /// The match weight of record `i` of `a` against record `j` of `b` (both of this
    /// model's schema; pass the same dataset twice to compare within one).
    pub fn score(&self, a: &Dataset, i: usize, b: &Dataset, j: usize) -> f64 {
        let (pattern, _) = Comparator::new(&self.schema).compare(a, i, b, j);
        self.pattern_weight(pattern)
    }

    /// The field-by-field explanation of record `i` of `a` against record `j` of `b`.
    pub fn explain(&self, a: &Dataset, i: usize, b: &Dataset, j: usize) -> PairExplanation {
        let (pattern, names_swapped) = Comparator::new(&self.schema).compare(a, i, b, j);
        let fields: Vec<FieldContribution> = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(f, spec)| {
                let level = level_at(pattern, f);
                FieldContribution {
                    field: spec.name.clone(),
                    kind: spec.kind,
                    left: a.value(i, f).to_owned(),
                    right: b.value(j, f).to_owned(),
                    level,
                    weight: self.weights.weight(f, level),
                }
            })
            .collect();
        let weight = fields.iter().map(|c| c.weight).sum();
        PairExplanation {
            left_id: a.id(i).to_owned(),
            right_id: b.id(j).to_owned(),
            weight,
            probability: self.match_probability(weight),
            is_match: weight >= self.threshold,
            names_swapped,
            fields,
        }
    }

    /// The explanation of two records as the caller has them (normalized here).
    ///
    /// # Errors
    /// As [`Dataset::push`].
    pub fn explain_records(&self, a: &Record, b: &Record) -> Result<PairExplanation, DedupeError> {
        let data = Dataset::from_records(self.schema.clone(), &[a.clone(), b.clone()])?;
        Ok(self.explain(&data, 0, &data, 1))
    }
}
