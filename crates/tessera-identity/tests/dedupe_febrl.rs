//! De-duplication accuracy on FEBRL 1 (1,000 records, 500 true pairs), read from
//! the folder named by `TESSERA_FEBRL_DIR` (`febrl1_records.csv`, `febrl1_pairs.csv`),
//! by default the public datasets folder beside the checkout (`shared/datasets/identity`).
//! The truth columns are used for scoring only. Skipped, with a message, when the
//! folder lacks the set.

#[path = "../examples/support/labelled.rs"]
mod labelled;

use std::path::PathBuf;
use tessera_identity::dedupe::evaluate::{bcubed, pairwise};
use tessera_identity::dedupe::{DedupeConfig, NoProgress, dedupe};

fn datasets() -> Option<PathBuf> {
    // The public datasets folder beside a checkout, unless the variable names another.
    let dir = std::env::var_os("TESSERA_FEBRL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/identity")
        });
    if dir.join("febrl1_records.csv").exists() {
        Some(dir)
    } else {
        eprintln!("skipped: {} has no febrl1_records.csv", dir.display());
        None
    }
}

#[test]
fn febrl1_pairwise_f1_is_at_least_0_995() {
    let Some(dir) = datasets() else { return };
    let set = labelled::load_febrl(&dir, "febrl1").expect("febrl1 loads");
    assert_eq!(set.true_pairs.len(), 500);
    let outcome = dedupe(&set.data, &DedupeConfig::default(), &NoProgress).expect("dedupe runs");
    let scores = pairwise(&set.truth, &outcome.clusters);
    let b3 = bcubed(&set.truth, &outcome.clusters);
    eprintln!(
        "febrl1: precision {:.4} recall {:.4} F1 {:.4}; B-cubed F1 {:.4}",
        scores.precision, scores.recall, scores.f1, b3.f1
    );
    assert!(scores.f1 >= 0.995, "pairwise F1 {:.4} < 0.995", scores.f1);
    assert!(b3.f1 >= 0.995, "B-cubed F1 {:.4} < 0.995", b3.f1);
}

#[test]
fn explanations_add_up_to_the_match_weight() {
    let Some(dir) = datasets() else { return };
    let set = labelled::load_febrl(&dir, "febrl1").expect("febrl1 loads");
    let outcome = dedupe(&set.data, &DedupeConfig::default(), &NoProgress).expect("dedupe runs");
    let (a, b) = set.true_pairs[0];
    let explanation = outcome
        .model
        .explain(&set.data, a as usize, &set.data, b as usize);
    let sum: f64 = explanation.fields.iter().map(|c| c.weight).sum();
    assert!((sum - explanation.weight).abs() < 1e-9);
    assert_eq!(explanation.fields.len(), set.data.schema().len());
    assert!(explanation.is_match, "{explanation}");
}
