//! Records as the caller has them ([`Record`]: an id and named raw values) and as the
//! engine works on them ([`Dataset`]: normalized values in one buffer).
//!
//! A `Dataset` normalizes each value once, on insertion, and keeps all values in one
//! contiguous string with small offsets, so a million records of a dozen fields cost
//! their text plus a few bytes per field rather than a dozen heap strings each.

use super::error::DedupeError;
use super::kind::FieldKind;
use super::normalize::normalize;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The most fields one schema may compare (each comparison level takes 3 bits of a
/// 64-bit pattern).
pub const MAX_FIELDS: usize = 21;

/// One compared field: the record's field name and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    /// The field's name in the records (a CSV column, a trait name).
    pub name: String,
    /// What it holds.
    pub kind: FieldKind,
}

impl FieldSpec {
    /// A field named `name` of `kind`.
    pub fn new(name: impl Into<String>, kind: FieldKind) -> Self {
        FieldSpec {
            name: name.into(),
            kind,
        }
    }
}

/// The compared fields, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    fields: Vec<FieldSpec>,
}

impl Schema {
    /// A schema of `fields`.
    ///
    /// # Errors
    /// [`DedupeError::Schema`] when there is no field, more than [`MAX_FIELDS`], or
    /// a name appears twice.
    pub fn new(fields: Vec<FieldSpec>) -> Result<Self, DedupeError> {
        if fields.is_empty() {
            return Err(DedupeError::Schema(
                "no field to compare: give at least one field and its kind".into(),
            ));
        }
        if fields.len() > MAX_FIELDS {
            return Err(DedupeError::Schema(format!(
                "{} fields given; at most {MAX_FIELDS} can be compared",
                fields.len()
            )));
        }
        for (i, field) in fields.iter().enumerate() {
            if fields[..i].iter().any(|f| f.name == field.name) {
                return Err(DedupeError::Schema(format!(
                    "field {:?} is given twice",
                    field.name
                )));
            }
        }
        Ok(Schema { fields })
    }

