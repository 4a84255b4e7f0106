//! The store contract suite: every promise of the storage traits as a test, written
//! once against the traits and run against every engine (feature `testkit`).
//!
//! An engine's tests implement [`Engine`] — open each store in a place (a data
//! directory, a database), list the bytes the engine keeps there, and make a place
//! from such bytes (what a crash leaves) — and invoke
//! [`store_contract_tests!`](crate::store_contract_tests), which expands to one
//! `#[test]` per promise, named `<store>::<promise>`:
//!
//! ```ignore
//! struct MyEngine;
//! impl tessera_store::testkit::Engine for MyEngine { /* ... */ }
//! tessera_store::store_contract_tests!(MyEngine);
//! ```
//!
//! Each promise is also a public function (`testkit::event_log::dedup_within_window`
//! and so on) returning `Err` with a message naming what broke.

pub mod activation;
pub mod audiences;
pub mod catalog;
pub mod event_log;
pub mod profiles;

use crate::activation::ActivationStore;
use crate::audiences::AudienceStore;
use crate::profiles::ProfileStore;
use crate::{Catalog, EventLog, StoreResult};

/// What a promise check answers: `Err` says which promise broke and how.
pub type Outcome = Result<(), String>;

/// The hooks an engine gives the contract suite.
///
/// A *place* is where an engine keeps its data: a data directory for SQLite, a
/// database for a server engine. Opening a store twice on one place while the first
/// handle is still open must work as two processes sharing it would (the suite uses
/// that for races between processes); dropping a handle and opening the place again
/// is how the suite checks what survives a restart. Stores are opened with the
/// engine's normal configuration; its `messageId` dedup window must be at least a
/// minute.
pub trait Engine: Sync {
    /// A place: dropped when the test ends (a temporary directory removes itself).
    type Place: Send + Sync;

    /// A fresh, empty place that no other test uses.
    fn fresh_place(&self) -> Result<Self::Place, String>;
    /// Opens the event log of a place.
    fn event_log(&self, place: &Self::Place) -> StoreResult<Box<dyn EventLog>>;
    /// Opens the catalog of a place.
    fn catalog(&self, place: &Self::Place) -> StoreResult<Box<dyn Catalog>>;
    /// Opens the profile store of a place.
    fn profiles(&self, place: &Self::Place) -> StoreResult<Box<dyn ProfileStore>>;
    /// Opens the audience store of a place.
    fn audiences(&self, place: &Self::Place) -> StoreResult<Box<dyn AudienceStore>>;
    /// Opens the activation store of a place.
    fn activation(&self, place: &Self::Place) -> StoreResult<Box<dyn ActivationStore>>;
    /// Every file (or other storage unit) the engine holds for this place, with its
    /// bytes: for SQLite every file of the data directory, write-ahead and
    /// shared-memory files included. Physical deletion is checked against these.
    fn stored_files(&self, place: &Self::Place) -> Result<Vec<(String, Vec<u8>)>, String>;
    /// A fresh place holding exactly these files (as [`Engine::stored_files`] listed
    /// them, taken while stores were still open): what a crash of the process
    /// (`kill -9`) would leave on disk. The suite opens stores on it to check that
    /// what a call acknowledged was in the files when it returned.
    fn place_from_files(&self, files: Vec<(String, Vec<u8>)>) -> Result<Self::Place, String>;
}

/// Runs one promise's outcome: panics with the promise's name and what broke.
pub fn check(promise: &str, outcome: Outcome) {
    if let Err(broken) = outcome {
        panic!("store contract broken: {promise}: {broken}");
    }
}

/// A store call's error as the message of a broken promise.
pub(crate) trait Ctx<T> {
    /// Maps the error to a message saying which call failed.
    fn ctx(self, call: &str) -> Result<T, String>;
}

impl<T> Ctx<T> for StoreResult<T> {
    fn ctx(self, call: &str) -> Result<T, String> {
        self.map_err(|e| format!("{call} failed: {e}"))
    }
}

/// Returns `Err(message)` from the promise check when `cond` is false.
macro_rules! ensure {
    ($cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err(format!($($message)+));
        }
    };
}

/// Returns `Err` naming the promise, what was expected and what was found.
macro_rules! ensure_eq {
    ($found:expr, $expected:expr, $($message:tt)+) => {
        // A match keeps the operands' temporaries alive for the comparison.
        match (&$found, &$expected) {
            (found, expected) => {
                if found != expected {
                    return Err(format!(
                        "{}: expected {:?}, found {:?}",
                        format!($($message)+),
                        expected,
                        found
                    ));
                }
            }
        }
    };
}

pub(crate) use {ensure, ensure_eq};

/// What a crash of the process would leave of `place` now (its stores stay open).
pub(crate) fn crash_copy<E: Engine>(engine: &E, place: &E::Place) -> Result<E::Place, String> {
    engine.place_from_files(engine.stored_files(place)?)
}

