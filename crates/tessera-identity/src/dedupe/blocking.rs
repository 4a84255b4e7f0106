//! Blocking: which pairs of records are compared at all.
//!
//! Comparing every pair is quadratic; blocking compares only records that share a
//! key (same phonetic surname and postcode, same given name and date of birth, same
//! national id, ...). No single key survives every typo, so several rules are
//! *unioned*: a true pair is lost only when every rule's key is corrupted. Rules may
//! also be sorted-neighbourhood windows, which tolerate a typo late in the key.
//!
//! A block larger than `max_block_size` (a common surname in a big city) would bring
//! the quadratic cost back; it is instead sorted by the records' names and compared
//! within a sliding window, and the capping is logged and counted.

use super::error::DedupeError;
use super::kind::FieldKind;
use super::nicknames;
use super::phonetic::soundex;
use super::record::{Dataset, Schema};
use serde::{Deserialize, Serialize};
use std::hash::{DefaultHasher, Hash, Hasher};

/// How a field's normalized value becomes part of a blocking key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyTransform {
    /// The value itself.
    Exact,
    /// The Soundex code of each word, sorted (so word order does not matter).
    Soundex,
    /// The first `n` characters.
    Prefix(usize),
    /// The last `n` characters.
    Suffix(usize),
    /// A given name's formal form, so that nicknames share a key (`bill` and
    /// `william` → `william`).
    Nickname,
    /// A `YYYYMMDD` date with its month and day in ascending order, so that a date
    /// with day and month swapped shares the key.
    DateAnyOrder,
}

impl KeyTransform {
    fn apply(self, value: &str) -> String {
        match self {
            KeyTransform::Exact => value.to_owned(),
            KeyTransform::Soundex => {
                let mut codes: Vec<String> = value.split(' ').map(soundex).collect();
                codes.sort_unstable();
                codes.join(" ")
            }
            KeyTransform::Prefix(n) => value.chars().take(n).collect(),
            KeyTransform::Suffix(n) => {
                let count = value.chars().count();
                value.chars().skip(count.saturating_sub(n)).collect()
            }
            KeyTransform::Nickname => nicknames::canonical(value).to_owned(),
            KeyTransform::DateAnyOrder => {
                match (value.get(..4), value.get(4..6), value.get(6..8)) {
                    (Some(year), Some(month), Some(day)) if value.len() == 8 => {
                        let (low, high) = if month <= day {
                            (month, day)
                        } else {
                            (day, month)
                        };
                        format!("{year}{low}{high}")
                    }
                    _ => value.to_owned(),
                }
            }
        }
    }
}

/// One part of a blocking key: a field and how its value is transformed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPart {
    /// The field's name in the schema.
    pub field: String,
    /// How its value enters the key.
    pub transform: KeyTransform,
}

impl KeyPart {
    /// A part made of `field` transformed by `transform`.
    pub fn new(field: impl Into<String>, transform: KeyTransform) -> Self {
        KeyPart {
            field: field.into(),
            transform,
        }
    }
}

/// How records are paired under a rule's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockingMethod {
    /// Records with equal keys are paired. With `unordered`, the parts are sorted
    /// before they are joined, so swapped fields (first/last name) give one key.
    SameKey {
        /// Whether the order of the parts is ignored.
        unordered: bool,
    },
    /// Records are sorted by key and each is paired with the next `window - 1`.
    SortedNeighbourhood {
        /// The window size (≥ 2).
        window: usize,
    },
}

/// A blocking rule: a named key and a pairing method. A record with an empty value
/// in any part of the key is not blocked by the rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockingRule {
    /// A name for logs and statistics.
    pub name: String,
    /// The key's parts.
    pub parts: Vec<KeyPart>,
    /// How records are paired.
    pub method: BlockingMethod,
}

impl BlockingRule {
    /// Records whose keys are equal are paired.
    pub fn same_key(name: impl Into<String>, parts: Vec<KeyPart>) -> Self {
        BlockingRule {
            name: name.into(),
            parts,
            method: BlockingMethod::SameKey { unordered: false },
        }
    }

    /// Records whose key parts are equal in any order are paired.
    pub fn unordered(name: impl Into<String>, parts: Vec<KeyPart>) -> Self {
        BlockingRule {
            name: name.into(),
            parts,
            method: BlockingMethod::SameKey { unordered: true },
        }
    }