    /// The fields, in order.
    pub fn fields(&self) -> &[FieldSpec] {
        &self.fields
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Always false: a schema has at least one field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The position of the field named `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The position of the first field of `kind`.
    pub fn first_of(&self, kind: FieldKind) -> Option<usize> {
        self.fields.iter().position(|f| f.kind == kind)
    }
}

/// A record as the caller has it: an id, an optional source (for linking between
/// sources only) and raw values by field name. Fields not in the schema are ignored;
/// schema fields absent here are missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The record's identifier, echoed in results.
    pub id: String,
    /// Where the record comes from; with `link_only_across_sources`, records of the
    /// same source are never paired.
    pub source: Option<String>,
    /// Raw values by field name.
    pub values: BTreeMap<String, String>,
}

impl Record {
    /// A record with `id` and no values.
    pub fn new(id: impl Into<String>) -> Self {
        Record {
            id: id.into(),
            ..Record::default()
        }
    }

    /// The record with `field` set to `value`.
    #[must_use]
    pub fn with(mut self, field: impl Into<String>, value: impl Into<String>) -> Self {
        self.values.insert(field.into(), value.into());
        self
    }

    /// The record with its source set.
    #[must_use]
    pub fn from_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }
}

/// Strings stored end to end with their end offsets.
#[derive(Debug, Clone, Default)]
struct StrColumn {
    data: String,
    ends: Vec<u32>,
}

impl StrColumn {
    fn push(&mut self, value: &str) -> Result<(), DedupeError> {
        self.data.push_str(value);
        let end = u32::try_from(self.data.len()).map_err(|_| DedupeError::TooLarge)?;
        self.ends.push(end);
        Ok(())
    }

    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends[i] as usize;
        &self.data[start..end]
    }
}

/// Normalized records: what blocking, scoring and clustering read.
///
/// Values are stored row by row — one record's normalized values end to end, with
/// their end offsets inside the record — because scoring reads whole records at
/// random: one record costs one or two cache lines, not one per field.
#[derive(Debug, Clone)]
pub struct Dataset {
    schema: Schema,
    ids: StrColumn,
    sources: Vec<u16>,
    source_names: Vec<String>,
    source_index: HashMap<String, u16>,
    /// Every record's values, end to end.
    values: String,
    /// Where each record's values start in `values` (one more entry than records).
    starts: Vec<u32>,
    /// Per record and field, the end of the value relative to the record's start.
    ends: Vec<u16>,
}

impl Dataset {
    /// An empty dataset of `schema`.
    pub fn new(schema: Schema) -> Self {
        Dataset {
            schema,
            ids: StrColumn::default(),
            sources: Vec::new(),
            source_names: Vec::new(),
            source_index: HashMap::new(),
            values: String::new(),
            starts: vec![0],
            ends: Vec::new(),
        }
    }

    /// Normalizes and appends one record whose raw `values` are in schema order, and
    /// returns its index.
    ///
    /// # Errors
    /// [`DedupeError::Record`] when `values` does not have one value per field or
    /// their normalized text exceeds 64 KiB; [`DedupeError::TooLarge`] past 4 GiB of
    /// text or 65,535 sources.
    pub fn push(
        &mut self,
        id: &str,
        source: Option<&str>,
        values: &[&str],
    ) -> Result<usize, DedupeError> {
        if values.len() != self.schema.len() {
            return Err(DedupeError::Record(format!(
                "record {id:?} has {} values for {} fields",
                values.len(),
                self.schema.len()
            )));
        }
        let source = match source {
            None => 0,
            Some(name) => match self.source_index.get(name) {
                Some(&index) => index,
                None => {
                    let index = u16::try_from(self.source_names.len() + 1)
                        .map_err(|_| DedupeError::TooLarge)?;
                    self.source_names.push(name.to_owned());
                    self.source_index.insert(name.to_owned(), index);
                    index
                }
            },
        };
        let index = self.ids.ends.len();
        let start = self.values.len();
        for (field, raw) in self.schema.fields().iter().zip(values) {
            self.values.push_str(&normalize(field.kind, raw));
            let end = u16::try_from(self.values.len() - start).map_err(|_| {
                DedupeError::Record(format!(
                    "record {id:?} has more than 65,535 bytes of normalized values"
                ))
            })?;
            self.ends.push(end);
        }
        let next = u32::try_from(self.values.len()).map_err(|_| DedupeError::TooLarge)?;
        self.starts.push(next);
        self.ids.push(id)?;
        self.sources.push(source);
        Ok(index)
    }

    /// A dataset of `records` under `schema`, in the same order.
    ///
    /// # Errors
    /// As [`Dataset::push`].
    pub fn from_records(schema: Schema, records: &[Record]) -> Result<Self, DedupeError> {
        let mut data = Dataset::new(schema);
        let names: Vec<String> = data
            .schema
            .fields()
            .iter()
            .map(|f| f.name.clone())
            .collect();
        for record in records {
            let values: Vec<&str> = names
                .iter()
                .map(|name| record.values.get(name).map_or("", String::as_str))
                .collect();
            data.push(&record.id, record.source.as_deref(), &values)?;
        }
        Ok(data)
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.ids.ends.len()
    }

    /// Whether there is no record.
    pub fn is_empty(&self) -> bool {
        self.ids.ends.is_empty()
    }

    /// The id of record `i`.
    ///
    /// # Panics
    /// When `i` is out of range.
    pub fn id(&self, i: usize) -> &str {
        self.ids.get(i)
    }

    /// The normalized value of `field` for record `i` ("" when missing).
    ///
    /// # Panics
    /// When `i` or `field` is out of range.
    pub fn value(&self, i: usize, field: usize) -> &str {
        let k = self.schema.len();
        let base = self.starts[i] as usize;
        let row = &self.ends[i * k..i * k + k];
        let from = if field == 0 {
            0
        } else {
            usize::from(row[field - 1])
        };
        &self.values[base + from..base + usize::from(row[field])]
    }

    /// The source of record `i`, if it has one.
    pub fn source(&self, i: usize) -> Option<&str> {
        match self.sources.get(i) {
            Some(&s) if s > 0 => self
                .source_names
                .get(usize::from(s) - 1)
                .map(String::as_str),
            _ => None,
        }
    }

    /// The number of distinct sources seen.
    pub fn source_count(&self) -> usize {
        self.source_names.len()
    }

    pub(crate) fn source_code(&self, i: usize) -> u16 {
        self.sources[i]
    }

    /// Approximate heap bytes held (for reports).
    pub fn heap_bytes(&self) -> usize {
        self.ids.data.capacity()
            + self.ids.ends.capacity() * 4
            + self.values.capacity()
            + self.starts.capacity() * 4
            + self.ends.capacity() * 2
            + self.sources.capacity() * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![
            FieldSpec::new("given_name", FieldKind::FirstName),
            FieldSpec::new("dob", FieldKind::DateOfBirth),
        ])
        .expect("valid schema")
    }

    #[test]
    fn records_are_normalized_into_columns() {
        let records = vec![
            Record::new("a")
                .with("given_name", " Mary-Ann")
                .with("dob", "1980-03-12"),
            Record::new("b")
                .with("dob", "12/03/1980")
                .from_source("crm"),
        ];
        let data = Dataset::from_records(schema(), &records).expect("dataset");
        assert_eq!(data.len(), 2);
        assert_eq!(data.id(1), "b");
        assert_eq!(data.value(0, 0), "maryann");
        assert_eq!(data.value(1, 0), "");
        assert_eq!(data.value(0, 1), data.value(1, 1));
        assert_eq!(data.source(0), None);
        assert_eq!(data.source(1), Some("crm"));
    }

    #[test]
    fn schema_rejects_duplicate_and_empty_fields() {
        assert!(Schema::new(vec![]).is_err());
        let twice = vec![
            FieldSpec::new("x", FieldKind::Text),
            FieldSpec::new("x", FieldKind::Email),
        ];
        let error = Schema::new(twice).expect_err("must fail").to_string();
        assert!(error.contains("\"x\" is given twice"), "{error}");
    }

    #[test]
    fn push_rejects_a_wrong_value_count() {
        let mut data = Dataset::new(schema());
        assert!(data.push("a", None, &["x"]).is_err());
    }
}