/// Names of the files of `place` that contain `marker`.
pub(crate) fn files_holding<E: Engine>(
    engine: &E,
    place: &E::Place,
    marker: &str,
) -> Result<Vec<String>, String> {
    let needle = marker.as_bytes();
    Ok(engine
        .stored_files(place)?
        .into_iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(name, _)| name)
        .collect())
}

/// Checks that the marker is in some file now (else a later check of its absence
/// would prove nothing).
pub(crate) fn ensure_stored<E: Engine>(engine: &E, place: &E::Place, marker: &str) -> Outcome {
    ensure!(
        !files_holding(engine, place, marker)?.is_empty(),
        "the marker {marker:?} is in no stored file before deletion, so its absence after \
         would prove nothing (stored_files must list every file, uncompressed)"
    );
    Ok(())
}

/// Checks that no file of the place holds the marker.
pub(crate) fn ensure_gone<E: Engine>(
    engine: &E,
    place: &E::Place,
    marker: &str,
    after: &str,
) -> Outcome {
    let holding = files_holding(engine, place, marker)?;
    ensure!(
        holding.is_empty(),
        "after {after}, the deleted bytes {marker:?} are still in {holding:?}"
    );
    Ok(())
}

/// Expands to one `#[test]` per promise of the store contract, run against the
/// engine `$engine` (an expression of a type implementing [`testkit::Engine`],
/// evaluated once per test; the tests sit in modules named after the stores, which
/// see the invoking module's items).
///
/// [`testkit::Engine`]: crate::testkit::Engine
#[macro_export]
macro_rules! store_contract_tests {
    ($engine:expr) => {
        $crate::__store_contract_tests! { $engine;
            event_log {
                append_reports_each_batch_and_keeps_log_order,
                scan_filters_and_pages_in_log_order,
                get_returns_log_order_once_each,
                last_seq_is_the_highest_seq,
                acknowledged_events_survive_reopen,
                acknowledged_events_and_deletions_survive_a_crash,
                unsynced_appends_are_durable_after_sync,
                seq_is_never_reused_after_deleting_the_newest,
                dedup_within_window,
                dedup_across_reopen_and_second_handle,
                deleted_events_leave_no_bytes,
                rewritten_events_leave_no_old_bytes,
                find_containing_is_case_insensitive_and_literal,
                readers_see_an_ordered_prefix_while_appending,
                concurrent_appends_are_each_stored_once,
                rejections_are_kept_newest_first,
                size_bytes_counts_what_is_stored,
            }
            catalog {
                settings_set_overwrite_delete_and_prefix,
                setting_or_insert_race_has_one_winner,
                sources_unique_found_and_disabled,
                tokens_created_listed_and_revoked,
                audit_log_in_order_with_filters,
                privacy_request_lifecycle,
                privacy_identifier_leaves_no_bytes,
                suppressions_are_a_set,
                catalog_survives_reopen,
                catalog_survives_a_crash,
            }
            profiles {
                apply_moves_the_checkpoint_with_the_work,
                apply_is_compare_and_set,
                apply_race_has_one_winner,
                failed_work_applies_nothing,
                checkpoint_is_never_seen_without_its_chunk,
                merge_moves_everything_to_the_winner,
                transactions_read_their_own_writes,
                profile_reads_are_ordered,
                reset_empties_everything,
                erase_removes_profiles_and_merged_ones,
                erased_profiles_leave_no_bytes,
                rebuild_hands_seqs_in_log_order,
                canonical_profiles_pages,
                owners_of_events,
                bulk_pages_are_ordered,
                profiles_survive_reopen,
                applied_chunks_survive_a_crash,
            }
            audiences {
                apply_changes_announces_only_real_changes,
                members_and_memberships_are_ordered,
                change_feed_is_ordered_and_filtered,
                erase_profiles_removes_memberships_and_feed,
                feed_seq_is_never_reused_after_erasure,
                erased_memberships_leave_no_bytes,
                changes_survive_a_crash,
            }
            activation {
                enqueue_is_idempotent,
                cursors_move_with_enqueue,
                cursor_is_never_seen_without_its_deliveries,
                due_keeps_per_profile_order,
                record_and_retry_dead,
                deliveries_filter,
                recent_sends_window,
                start_run_once_per_trigger_and_active_run,
                update_run_only_while_active,
                run_reads_and_exit_runs,
                rewrite_payloads_changes_matching_text,
                erase_events_and_profiles,
                erased_deliveries_leave_no_bytes,
                outbox_survives_reopen,
                outbox_survives_a_crash,
            }
        }
    };
}

/// The expansion of [`store_contract_tests!`](crate::store_contract_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __store_contract_tests {
    ($engine:expr; $( $store:ident { $( $promise:ident ),* $(,)? } )*) => {
        $(
            #[allow(unused_imports)]
            mod $store {
                use super::*;
                $(
                    #[test]
                    fn $promise() {
                        $crate::testkit::check(
                            concat!(stringify!($store), "::", stringify!($promise)),
                            $crate::testkit::$store::$promise(&$engine),
                        );
                    }
                )*
            }
        )*
    };
}