    /// Records are sorted by key and paired within a sliding window.
    pub fn sorted_neighbourhood(
        name: impl Into<String>,
        parts: Vec<KeyPart>,
        window: usize,
    ) -> Self {
        BlockingRule {
            name: name.into(),
            parts,
            method: BlockingMethod::SortedNeighbourhood { window },
        }
    }
}

/// The blocking rules chosen from the kinds present in `schema` (the first field of
/// each kind is used). Each is meant to pair a record with a handful of others even
/// in millions of records:
/// - national id, email, phone (last nine digits): equal;
/// - first and last name, phonetically and in either order, with the year of birth
///   (a swap or a typo in the names);
/// - first and last name exactly, in either order (a wrong date of birth);
/// - each name phonetically with the full date of birth;
/// - each name exactly with the postcode;
/// - the date of birth with the postcode, the house number or the city;
/// - the house number with the start of the street;
/// - a sorted-neighbourhood window over last+first name, and one over the national id.
///
/// Schemas with none of these kinds get one rule per field (its exact value).
pub fn default_rules(schema: &Schema) -> Vec<BlockingRule> {
    let name_of = |kind: FieldKind| {
        schema
            .first_of(kind)
            .map(|i| schema.fields()[i].name.clone())
    };
    let part = |name: &String, transform| KeyPart::new(name.clone(), transform);
    let first = name_of(FieldKind::FirstName);
    let last = name_of(FieldKind::LastName);
    let full = name_of(FieldKind::FullName);
    let dob = name_of(FieldKind::DateOfBirth);
    let postcode = name_of(FieldKind::Postcode);
    let number = name_of(FieldKind::StreetNumber);
    let street = name_of(FieldKind::Street);
    let city = name_of(FieldKind::City);
    let national_id = name_of(FieldKind::NationalId);
    let mut rules = Vec::new();

    if let Some(id) = &national_id {
        rules.push(BlockingRule::same_key(
            "national_id",
            vec![part(id, KeyTransform::Exact)],
        ));
    }
    if let Some(email) = name_of(FieldKind::Email) {
        rules.push(BlockingRule::same_key(
            "email",
            vec![part(&email, KeyTransform::Exact)],
        ));
    }
    if let Some(phone) = name_of(FieldKind::Phone) {
        rules.push(BlockingRule::same_key(
            "phone",
            vec![part(&phone, KeyTransform::Suffix(9))],
        ));
    }
    // The names as a pair, in either order.
    let pair: Option<(&String, &String)> = first.as_ref().zip(last.as_ref());
    if let Some((f, l)) = pair {
        let mut phonetic = vec![
            part(f, KeyTransform::Soundex),
            part(l, KeyTransform::Soundex),
        ];
        let mut label = "names_phonetic".to_owned();
        if let Some(d) = &dob {
            phonetic.push(part(d, KeyTransform::Prefix(4)));
            label.push_str("+birth_year");
        }
        rules.push(BlockingRule::unordered(label, phonetic));
        rules.push(BlockingRule::unordered(
            "names",
            vec![part(f, KeyTransform::Exact), part(l, KeyTransform::Exact)],
        ));
        // A nickname with a typo in the surname.
        rules.push(BlockingRule::same_key(
            "first_name_nickname+last_name_phonetic",
            vec![
                part(f, KeyTransform::Nickname),
                part(l, KeyTransform::Soundex),
            ],
        ));
        if let Some(phone) = name_of(FieldKind::Phone) {
            // A name mistyped and a digit of the phone wrong: the other name with
            // the phone's last four digits, or the first six of its last nine.
            for (label, name, transform) in [
                ("first_name_nickname", f, KeyTransform::Nickname),
                ("last_name_phonetic", l, KeyTransform::Soundex),
            ] {
                rules.push(BlockingRule::same_key(
                    format!("{label}+phone_end"),
                    vec![part(name, transform), part(&phone, KeyTransform::Suffix(4))],
                ));
            }
            rules.push(BlockingRule::sorted_neighbourhood(
                "phone_sorted",
                vec![part(&phone, KeyTransform::Suffix(9))],
                3,
            ));
        }
        if let Some(d) = &dob {
            // Both names mistyped (or swapped) but the date intact, up to a day
            // and month swap: the date with the names' initials in either order.
            rules.push(BlockingRule::unordered(
                "name_initials+date_of_birth_any_order",
                vec![
                    part(f, KeyTransform::Prefix(1)),
                    part(l, KeyTransform::Prefix(1)),
                    part(d, KeyTransform::DateAnyOrder),
                ],
            ));
            for (label, name) in [("first_name", f), ("last_name", l)] {
                rules.push(BlockingRule::same_key(
                    format!("{label}_initial+date_of_birth_any_order"),
                    vec![
                        part(name, KeyTransform::Prefix(1)),
                        part(d, KeyTransform::DateAnyOrder),
                    ],
                ));
            }
            // A name mistyped and a digit of the year wrong: the other name with
            // the month and day.
            for (label, name, transform) in [
                ("first_name_nickname", f, KeyTransform::Nickname),
                ("last_name_phonetic", l, KeyTransform::Soundex),
            ] {
                rules.push(BlockingRule::same_key(
                    format!("{label}+birth_month_day"),
                    vec![part(name, transform), part(d, KeyTransform::Suffix(4))],
                ));
            }
            // One name intact, the other and the date of birth both mistyped.
            rules.push(BlockingRule::same_key(
                "first_name_nickname+birth_year",
                vec![
                    part(f, KeyTransform::Nickname),
                    part(d, KeyTransform::Prefix(4)),
                ],
            ));
            rules.push(BlockingRule::same_key(
                "last_name+birth_year",
                vec![
                    part(l, KeyTransform::Exact),
                    part(d, KeyTransform::Prefix(4)),
                ],
            ));
        }
    } else if let Some(n) = &full {
        rules.push(BlockingRule::same_key(
            "full_name_phonetic",
            vec![part(n, KeyTransform::Soundex)],
        ));
    }
    // Each name with a second field.
    let names: Vec<(&str, &String)> = [
        ("first_name", &first),
        ("last_name", &last),
        ("full_name", &full),
    ]
    .into_iter()
    .filter_map(|(label, name)| name.as_ref().map(|n| (label, n)))
    .collect();
    for (label, name) in &names {
        if let Some(d) = &dob {
            rules.push(BlockingRule::same_key(
                format!("{label}_phonetic+date_of_birth_any_order"),
                vec![
                    part(name, KeyTransform::Soundex),
                    part(d, KeyTransform::DateAnyOrder),
                ],
            ));
        }
        if let Some(p) = &postcode {
            rules.push(BlockingRule::same_key(
                format!("{label}+postcode"),
                vec![
                    part(name, KeyTransform::Exact),
                    part(p, KeyTransform::Exact),
                ],
            ));
        }
    }
    if let Some(d) = &dob {
        for (label, other) in [
            ("postcode", &postcode),
            ("street_number", &number),
            ("city", &city),
        ] {
            if let Some(o) = other {
                rules.push(BlockingRule::same_key(
                    format!("date_of_birth+{label}"),
                    vec![part(d, KeyTransform::Exact), part(o, KeyTransform::Exact)],
                ));
            }
        }
    }
    if let (Some(n), Some(s)) = (&number, &street) {
        rules.push(BlockingRule::same_key(
            "street_number+street_prefix",
            vec![
                part(n, KeyTransform::Exact),
                part(s, KeyTransform::Prefix(6)),
            ],
        ));
    }
    if let Some((f, l)) = pair {
        rules.push(BlockingRule::sorted_neighbourhood(
            "names_sorted",
            vec![part(l, KeyTransform::Exact), part(f, KeyTransform::Exact)],
            4,
        ));
    }
    if let Some(id) = &national_id {
        rules.push(BlockingRule::sorted_neighbourhood(
            "national_id_sorted",
            vec![part(id, KeyTransform::Exact)],
            3,
        ));
    }
    if rules.is_empty() {
        for field in schema.fields() {
            rules.push(BlockingRule::same_key(
                field.name.clone(),
                vec![KeyPart::new(field.name.clone(), KeyTransform::Exact)],
            ));
        }
    }
    rules
}

