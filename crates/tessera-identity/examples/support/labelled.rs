//! Loading labelled record sets for evaluation: the FEBRL sets
//! (`febrlN_records.csv` + `febrlN_pairs.csv`) and the synthetic sets written by the
//! `synth_people` example. The truth columns (`cluster_id`, the pairs file) are
//! returned apart from the records and never given to the de-duplication.

#![allow(dead_code)]

use std::collections::HashMap;
use std::error::Error;
use std::path::Path;
use tessera_identity::dedupe::{Dataset, FieldKind, FieldSpec, Schema};

/// Records with their ground truth.
pub struct Labelled {
    /// The normalized records.
    pub data: Dataset,
    /// Per record, its true cluster (from the `cluster_id` column).
    pub truth: Vec<u32>,
    /// The true matching pairs, `(min, max)` record indexes, sorted.
    pub true_pairs: Vec<(u32, u32)>,
}

/// FEBRL columns and the kinds they are compared as.
pub const FEBRL_FIELDS: &[(&str, FieldKind)] = &[
    ("given_name", FieldKind::FirstName),
    ("surname", FieldKind::LastName),
    ("street_number", FieldKind::StreetNumber),
    ("address_1", FieldKind::Street),
    ("address_2", FieldKind::Text),
    ("suburb", FieldKind::City),
    ("postcode", FieldKind::Postcode),
    ("state", FieldKind::State),
    ("date_of_birth", FieldKind::DateOfBirth),
    ("soc_sec_id", FieldKind::NationalId),
];

/// Columns of a labelled CSV that are not compared.
const NOT_COMPARED: &[&str] = &["record_id", "cluster_id", "source"];

/// Reads `<dir>/<name>_records.csv` and `<dir>/<name>_pairs.csv`.
pub fn load_febrl(dir: &Path, name: &str) -> Result<Labelled, Box<dyn Error>> {
    let fields: Vec<FieldSpec> = FEBRL_FIELDS
        .iter()
        .map(|&(column, kind)| FieldSpec::new(column, kind))
        .collect();
    let mut labelled = load_csv(&dir.join(format!("{name}_records.csv")), Some(fields))?;
    let pairs_path = dir.join(format!("{name}_pairs.csv"));
    let index: HashMap<String, u32> = (0..labelled.data.len())
        .map(|i| (labelled.data.id(i).to_owned(), i as u32))
        .collect();
    let mut reader = csv::Reader::from_path(&pairs_path)?;
    let mut pairs = Vec::new();
    for row in reader.records() {
        let row = row?;
        let lookup = |column: usize| -> Result<u32, Box<dyn Error>> {
            let id = row.get(column).unwrap_or_default();
            index
                .get(id)
                .copied()
                .ok_or_else(|| format!("{}: unknown record {id:?}", pairs_path.display()).into())
        };
        let (a, b) = (lookup(0)?, lookup(1)?);
        pairs.push((a.min(b), a.max(b)));
    }
    pairs.sort_unstable();
    pairs.dedup();
    labelled.true_pairs = pairs;
    Ok(labelled)
}

/// Reads a CSV with `record_id`, `cluster_id`, optionally `source`, and compared
/// columns: `fields`, or when `None` every other column, its name read as its kind.
/// The true pairs are derived from `cluster_id`.
pub fn load_csv(path: &Path, fields: Option<Vec<FieldSpec>>) -> Result<Labelled, Box<dyn Error>> {
    let mut reader =
        csv::Reader::from_path(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let headers = reader.headers()?.clone();
    let column = |name: &str| -> Result<usize, Box<dyn Error>> {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("{}: no column {name:?}", path.display()).into())
    };
    let fields = match fields {
        Some(fields) => fields,
        None => headers
            .iter()
            .filter(|h| !NOT_COMPARED.contains(h))
            .map(|h| Ok(FieldSpec::new(h, h.parse::<FieldKind>()?)))
            .collect::<Result<Vec<_>, Box<dyn Error>>>()?,
    };
    let columns: Vec<usize> = fields
        .iter()
        .map(|f| column(&f.name))
        .collect::<Result<_, _>>()?;
    let (id_column, cluster_column) = (column("record_id")?, column("cluster_id")?);
    let source_column = headers.iter().position(|h| h == "source");
    let mut data = Dataset::new(Schema::new(fields)?);
    let mut clusters: HashMap<String, u32> = HashMap::new();
    let mut truth = Vec::new();
    let mut row = csv::StringRecord::new();
    while reader.read_record(&mut row)? {
        let values: Vec<&str> = columns
            .iter()
            .map(|&c| row.get(c).unwrap_or_default())
            .collect();
        let source = source_column.and_then(|c| row.get(c));
        data.push(row.get(id_column).unwrap_or_default(), source, &values)?;
        let next = clusters.len() as u32;
        let label = *clusters
            .entry(row.get(cluster_column).unwrap_or_default().to_owned())
            .or_insert(next);
        truth.push(label);
    }
    let true_pairs = tessera_identity::dedupe::evaluate::pairs_of_clusters(&truth);
    Ok(Labelled {
        data,
        truth,
        true_pairs,
    })
}

/// The process's peak resident memory in MiB (Linux `VmHWM`), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
