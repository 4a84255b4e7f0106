//! Erasures (GDPR art. 17): queued in the catalog, carried out by the processor
//! thread (or the CLI when no server runs) once the whole log is applied.

use super::*;

/// Creates an erasure request for `identifier`; the processor carries it out.
pub fn request_erasure(
    privacy: &Privacy,
    identifier: &Identifier,
    actor: &str,
) -> StoreResult<PrivacyRequest> {
    let request = PrivacyRequest {
        id: ids::new_privacy_request_id(),
        kind: PrivacyRequestKind::Erasure,
        identifier: Some(identifier.to_string()),
        identifier_hash: privacy.hash(identifier),
        status: "pending".into(),
        actor: actor.to_string(),
        requested_at_ms: chrono::Utc::now().timestamp_millis(),
        completed_at_ms: None,
        result_json: None,
        plan_json: None,
    };
    privacy.catalog.create_privacy_request(&request)?;
    record_audit(
        privacy.catalog.as_ref(),
        actor,
        "privacy.erasure.request",
        &request.id,
        None,
        Some(
            &json!({"identifier": format!("{}:salted-sha256:{}", identifier.id_type, request.identifier_hash)}),
        ),
    );
    Ok(request)
}

/// Where erased profiles leave the audience state: the live engine (server) or
/// the store alone (CLI; the index is rebuilt when the server starts).
pub enum AudienceSide<'a> {
    /// The running engine: index, memberships and store.
    Engine(&'a AudienceEngine),
    /// Only the stored memberships and change feed.
    Store(&'a dyn AudienceStore),
}

/// Why an erasure could not complete (it stays open and is retried).
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The processor failed.
    #[error(transparent)]
    Processor(#[from] ProcessorError),
    /// The audience engine failed.
    #[error("{0}")]
    Audiences(String),
}

/// Rounds of "suppress what is known, then apply the log" before an erasure trusts
/// that it knows every identifier of the person.
pub(super) const MAX_SETTLE_ROUNDS: usize = 5;

/// The live activation side of an erasure: the outbox, and the fan-out to pause.
pub struct ActivationSide<'a> {
    /// The outbox and journey runs.
    pub store: &'a dyn ActivationStore,
    /// Excludes fan-out rounds while held (`None` when no fan-out runs: the CLI).
    pub pause: Option<&'a std::sync::Mutex<()>>,
    /// Drops the chunks handed to the fan-out but not yet taken (they may hold the
    /// person's events): called as each erasure starts (`None`: the CLI).
    pub forget_handed: Option<&'a dyn Fn()>,
}