/// Limits and scope of blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockingSettings {
    /// Blocks larger than this are compared within a sliding window instead of in full.
    pub max_block_size: usize,
    /// The window used for capped blocks; below 2, capped blocks are skipped.
    pub capped_window: usize,
    /// Pair only records of different sources (record linkage rather than
    /// de-duplication).
    pub link_only_across_sources: bool,
}

impl Default for BlockingSettings {
    fn default() -> Self {
        BlockingSettings {
            max_block_size: 200,
            capped_window: 10,
            link_only_across_sources: false,
        }
    }
}

/// What one rule contributed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStats {
    /// The rule's name.
    pub rule: String,
    /// Blocks (or windows) with at least two records.
    pub blocks: u64,
    /// Pairs the rule produced.
    pub pairs: u64,
    /// Pairs no earlier rule had produced.
    pub new_pairs: u64,
    /// Blocks larger than `max_block_size`, compared within a window.
    pub capped_blocks: u64,
    /// The largest block's size.
    pub largest_block: u64,
}

/// The candidate pairs `(i, j)`, `i < j`, sorted and unique, and what each rule added.
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    /// The record-index pairs to compare.
    pub pairs: Vec<(u32, u32)>,
    /// Per rule, in order.
    pub stats: Vec<RuleStats>,
}

