//! The batch evaluator: a condition over every profile at once, as set algebra.
//!
//! Each node takes the set of candidate profiles still undecided and returns the
//! subset for which it holds: `and` narrows the candidates child by child (cheapest
//! child first), `or` only asks each child about the profiles not yet in, `not`
//! subtracts. Leaves scan trait columns or each candidate's contiguous events, split
//! over threads. Work is thus proportional to the candidates, not to the index.
//! [`crate::eval::Plan::holds`] is the per-profile evaluator of the same plan; a
//! property test keeps the two equal.

use crate::bitset::Bitset;
use crate::eval::{EventPlan, Plan, WindowPlan};
use crate::index::{ProfileIndex, Slot};
use crate::scalar::{CompiledTest, Literal, Scalar, Sym};

/// How a batch evaluation uses threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parallelism {
    /// Threads per scan.
    pub threads: usize,
    /// Below this many candidates a scan runs on one thread (threads cost more
    /// than they save on small sets).
    pub min_candidates: usize,
}

impl Parallelism {
    /// `threads` threads for scans of at least 32,768 candidates.
    pub fn threads(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            min_candidates: 32_768,
        }
    }
}

/// Evaluates `plan` over every live profile: the members.
pub fn evaluate(
    plan: &Plan<'_>,
    index: &ProfileIndex,
    now_ms: i64,
    threads: Parallelism,
) -> Bitset {
    let candidates = index.alive_slots();
    evaluate_within(plan, index, now_ms, &candidates, threads)
}

/// Evaluates `plan` over the profiles in `candidates`.
pub fn evaluate_within(
    plan: &Plan<'_>,
    index: &ProfileIndex,
    now_ms: i64,
    candidates: &Bitset,
    threads: Parallelism,
) -> Bitset {
    match plan {
        Plan::And(children) => {
            let mut order: Vec<&Plan<'_>> = children.iter().collect();
            order.sort_by_key(|c| c.cost());
            let mut current = candidates.clone();
            for child in order {
                if current.is_empty() {
                    break;
                }
                current = evaluate_within(child, index, now_ms, &current, threads);
            }
            current
        }
        Plan::Or(children) => {
            let mut order: Vec<&Plan<'_>> = children.iter().collect();
            order.sort_by_key(|c| c.cost());
            let mut members = Bitset::new(candidates.capacity());
            let mut remaining = candidates.clone();
            for child in order {
                if remaining.is_empty() {
                    break;
                }
                let found = evaluate_within(child, index, now_ms, &remaining, threads);
                remaining = remaining.minus(&found);
                members = members.or(&found);
            }
            members
        }
        Plan::Not(child) => {
            candidates.minus(&evaluate_within(child, index, now_ms, candidates, threads))
        }
        Plan::Event(event) => event_set(event, index, candidates, threads),
        Plan::Trait(column, test) => trait_set(*column, test, index, candidates, threads),
        Plan::Identifier(bit) => match bit {
            Some(bit) => {
                let bits = index.identifier_bits();
                filter(candidates, threads, |slot| {
                    bits.get(slot as usize).is_some_and(|b| b & (1 << bit) != 0)
                })
            }
            None => Bitset::new(candidates.capacity()),
        },
        Plan::Audience(members) => match members {
            Some(members) => candidates.and(members),
            None => Bitset::new(candidates.capacity()),
        },
        leaf => scan(leaf, index, now_ms, candidates, threads),
    }
}

/// An event condition over the candidates, from the name's postings: a window is a
/// binary search and a run of that name's events only, counted per profile.
fn event_set(
    plan: &EventPlan,
    index: &ProfileIndex,
    candidates: &Bitset,
    threads: Parallelism,
) -> Bitset {
    let all_or_none = |holds: bool| {
        if holds {
            candidates.clone()
        } else {
            Bitset::new(candidates.capacity())
        }
    };
    let Some(postings) = plan.name.and_then(|name| index.postings(name)) else {
        // No event has this name: every count is 0.
        return all_or_none(plan.count.holds(0));
    };
    let (from, to) = match plan.window {
        WindowPlan::Between(from, to) => (from, to),
        WindowPlan::All | WindowPlan::Since(_) => (i64::MIN, i64::MAX),
    };
    // Dense per-slot arrays: a hash map would cost more than the scan itself.
    let slots = index.slot_count();
    // `since "X"`: only events after the profile's latest X.
    let anchors: Option<Vec<i64>> = match plan.window {
        WindowPlan::Since(Some(anchor)) => {
            let mut latest = vec![i64::MIN; slots];
            if let Some(anchor_postings) = index.postings(anchor) {
                for p in anchor_postings.between(i64::MIN, i64::MAX) {
                    let t = &mut latest[p.slot as usize];
                    *t = (*t).max(p.timestamp_ms);
                }
            }
            Some(latest)
        }
        _ => None,
    };
    let count_run = |run: &mut dyn Iterator<Item = &crate::index::Posting>| {
        let mut counts = vec![0u32; slots];
        let mut touched: Vec<Slot> = Vec::new();
        for p in run {
            if !candidates.contains(p.slot) {
                continue;
            }
            if anchors
                .as_ref()
                .is_some_and(|a| p.timestamp_ms <= a[p.slot as usize])
            {
                continue;
            }
            if plan.passes_filters(index, p.props) {
                let count = &mut counts[p.slot as usize];
                if *count == 0 {
                    touched.push(p.slot);
                }
                *count = count.saturating_add(1);
            }
        }
        (counts, touched)
    };
    let main = postings.main_between(from, to);
    let (counts, touched) = if threads.threads > 1 && main.len() >= threads.min_candidates * 4 {
        // Two halves of the run on two threads, then one sum.
        let (left, right) = main.split_at(main.len() / 2);
        let ((mut counts, mut touched), (other_counts, other_touched)) =
            std::thread::scope(|scope| {
                let other = scope.spawn(|| count_run(&mut right.iter()));
                let mine = count_run(&mut left.iter().chain(postings.late_between(from, to)));
                let other = other
                    .join()
                    .unwrap_or_else(|_| (vec![0; slots], Vec::new()));
                (mine, other)
            });
        for slot in other_touched {
            let count = &mut counts[slot as usize];
            if *count == 0 {
                touched.push(slot);
            }
            *count = count.saturating_add(other_counts[slot as usize]);
        }
        (counts, touched)
    } else {
        count_run(&mut main.iter().chain(postings.late_between(from, to)))
    };
    // Profiles with no matching event have a count of 0: in when 0 passes.
    if plan.count.holds(0) {
        let mut out = candidates.clone();
        for slot in touched {
            if !plan.count.holds(counts[slot as usize]) {
                out.remove(slot);
            }
        }
        out
    } else {
        let mut out = Bitset::new(candidates.capacity());
        for slot in touched {
            if plan.count.holds(counts[slot as usize]) {
                out.insert(slot);
            }
        }
        out
    }
}

