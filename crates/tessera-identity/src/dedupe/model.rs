//! The fitted model: compares two records field by field, turns the levels into a
//! match weight, and explains the weight field by field.
//!
//! Record-level rules live here, above the per-field comparators: when the schema
//! has a first and a last name, a pair whose names match better crosswise (given
//! name in the family-name field, a frequent data-entry slip) is compared crosswise,
//! capped at "very similar" since a swap is weaker evidence than agreement.

use super::compare::compare;
use super::error::DedupeError;
use super::frequency::TermFrequencies;
use super::kind::{FieldKind, Level};
use super::record::{Dataset, Record, Schema};
use super::weights::{Weights, level_at, with_level};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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
    /// Whether the household guard applied (given names or dates of birth
    /// disagree, so household-shared agreements counted once; see
    /// [`Model::with_household_guard`]).
    pub household_guard: bool,
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
        if self.household_guard {
            writeln!(
                f,
                "  (household guard: given name or date of birth disagree; \
                 household-shared fields counted once)"
            )?;
        }
        for c in &self.fields {
            writeln!(
                f,
                "  {:<16} {:<13} {:+7.2}  {:?} / {:?}",
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
    /// Whether the household guard applies (see [`Model::with_household_guard`]).
    #[serde(default = "default_guard")]
    household_guard: bool,
    #[serde(skip)]
    table: Vec<[f64; 5]>,
    /// Term frequencies of the data scored (not saved: counted on each run's data).
    #[serde(skip)]
    frequencies: Option<Arc<TermFrequencies>>,
}

fn default_guard() -> bool {
    true
}

/// Kinds a household shares: agreement on several of them is one piece of evidence.
fn shared_by_households(kind: FieldKind) -> bool {
    matches!(
        kind,
        FieldKind::LastName
            | FieldKind::Phone
            | FieldKind::StreetNumber
            | FieldKind::Street
            | FieldKind::Unit
            | FieldKind::City
            | FieldKind::Postcode
            | FieldKind::State
            | FieldKind::Country
    )
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
            household_guard: true,
            table,
            frequencies: None,
        })
    }

    /// The model with the household guard on or off (on by default).
    ///
    /// Relatives share a surname, an address and often a phone (twins even a date
    /// of birth), and under the model's independence assumption those agreements
    /// add up to a match. Unless a pair's given names *and* dates of birth agree
    /// (exactly, very similarly — a typo, a nickname, a swap — or are missing), the
    /// guard counts the agreements on household-shared fields (last name, phone,
    /// address fields) once: only the strongest of their positive weights is kept.
    /// It needs a first-name field; without one it does nothing.
    #[must_use]
    pub fn with_household_guard(mut self, on: bool) -> Self {
        self.household_guard = on;
        self
    }

    /// The model with exact agreements on names adjusted by how common the value
    /// is (see [`super::frequency`]); [`Model::score`] and [`Model::explain`] look
    /// values up in `frequencies`.
    #[must_use]
    pub fn with_term_frequencies(mut self, frequencies: TermFrequencies) -> Self {
        self.frequencies = (!frequencies.is_empty()).then(|| Arc::new(frequencies));
        self
    }

    /// The term frequencies in use, if any.
    pub fn term_frequencies(&self) -> Option<&TermFrequencies> {
        self.frequencies.as_deref()
    }

    /// Whether the household guard applies to pattern `pattern`.
    fn guarded(&self, pattern: u64) -> bool {
        if !self.household_guard {
            return false;
        }
        // Off only when both person fields agree (or are unknown).
        let agrees = |kind: FieldKind| {
            self.schema.first_of(kind).is_none_or(|f| {
                matches!(
                    level_at(pattern, f),
                    Level::Exact | Level::VerySimilar | Level::Missing
                )
            })
        };
        self.schema.first_of(FieldKind::FirstName).is_some()
            && !(agrees(FieldKind::FirstName) && agrees(FieldKind::DateOfBirth))
    }

    /// The email field whose near agreement (same local part at another domain, a
    /// typo) counts nothing in `pattern` because both names agree: addresses are
    /// made from names, so namesakes' addresses look alike, and the names already
    /// counted that evidence. An exact address still counts.
    fn email_follows_names(&self, pattern: u64) -> Option<usize> {
        let email = self.schema.first_of(FieldKind::Email)?;
        let first = self.schema.first_of(FieldKind::FirstName)?;
        let last = self.schema.first_of(FieldKind::LastName)?;
        let agrees = |f: usize| matches!(level_at(pattern, f), Level::Exact | Level::VerySimilar);
        (agrees(first)
            && agrees(last)
            && matches!(
                level_at(pattern, email),
                Level::VerySimilar | Level::Similar
            ))
        .then_some(email)
    }

    /// Whether a pattern's weight is not the plain sum of its levels' weights.
    fn adjusted_by_rules(&self, pattern: u64) -> bool {
        self.guarded(pattern) || self.email_follows_names(pattern).is_some()
    }

    /// Each field's weight in `pattern`, exact agreements adjusted by
    /// `exact_adjustment(field)`, the household guard and the email rule applied.
    fn contributions(&self, pattern: u64, exact_adjustment: &dyn Fn(usize) -> f64) -> Vec<f64> {
        let mut weights: Vec<f64> = (0..self.schema.len())
            .map(|f| {
                let level = level_at(pattern, f);
                let plain = match self.table.get(f) {
                    Some(row) => row[level.index()],
                    None => self.weights.weight(f, level),
                };
                if level == Level::Exact {
                    plain + exact_adjustment(f)
                } else {
                    plain
                }
            })
            .collect();
        if let Some(email) = self.email_follows_names(pattern) {
            weights[email] = weights[email].min(0.0);
        }
        if self.guarded(pattern) {
            let shared: Vec<usize> = (0..weights.len())
                .filter(|&f| shared_by_households(self.schema.fields()[f].kind) && weights[f] > 0.0)
                .collect();
            let strongest = shared
                .iter()
                .copied()
                .max_by(|&a, &b| weights[a].total_cmp(&weights[b]));
            for f in shared {
                if Some(f) != strongest {
                    weights[f] = 0.0;
                }
            }
        }
        weights
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
        if !self.adjusted_by_rules(pattern) && !self.table.is_empty() {
            return self
                .table
                .iter()
                .enumerate()
                .map(|(f, row)| row[level_at(pattern, f).index()])
                .sum();
        }
        self.contributions(pattern, &|_| 0.0).iter().sum()
    }

    /// The match weight of a packed pattern whose exact agreements on field `f` are
    /// adjusted by `exact_adjustment(f)` (term frequencies).
    pub(crate) fn adjusted_weight(
        &self,
        pattern: u64,
        exact_adjustment: &dyn Fn(usize) -> f64,
    ) -> f64 {
        if !self.adjusted_by_rules(pattern) && !self.table.is_empty() {
            return self
                .table
                .iter()
                .enumerate()
                .map(|(f, row)| {
                    let level = level_at(pattern, f);
                    if level == Level::Exact {
                        row[level.index()] + exact_adjustment(f)
                    } else {
                        row[level.index()]
                    }
                })
                .sum();
        }
        self.contributions(pattern, exact_adjustment).iter().sum()
    }

    /// The term-frequency adjustment of an exact agreement on field `f` of record
    /// `i` of `a` (0 without term frequencies).
    fn value_adjustment(&self, a: &Dataset, i: usize, f: usize) -> f64 {
        self.frequencies
            .as_ref()
            .map_or(0.0, |tf| tf.adjustment(f, a.value(i, f)))
    }

    /// The match weight of record `i` of `a` against record `j` of `b` (both of this
    /// model's schema; pass the same dataset twice to compare within one).
    pub fn score(&self, a: &Dataset, i: usize, b: &Dataset, j: usize) -> f64 {
        let (pattern, _) = Comparator::new(&self.schema).compare(a, i, b, j);
        self.adjusted_weight(pattern, &|f| self.value_adjustment(a, i, f))
    }

    /// The field-by-field explanation of record `i` of `a` against record `j` of `b`.
    pub fn explain(&self, a: &Dataset, i: usize, b: &Dataset, j: usize) -> PairExplanation {
        let (pattern, names_swapped) = Comparator::new(&self.schema).compare(a, i, b, j);
        let contributions = self.contributions(pattern, &|f| self.value_adjustment(a, i, f));
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
                    weight: contributions[f],
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
            household_guard: self.guarded(pattern),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedupe::record::FieldSpec;
    use crate::dedupe::weights::FieldWeights;

    fn model() -> Model {
        let schema = Schema::new(vec![
            FieldSpec::new("first", FieldKind::FirstName),
            FieldSpec::new("last", FieldKind::LastName),
            FieldSpec::new("dob", FieldKind::DateOfBirth),
            FieldSpec::new("phone", FieldKind::Phone),
            FieldSpec::new("street", FieldKind::Street),
            FieldSpec::new("postcode", FieldKind::Postcode),
        ])
        .expect("schema");
        // Exact +6.3, very similar +3.3, different -4.3 on every field.
        let fields = schema
            .fields()
            .iter()
            .map(|f| FieldWeights {
                field: f.name.clone(),
                kind: f.kind,
                m: [0.05, 0.05, 0.1, 0.8],
                u: [0.97, 0.01, 0.01, 0.01],
            })
            .collect();
        let weights = Weights {
            fields,
            prior: 1e-4,
        };
        let threshold = weights.weight_for_probability(0.5);
        Model::new(schema, weights, threshold).expect("model")
    }

    fn person(id: &str, values: [&str; 6]) -> Record {
        let names = ["first", "last", "dob", "phone", "street", "postcode"];
        names
            .iter()
            .zip(values)
            .fold(Record::new(id), |r, (name, value)| r.with(*name, value))
    }

    #[test]
    fn nickname_and_reformatted_date_still_match() {
        let a = person(
            "a",
            ["William", "Smith", "1980-03-12", "", "12 Giblin St", "2000"],
        );
        let b = person(
            "b",
            [
                "Bill",
                "smith",
                "12/03/1980",
                "0298765432",
                "12 giblin street",
                "",
            ],
        );
        let e = model().explain_records(&a, &b).expect("explain");
        assert!(e.is_match, "{e}");
        assert_eq!(e.fields[0].level, Level::VerySimilar);
        assert_eq!(e.fields[2].level, Level::Exact);
        assert_eq!(e.fields[3].level, Level::Missing);
        assert_eq!(e.fields[3].weight, 0.0);
    }

    #[test]
    fn swapped_names_compare_crosswise_capped_at_very_similar() {
        let a = person("a", ["Smith", "John", "1980-03-12", "", "", ""]);
        let b = person("b", ["John", "Smith", "1980-03-12", "", "", ""]);
        let e = model().explain_records(&a, &b).expect("explain");
        assert!(e.names_swapped, "{e}");
        assert_eq!(e.fields[0].level, Level::VerySimilar);
        assert_eq!(e.fields[1].level, Level::VerySimilar);
    }

    #[test]
    fn household_members_sharing_surname_address_and_phone_never_merge() {
        let a = person(
            "a",
            [
                "John",
                "Smith",
                "1980-01-01",
                "0298765432",
                "12 Giblin St",
                "2000",
            ],
        );
        let b = person(
            "b",
            [
                "Mary",
                "Smith",
                "1983-05-05",
                "0298765432",
                "12 Giblin St",
                "2000",
            ],
        );
        let guarded = model().explain_records(&a, &b).expect("explain");
        assert!(guarded.household_guard, "{guarded}");
        assert!(!guarded.is_match, "{guarded}");
        let plain = model()
            .with_household_guard(false)
            .explain_records(&a, &b)
            .expect("explain");
        assert!(
            plain.is_match,
            "without the guard the shared fields add up: {plain}"
        );
    }

    #[test]
    fn weights_that_do_not_fit_the_schema_are_refused() {
        let m = model();
        let mut weights = m.weights().clone();
        weights.fields.pop();
        let error = Model::new(m.schema().clone(), weights, 0.0).expect_err("must fail");
        assert!(error.to_string().contains("6"), "{error}");
    }

    #[test]
    fn namesakes_email_local_parts_add_nothing_once_the_names_agreed() {
        let schema = Schema::new(vec![
            FieldSpec::new("first", FieldKind::FirstName),
            FieldSpec::new("last", FieldKind::LastName),
            FieldSpec::new("email", FieldKind::Email),
        ])
        .expect("schema");
        let fields = schema
            .fields()
            .iter()
            .map(|f| FieldWeights {
                field: f.name.clone(),
                kind: f.kind,
                m: [0.05, 0.05, 0.1, 0.8],
                u: [0.97, 0.01, 0.01, 0.01],
            })
            .collect();
        let model = Model::new(
            schema,
            Weights {
                fields,
                prior: 1e-4,
            },
            10.0,
        )
        .expect("model");
        let record = |id: &str, first: &str, email: &str| {
            Record::new(id)
                .with("first", first)
                .with("last", "Smith")
                .with("email", email)
        };
        // Same names, same local part at another domain: the email adds nothing.
        let namesakes = model
            .explain_records(
                &record("a", "John", "john.smith@gmail.com"),
                &record("b", "John", "john.smith@yahoo.com"),
            )
            .expect("explain");
        assert_eq!(namesakes.fields[2].level, Level::VerySimilar);
        assert_eq!(namesakes.fields[2].weight, 0.0, "{namesakes}");
        // The same address still counts, and so does a near one when the given
        // names differ (a nickname would be very similar: use another name).
        let same = model
            .explain_records(
                &record("a", "John", "john.smith@gmail.com"),
                &record("b", "John", "john.smith@gmail.com"),
            )
            .expect("explain");
        assert!(same.fields[2].weight > 0.0, "{same}");
        let other_name = model
            .explain_records(
                &record("a", "John", "jsmith@gmail.com"),
                &record("b", "Peter", "jsmith@yahoo.com"),
            )
            .expect("explain");
        assert!(other_name.fields[2].weight > 0.0, "{other_name}");
        let sum: f64 = namesakes.fields.iter().map(|c| c.weight).sum();
        assert!((sum - namesakes.weight).abs() < 1e-9);
    }
}