/// Resolves every part of `rules` against the schema.
///
/// # Errors
/// [`DedupeError::Blocking`] when a rule has no part, names an unknown field, or
/// has a sorted-neighbourhood window below 2.
pub fn validate_rules(schema: &Schema, rules: &[BlockingRule]) -> Result<(), DedupeError> {
    resolve(schema, rules).map(|_| ())
}

type Resolved = Vec<Vec<(usize, KeyTransform)>>;

fn resolve(schema: &Schema, rules: &[BlockingRule]) -> Result<Resolved, DedupeError> {
    rules
        .iter()
        .map(|rule| {
            let error = |message: String| DedupeError::Blocking {
                rule: rule.name.clone(),
                message,
            };
            if rule.parts.is_empty() {
                return Err(error("the key has no part".into()));
            }
            if let BlockingMethod::SortedNeighbourhood { window } = rule.method
                && window < 2
            {
                return Err(error(format!("window {window} is below 2")));
            }
            rule.parts
                .iter()
                .map(|part| {
                    schema
                        .position(&part.field)
                        .map(|i| (i, part.transform))
                        .ok_or_else(|| error(format!("no field named {:?}", part.field)))
                })
                .collect()
        })
        .collect()
}

/// Runs every rule over `data` and unions their pairs.
///
/// `on_rule` is called after each rule with the number of rules done.
///
/// # Errors
/// As [`validate_rules`]; [`DedupeError::TooLarge`] past 2^32 records.
pub fn candidate_pairs(
    data: &Dataset,
    rules: &[BlockingRule],
    settings: &BlockingSettings,
    on_rule: &mut dyn FnMut(usize),
) -> Result<Candidates, DedupeError> {
    let resolved = resolve(data.schema(), rules)?;
    if u32::try_from(data.len()).is_err() {
        return Err(DedupeError::TooLarge);
    }
    let mut all: Vec<(u32, u32)> = Vec::new();
    let mut stats = Vec::with_capacity(rules.len());
    let mut pairer = Pairer {
        data,
        settings,
        sort_keys: Vec::new(),
    };
    for (done, (rule, parts)) in rules.iter().zip(&resolved).enumerate() {
        let mut rule_stats = RuleStats {
            rule: rule.name.clone(),
            ..RuleStats::default()
        };
        let mut pairs = match rule.method {
            BlockingMethod::SameKey { unordered } => {
                pairer.same_key(parts, unordered, &mut rule_stats)
            }
            BlockingMethod::SortedNeighbourhood { window } => {
                pairer.sorted_neighbourhood(parts, window, &mut rule_stats)
            }
        };
        pairs.sort_unstable();
        pairs.dedup();
        rule_stats.pairs = pairs.len() as u64;
        let before = all.len();
        all = merge_sorted(all, pairs);
        rule_stats.new_pairs = (all.len() - before) as u64;
        if rule_stats.capped_blocks > 0 && settings.capped_window < 2 {
            tracing::debug!(
                rule = %rule.name,
                capped_blocks = rule_stats.capped_blocks,
                max_block_size = settings.max_block_size,
                "blocks above the size cap were skipped"
            );
        } else if rule_stats.capped_blocks > 0 {
            tracing::warn!(
                rule = %rule.name,
                capped_blocks = rule_stats.capped_blocks,
                largest_block = rule_stats.largest_block,
                max_block_size = settings.max_block_size,
                window = settings.capped_window,
                "blocks above the size cap were compared within a sliding window only"
            );
        }
        tracing::debug!(rule = %rule.name, pairs = rule_stats.pairs, new_pairs = rule_stats.new_pairs, "blocking rule done");
        stats.push(rule_stats);
        on_rule(done + 1);
    }
    Ok(Candidates { pairs: all, stats })
}