/// A trait condition: a scan of the trait's column, with the common tests
/// (equality and membership of strings, time ranges) compared without the general
/// test machinery.
fn trait_set(
    column: Option<&[Option<Scalar>]>,
    test: &CompiledTest,
    index: &ProfileIndex,
    candidates: &Bitset,
    threads: Parallelism,
) -> Bitset {
    let column = column.unwrap_or(&[]);
    let value = |slot: Slot| column.get(slot as usize).and_then(Option::as_ref);
    let symbols = &index.symbols;
    match test {
        CompiledTest::Eq(Literal::Known(Scalar::Str(sym))) => filter(
            candidates,
            threads,
            |slot| matches!(value(slot), Some(Scalar::Str(x)) if x == sym),
        ),
        CompiledTest::Ne(Literal::Known(Scalar::Str(sym))) => filter(
            candidates,
            threads,
            |slot| !matches!(value(slot), Some(Scalar::Str(x)) if x == sym),
        ),
        CompiledTest::In(literals)
            if literals
                .iter()
                .all(|l| matches!(l, Literal::Known(Scalar::Str(_)) | Literal::Absent(_))) =>
        {
            let syms: Vec<Sym> = literals
                .iter()
                .filter_map(|l| match l {
                    Literal::Known(Scalar::Str(s)) => Some(*s),
                    _ => None,
                })
                .collect();
            filter(
                candidates,
                threads,
                |slot| matches!(value(slot), Some(Scalar::Str(x)) if syms.contains(x)),
            )
        }
        CompiledTest::TimeBetween(from, to) => {
            filter(candidates, threads, |slot| match value(slot) {
                Some(Scalar::Time(t)) => *from <= *t && *t <= *to,
                _ => false,
            })
        }
        general => filter(candidates, threads, |slot| {
            general.holds(value(slot), symbols)
        }),
    }
}

/// Runs a leaf on each candidate, split over threads by ranges of words.
fn scan(
    leaf: &Plan<'_>,
    index: &ProfileIndex,
    now_ms: i64,
    candidates: &Bitset,
    threads: Parallelism,
) -> Bitset {
    filter(candidates, threads, |slot| leaf.holds(index, slot, now_ms))
}

/// The candidates for which `keep` holds, split over threads by ranges of words.
fn filter(candidates: &Bitset, threads: Parallelism, keep: impl Fn(Slot) -> bool + Sync) -> Bitset {
    let words = &candidates.words;
    let run = |range: std::ops::Range<usize>| -> Vec<u64> {
        words[range.clone()]
            .iter()
            .enumerate()
            .map(|(offset, &word)| {
                let base = ((range.start + offset) * 64) as Slot;
                let mut w = word;
                let mut out = 0u64;
                while w != 0 {
                    let bit = w.trailing_zeros();
                    w &= w - 1;
                    if keep(base + bit) {
                        out |= 1 << bit;
                    }
                }
                out
            })
            .collect()
    };
    let out_words = if threads.threads <= 1 || candidates.len < threads.min_candidates {
        run(0..words.len())
    } else {
        let chunk = words.len().div_ceil(threads.threads);
        let run = &run;
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads.threads)
                .map(|t| {
                    let range = (t * chunk).min(words.len())..((t + 1) * chunk).min(words.len());
                    (range.len(), scope.spawn(move || run(range)))
                })
                .collect();
            handles
                .into_iter()
                // A panicked scan (a bug) yields no members rather than shifted words.
                .flat_map(|(len, h)| h.join().unwrap_or_else(|_| vec![0; len]))
                .collect()
        })
    };
    Bitset {
        words: out_words,
        len: candidates.len,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bitset_basics() {
        let mut set = Bitset::new(10);
        set.insert(3);
        set.insert(130);
        assert!(set.contains(3) && set.contains(130) && !set.contains(4));
        assert_eq!(set.iter().collect::<Vec<_>>(), [3, 130]);
        let mut other = Bitset::new(5);
        other.insert(3);
        assert_eq!(set.minus(&other).iter().collect::<Vec<_>>(), [130]);
        assert_eq!(set.and(&other).count(), 1);
        assert_eq!(set.or(&other).count(), 2);
        set.remove(3);
        assert_eq!(set.count(), 1);
    }
}
