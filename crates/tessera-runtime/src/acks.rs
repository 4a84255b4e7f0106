//! When events were acknowledged, by log position, kept in memory for the latency
//! histograms (`tessera_ack_latency_seconds`).
//!
//! The committer's sync thread records, after each fsync and before it answers the
//! requests that fsync covers, the highest `seq` now durable and the time. Every
//! event above the previous record and up to that `seq` was acknowledged then. The
//! processor, the audience step and the fan-out look events up by `seq` to measure
//! how long after its acknowledgement an event was applied, changed a membership or
//! was delivered.
//!
//! The committer records the log's durable `seq` once at start, before any append:
//! that first record only marks where measuring begins.
//!
//! Bounded: the oldest records are dropped past [`CAPACITY`] (one record per fsync,
//! so minutes of history at full load). An event with no record — acknowledged
//! before this process started, or too long ago — has no time and is not measured.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Records kept (16 bytes each).
pub const CAPACITY: usize = 65_536;

/// Acknowledgement times by `seq` (see the module doc).
#[derive(Debug, Default)]
pub struct AckTimes {
    ledger: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    /// `(highest seq acknowledged, Unix ms)`, both ascending.
    records: VecDeque<(i64, i64)>,
    /// Seqs at or below this have no known time. `None` until the first record,
    /// which only sets it: where that fsync's range began is not known.
    floor: Option<i64>,
}

impl AckTimes {
    /// Everything up to `through_seq` that had no time was acknowledged at `at_ms`.
    pub fn record(&self, through_seq: i64, at_ms: i64) {
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        let Some(floor) = ledger.floor else {
            ledger.floor = Some(through_seq);
            return;
        };
        let newest = ledger.records.back().map_or(floor, |&(seq, _)| seq);
        if through_seq <= newest {
            return;
        }
        if ledger.records.len() >= CAPACITY
            && let Some((dropped, _)) = ledger.records.pop_front()
        {
            ledger.floor = Some(dropped);
        }
        ledger.records.push_back((through_seq, at_ms));
    }

    /// When each of `seqs` was acknowledged (Unix ms), in the same order; `None`
    /// where it is not known. One lock for the whole slice.
    pub fn times(&self, seqs: impl IntoIterator<Item = i64>) -> Vec<Option<i64>> {
        let ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        seqs.into_iter().map(|seq| ledger.time_of(seq)).collect()
    }

    /// When the event at `seq` was acknowledged (Unix ms), if known.
    pub fn time_of(&self, seq: i64) -> Option<i64> {
        self.ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .time_of(seq)
    }
}

impl Ledger {
    fn time_of(&self, seq: i64) -> Option<i64> {
        if seq <= self.floor? {
            return None;
        }
        // The first record whose range reaches `seq`.
        let at = self.records.partition_point(|&(through, _)| through < seq);
        self.records.get(at).map(|&(_, ms)| ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_seq_takes_the_time_of_the_first_fsync_that_covered_it() {
        let acks = AckTimes::default();
        // The first record only marks where measuring starts.
        acks.record(10, 1_000);
        acks.record(15, 1_005);
        acks.record(15, 1_006); // nothing new: ignored
        acks.record(12, 1_007); // behind: ignored
        acks.record(40, 1_020);
        assert_eq!(
            acks.times([5, 10, 11, 15, 16, 40, 41]),
            vec![
                None,
                None,
                Some(1_005),
                Some(1_005),
                Some(1_020),
                Some(1_020),
                None
            ]
        );
        assert_eq!(acks.time_of(30), Some(1_020));
    }

    #[test]
    fn the_oldest_records_are_dropped_past_capacity() {
        let acks = AckTimes::default();
        acks.record(0, 0);
        for n in 1..=(CAPACITY as i64 + 2) {
            acks.record(n, n * 10);
        }
        // Two records fell off: seqs 1 and 2 are no longer known.
        assert_eq!(acks.time_of(1), None);
        assert_eq!(acks.time_of(2), None);
        assert_eq!(acks.time_of(3), Some(30));
        let last = CAPACITY as i64 + 2;
        assert_eq!(acks.time_of(last), Some(last * 10));
    }
}