/// Merges two sorted, duplicate-free pair lists into one.
fn merge_sorted(a: Vec<(u32, u32)>, b: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    if a.is_empty() {
        return b;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

struct Pairer<'a> {
    data: &'a Dataset,
    settings: &'a BlockingSettings,
    /// Lazily built: the order records take inside a capped block.
    sort_keys: Vec<String>,
}

impl Pairer<'_> {
    fn key(&self, i: usize, parts: &[(usize, KeyTransform)], unordered: bool) -> Option<String> {
        let mut values = Vec::with_capacity(parts.len());
        for &(field, transform) in parts {
            let value = self.data.value(i, field);
            if value.is_empty() {
                return None;
            }
            let transformed = transform.apply(value);
            if transformed.is_empty() {
                return None;
            }
            values.push(transformed);
        }
        if unordered {
            values.sort_unstable();
        }
        Some(values.join("\u{1f}"))
    }

    fn push_pair(&self, pairs: &mut Vec<(u32, u32)>, a: u32, b: u32) {
        if a == b {
            return;
        }
        if self.settings.link_only_across_sources
            && self.data.source_code(a as usize) == self.data.source_code(b as usize)
        {
            return;
        }
        pairs.push((a.min(b), a.max(b)));
    }

    fn same_key(
        &mut self,
        parts: &[(usize, KeyTransform)],
        unordered: bool,
        stats: &mut RuleStats,
    ) -> Vec<(u32, u32)> {
        let mut keyed: Vec<(u64, u32)> = (0..self.data.len())
            .filter_map(|i| {
                let key = self.key(i, parts, unordered)?;
                let mut hasher = DefaultHasher::new();
                key.hash(&mut hasher);
                Some((hasher.finish(), i as u32))
            })
            .collect();
        keyed.sort_unstable();
        let mut pairs = Vec::new();
        let mut start = 0;
        while start < keyed.len() {
            let mut end = start + 1;
            while end < keyed.len() && keyed[end].0 == keyed[start].0 {
                end += 1;
            }
            let block: Vec<u32> = keyed[start..end].iter().map(|&(_, i)| i).collect();
            start = end;
            if block.len() < 2 {
                continue;
            }
            stats.blocks += 1;
            stats.largest_block = stats.largest_block.max(block.len() as u64);
            if block.len() <= self.settings.max_block_size {
                for (x, &a) in block.iter().enumerate() {
                    for &b in &block[x + 1..] {
                        self.push_pair(&mut pairs, a, b);
                    }
                }
            } else {
                stats.capped_blocks += 1;
                if self.settings.capped_window >= 2 {
                    self.windowed(block, &mut pairs);
                }
            }
        }
        pairs
    }

    /// Pairs a capped block's records within a window after sorting them by name.
    fn windowed(&mut self, mut block: Vec<u32>, pairs: &mut Vec<(u32, u32)>) {
        if self.sort_keys.is_empty() {
            self.sort_keys = (0..self.data.len())
                .map(|i| record_sort_key(self.data, i))
                .collect();
        }
        block
            .sort_unstable_by(|&a, &b| self.sort_keys[a as usize].cmp(&self.sort_keys[b as usize]));
        let window = self.settings.capped_window;
        for (x, &a) in block.iter().enumerate() {
            for &b in block.iter().skip(x + 1).take(window - 1) {
                self.push_pair(pairs, a, b);
            }
        }
    }

    fn sorted_neighbourhood(
        &mut self,
        parts: &[(usize, KeyTransform)],
        window: usize,
        stats: &mut RuleStats,
    ) -> Vec<(u32, u32)> {
        let mut keyed: Vec<(String, u32)> = (0..self.data.len())
            .filter_map(|i| Some((self.key(i, parts, false)?, i as u32)))
            .collect();
        keyed.sort_unstable();
        let mut pairs = Vec::new();
        for (x, (_, a)) in keyed.iter().enumerate() {
            for (_, b) in keyed.iter().skip(x + 1).take(window - 1) {
                self.push_pair(&mut pairs, *a, *b);
            }
        }
        stats.blocks = keyed.len().saturating_sub(1) as u64;
        stats.largest_block = window.min(keyed.len()) as u64;
        pairs
    }
}