/// Carries out every open erasure request. `catch_up(seq)` applies the log at least
/// up to `seq` (so every event stored before the suppression is attributed).
/// Returns how many requests completed.
///
/// Each request: (1) suppress the identifiers known, apply the log up to what was
/// stored meanwhile, and repeat until no new identifier turns up; (2) keep the plan
/// (profiles, identifiers, events) with the request, so a retry after a crash erases
/// the whole person even though the profile is gone; (3) with fan-out paused, delete
/// the derived copies (outbox, journey runs, memberships, index), then the log and
/// the profiles; (4) clear the request's identifier and plan, truncate the catalog's
/// write-ahead file, and only then mark it completed.
pub fn run_open_erasures(
    processor: &Processor,
    privacy: &Privacy,
    audiences: &AudienceSide<'_>,
    activation: Option<&ActivationSide<'_>>,
    catch_up: &mut dyn FnMut(i64) -> Result<(), ErasureError>,
) -> Result<usize, ErasureError> {
    let mut completed = 0;
    for request in privacy.catalog.open_privacy_requests()? {
        if request.kind != PrivacyRequestKind::Erasure {
            continue;
        }
        if request.status == "purging" {
            // Everything but the catalog's write-ahead file was done.
            privacy.catalog.purge_deleted()?;
            privacy.catalog.update_privacy_request(
                &request.id,
                "completed",
                None,
                request.completed_at_ms,
            )?;
            completed += 1;
            continue;
        }
        let Some(text) = request.identifier.clone() else {
            continue;
        };
        let rules = processor.compiled_rules();
        let identifier = match parse_identifier(&rules, &text) {
            Ok(identifier) => identifier,
            Err(error) => {
                // Rules changed since it was accepted: it can never run.
                let result = json!({"error": error.message});
                privacy.catalog.update_privacy_request(
                    &request.id,
                    "failed",
                    Some(&result.to_string()),
                    Some(chrono::Utc::now().timestamp_millis()),
                )?;
                continue;
            }
        };
        privacy
            .catalog
            .update_privacy_request(&request.id, "running", None, None)?;
        // Events handed to the fan-out in memory may be the person's: from now on it
        // reads the log, from which they are deleted below.
        if let Some(forget) = activation.and_then(|a| a.forget_handed) {
            forget();
        }

        // (1) + (2): settle the plan under suppression; a retry starts from the plan
        // of the earlier attempt.
        let mut plan: ErasurePlan = request
            .plan_json
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        let mut suppressed: Vec<Identifier> = Vec::new();
        let mut wanted = vec![identifier.clone()];
        wanted.extend(plan.identifiers());
        for _ in 0..MAX_SETTLE_ROUNDS {
            let new: Vec<Identifier> = wanted
                .iter()
                .filter(|i| !suppressed.contains(i))
                .cloned()
                .collect();
            if new.is_empty() {
                break;
            }
            privacy.suppress(&new, &request.id)?;
            suppressed.extend(new);
            catch_up(processor_fence(processor)?)?;
            let fresh = processor.plan_erasure(&identifier)?;
            plan.merge(fresh);
            wanted = plan.identifiers();
        }
        privacy.suppress(&plan.identifiers(), &request.id)?;
        let plan_text =
            serde_json::to_string(&plan).map_err(|e| StoreError::Engine(e.to_string()))?;
        privacy.catalog.set_privacy_plan(&request.id, &plan_text)?;

        // (3) derived copies first, then the log and the profiles.
        let identifiers = plan.identifiers();
        let outcome = {
            let _paused = activation
                .and_then(|a| a.pause)
                .map(|lock| lock.lock().unwrap_or_else(|p| p.into_inner()));
            if let Some(side) = activation {
                let store = side.store;
                store.erase_profiles(&plan.profiles)?;
                store.erase_events(&plan.seqs)?;
                // Other people's queued deliveries that copied an identifier field.
                store.rewrite_payloads(
                    &plan.needles,
                    &mut |payload| {
                        let mut value: Value = serde_json::from_str(payload).ok()?;
                        let mut changed = false;
                        for key in ["body", "line"] {
                            if let Some(message) = value.get_mut(key).and_then(Value::as_object_mut)
                            {
                                changed |= redact_identifiers(&rules, message, &identifiers);
                            }
                        }
                        changed.then(|| value.to_string())
                    },
                    &mut |trigger| {
                        let mut value: Value = serde_json::from_str(trigger).ok()?;
                        let message = value.as_object_mut()?;
                        redact_identifiers(&rules, message, &identifiers).then(|| value.to_string())
                    },
                )?;
                store.purge_deleted()?;
            }
            match audiences {
                AudienceSide::Engine(engine) => engine
                    .erase_profiles(&plan.profiles)
                    .map_err(|e| ErasureError::Audiences(e.to_string()))?,
                AudienceSide::Store(store) => {
                    store.erase_profiles(&plan.profiles)?;
                    store.purge_deleted()?;
                }
            }
            processor.apply_erasure(&plan)?
        };
        if let AudienceSide::Engine(engine) = audiences
            && !outcome.rebuilt.is_empty()
        {
            engine
                .reload_profiles(&outcome.rebuilt)
                .map_err(|e| ErasureError::Audiences(e.to_string()))?;
        }

        // (4) the catalog last: identifier and plan cleared, then its WAL truncated.
        let result = outcome_json(&plan, &outcome);
        let now = chrono::Utc::now().timestamp_millis();
        privacy.catalog.update_privacy_request(
            &request.id,
            "purging",
            Some(&result.to_string()),
            Some(now),
        )?;
        record_audit(
            privacy.catalog.as_ref(),
            &request.actor,
            "privacy.erasure.complete",
            &request.id,
            None,
            Some(&result),
        );
        privacy.catalog.purge_deleted()?;
        privacy
            .catalog
            .update_privacy_request(&request.id, "completed", None, Some(now))?;
        tracing::info!(
            request = %request.id,
            profiles = plan.profiles.len(),
            events_deleted = outcome.events_deleted,
            events_redacted = outcome.events_redacted,
            "erasure completed"
        );
        completed += 1;
    }
    Ok(completed)
}

/// The log position the processor must reach: everything stored so far.
pub(super) fn processor_fence(processor: &Processor) -> Result<i64, ErasureError> {
    Ok(processor.log_last_seq()?)
}

pub(super) fn outcome_json(plan: &ErasurePlan, outcome: &ErasureOutcome) -> Value {
    let identifiers = plan.identifiers();
    let mut types: Vec<&str> = identifiers.iter().map(|i| i.id_type.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    json!({
        "profilesErased": plan.profiles.len(),
        "identifiersSuppressed": identifiers.len(),
        "identifierTypes": types,
        "eventsDeleted": plan.seqs.len(),
        "eventsRedacted": outcome.events_redacted,
        "profilesRebuilt": outcome.rebuilt.len(),
    })
}