/// Names first, then every other value: the order of records inside a capped block.
fn record_sort_key(data: &Dataset, i: usize) -> String {
    let schema = data.schema();
    let mut fields: Vec<usize> = (0..schema.len()).collect();
    fields.sort_by_key(|&f| match schema.fields()[f].kind {
        FieldKind::LastName | FieldKind::FullName => 0,
        FieldKind::FirstName => 1,
        FieldKind::DateOfBirth => 2,
        _ => 3,
    });
    let mut key = String::new();
    for f in fields {
        key.push_str(data.value(i, f));
        key.push('\u{1f}');
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedupe::record::{FieldSpec, Record};

    fn data(records: &[Record]) -> Dataset {
        let schema = Schema::new(vec![
            FieldSpec::new("first", FieldKind::FirstName),
            FieldSpec::new("last", FieldKind::LastName),
            FieldSpec::new("dob", FieldKind::DateOfBirth),
        ])
        .expect("schema");
        Dataset::from_records(schema, records).expect("dataset")
    }

    fn person(id: &str, first: &str, last: &str, dob: &str) -> Record {
        Record::new(id)
            .with("first", first)
            .with("last", last)
            .with("dob", dob)
    }

    #[test]
    fn swapped_names_share_the_unordered_phonetic_block() {
        let data = data(&[
            person("a", "john", "smith", "19800312"),
            person("b", "smyth", "jon", "19010101"),
            person("c", "mary", "jones", "19800312"),
        ]);
        let rules = vec![BlockingRule::unordered(
            "names",
            vec![
                KeyPart::new("first", KeyTransform::Soundex),
                KeyPart::new("last", KeyTransform::Soundex),
            ],
        )];
        let got = candidate_pairs(&data, &rules, &BlockingSettings::default(), &mut |_| {})
            .expect("blocking");
        assert_eq!(got.pairs, vec![(0, 1)]);
    }

    #[test]
    fn rules_are_unioned_and_counted() {
        let data = data(&[
            person("a", "john", "smith", "19800312"),
            person("b", "john", "smith", "19800312"),
            person("c", "mary", "jones", "19800312"),
        ]);
        let rules = default_rules(data.schema());
        let got = candidate_pairs(&data, &rules, &BlockingSettings::default(), &mut |_| {})
            .expect("blocking");
        assert_eq!(got.pairs, vec![(0, 1), (0, 2), (1, 2)]);
        assert_eq!(got.stats.iter().map(|s| s.new_pairs).sum::<u64>(), 3);
    }

    #[test]
    fn oversized_blocks_are_windowed_not_dropped() {
        let records: Vec<Record> = (0..50)
            .map(|i| person(&i.to_string(), &format!("n{i:02}"), "smith", ""))
            .collect();
        let data = data(&records);
        let rules = vec![BlockingRule::same_key(
            "last",
            vec![KeyPart::new("last", KeyTransform::Exact)],
        )];
        let settings = BlockingSettings {
            max_block_size: 10,
            capped_window: 3,
            link_only_across_sources: false,
        };
        let got = candidate_pairs(&data, &rules, &settings, &mut |_| {}).expect("blocking");
        assert_eq!(got.stats[0].capped_blocks, 1);
        assert_eq!(got.pairs.len(), 49 + 48);
    }

    #[test]
    fn link_mode_pairs_only_across_sources() {
        let records = vec![
            person("a", "john", "smith", "").from_source("A"),
            person("b", "john", "smith", "").from_source("A"),
            person("c", "john", "smith", "").from_source("B"),
        ];
        let data = data(&records);
        let rules = vec![BlockingRule::same_key(
            "last",
            vec![KeyPart::new("last", KeyTransform::Exact)],
        )];
        let settings = BlockingSettings {
            link_only_across_sources: true,
            ..BlockingSettings::default()
        };
        let got = candidate_pairs(&data, &rules, &settings, &mut |_| {}).expect("blocking");
        assert_eq!(got.pairs, vec![(0, 2), (1, 2)]);
    }

    #[test]
    fn unknown_field_in_a_rule_is_reported_by_name() {
        let data = data(&[]);
        let rules = vec![BlockingRule::same_key(
            "zip",
            vec![KeyPart::new("zip", KeyTransform::Exact)],
        )];
        let error = validate_rules(data.schema(), &rules)
            .expect_err("must fail")
            .to_string();
        assert_eq!(error, "blocking rule \"zip\": no field named \"zip\"");
    }
}
