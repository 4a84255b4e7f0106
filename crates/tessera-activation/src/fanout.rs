//! Fan-out: events and audience changes become deliveries and journey steps.
//!
//! A thread follows two cursors kept in the activation store: the event log (only as
//! far as the processor has applied it, so each event's profile is known) and the
//! audience change feed. The processor hands each chunk it applied — the events with
//! the profile each went to — to [`Activation::hand_applied`]; a round takes its
//! events from there, so they are not read back from the log nor their owners looked
//! up again. The log and the identity lookup are the fallback for what was not
//! handed over (after a restart, a chunk applied by an erasure's catch-up or by
//! another process, or more than [`MAX_QUEUED_EVENTS`] waiting): the cursors, not the
//! hand-over, are what recovery relies on. Each round it
//! 1. starts journeys the round's events and changes trigger, and advances runs
//!    waiting for one of those events (a run is keyed by its trigger, so a round
//!    repeated after a crash starts nothing twice);
//! 2. writes one delivery per matching destination — idempotency key
//!    `e<seq>:<destination>` or `c<seq>:<destination>` — together with the new
//!    cursors, in one transaction;
//! 3. advances runs whose wait is over.

use crate::Activation;
use crate::config::{CompiledJourney, Destination, Instruction, Reentry, parse_duration_ms};
use crate::render::RenderError;
use crate::senders::{RENDER_ERROR_KEY, render_payload};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tessera_store::activation::{DeliveryStatus, JourneyRun, NewDelivery};
use tessera_store::audiences::StoredChange;
use tessera_store::profiles::ProfileId;
use tessera_store::{EventFilter, StoreError, StoredEvent};

/// Events and changes read per round.
const ROUND: usize = 500;
/// Most instructions one run executes at once (guards against loops).
const MAX_STEPS: usize = 1_000;
/// A round that has taken this long handles no further event or change (the rest
/// wait for the next round), so templates near their budget cannot keep one round
/// — and a shutdown waiting for it — going for long.
const ROUND_TIME: Duration = Duration::from_secs(1);

/// Most events of handed-over chunks kept waiting for the fan-out; beyond that the
/// queue is dropped and the fan-out reads those events from the log.
pub const MAX_QUEUED_EVENTS: usize = 100_000;
/// Longest chain of merges followed to find an event's profile now.
const MAX_MERGE_CHAIN: usize = 64;

/// A chunk the processor applied, as the fan-out needs it.
#[derive(Debug, Clone, Default)]
pub struct AppliedChunk {
    /// The checkpoint before the chunk: its events are the `seq`s in
    /// `(after_seq, through_seq]`, every one of them in `events`.
    pub after_seq: i64,
    /// The checkpoint after the chunk.
    pub through_seq: i64,
    /// The chunk's events in log order with the profile each was attributed to
    /// (`None`: the event has no identifier).
    pub events: Vec<(StoredEvent, Option<ProfileId>)>,
    /// Merges the chunk made, (winner, loser) in order.
    pub merges: Vec<(ProfileId, ProfileId)>,
}

/// Handed-over chunks in log order, each following the one before.
#[derive(Debug, Default)]
pub struct AppliedQueue {
    chunks: std::collections::VecDeque<Arc<AppliedChunk>>,
    events: usize,
}

/// An event of a round and its owner when the processor handed it over.
struct RoundEvent {
    event: StoredEvent,
    /// `Some`: the owner is known (from the hand-over); `None`: look it up.
    owner: Option<Option<ProfileId>>,
}

/// Finds the profile a message belongs to (the processor's identity resolution).
/// A store failure fails the round (it is retried), so no event is taken for one
/// without an owner.
pub type Resolver =
    dyn Fn(&Map<String, Value>) -> Result<Option<ProfileId>, StoreError> + Send + Sync;

/// The name journeys and filters match: track `event`, page/screen `name`.
fn event_name(message: &Map<String, Value>) -> Option<&str> {
    match message.get("type").and_then(Value::as_str) {
        Some("track") => message.get("event").and_then(Value::as_str),
        Some("page" | "screen") => message.get("name").and_then(Value::as_str),
        _ => None,
    }
}

/// Whether a message passes a destination's filter on what the message itself says
/// (type, event name, source); the audience part needs its owner (`member_matches`).
fn message_matches(
    destination: &Destination,
    message: &Map<String, Value>,
    source_key: i64,
    sources: &HashMap<i64, String>,
) -> bool {
    let filter = &destination.filter;
    let kind = message.get("type").and_then(Value::as_str).unwrap_or("");
    if !filter.types.is_empty() && !filter.types.iter().any(|t| t == kind) {
        return false;
    }
    if !filter.events.is_empty() {
        let name = event_name(message).unwrap_or("");
        if !filter.events.iter().any(|e| e == name) {
            return false;
        }
    }
    if !filter.sources.is_empty() {
        let id = sources.get(&source_key).map(String::as_str).unwrap_or("");
        if !filter.sources.iter().any(|s| s == id) {
            return false;
        }
    }
    true
}

/// Template contexts built in one round (a profile's traits are read once).
struct Contexts {
    sources: HashMap<i64, String>,
    cache: HashMap<ProfileId, Value>,
}

/// Deliveries being built in one round, with per-round frequency-cap counts.
struct Batch {
    deliveries: Vec<NewDelivery>,
    touched: HashSet<String>,
    sent: HashMap<(ProfileId, String), i64>,
}

impl Activation {
    /// Hands a chunk the processor applied to the fan-out (and wakes it). Chunks must
    /// come in log order; one that does not follow the last queued one, or one that
    /// would make the queue hold more than [`MAX_QUEUED_EVENTS`], replaces the queue
    /// (the fan-out reads what it misses from the log).
    pub fn hand_applied(&self, chunk: AppliedChunk) {
        {
            let mut queue = self.applied.lock().unwrap_or_else(|p| p.into_inner());
            let follows = queue
                .chunks
                .back()
                .is_none_or(|last| last.through_seq == chunk.after_seq);
            if !follows || queue.events + chunk.events.len() > MAX_QUEUED_EVENTS {
                queue.chunks.clear();
                queue.events = 0;
            }
            queue.events += chunk.events.len();
            queue.chunks.push_back(Arc::new(chunk));
        }
        self.wake_fanout();
    }

    /// Drops every handed-over chunk: their owners or payloads may no longer hold (an
    /// erasure is about to delete a person). The fan-out reads the log instead.
    pub fn forget_applied(&self) {
        let mut queue = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        queue.chunks.clear();
        queue.events = 0;
    }

    /// Up to `limit` handed-over events after `cursor` (and at most through
    /// `applied`), with their owners now (merges made since followed); when the queue
    /// does not start at `cursor`, `Err` with where it starts (events up to there are
    /// read from the log).
    fn take_applied(
        &self,
        cursor: i64,
        applied: i64,
        limit: usize,
    ) -> Result<Vec<RoundEvent>, Option<i64>> {
        let mut queue = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(front) = queue.chunks.front() {
            if front.through_seq > cursor {
                break;
            }
            let n = front.events.len();
            queue.chunks.pop_front();
            queue.events -= n;
        }
        let Some(front) = queue.chunks.front() else {
            return Err(None);
        };
        if front.after_seq > cursor {
            return Err(Some(front.after_seq));
        }
        // Where each profile merged into since: the owner an event has now.
        let mut merged_into: HashMap<ProfileId, ProfileId> = HashMap::new();
        for chunk in &queue.chunks {
            for (winner, loser) in &chunk.merges {
                merged_into.insert(*loser, *winner);
            }
        }
        let now_owner = |mut profile: ProfileId| {
            for _ in 0..MAX_MERGE_CHAIN {
                match merged_into.get(&profile) {
                    Some(winner) if *winner != profile => profile = *winner,
                    _ => break,
                }
            }
            profile
        };
        let mut taken = Vec::new();
        let mut expected_after = front.after_seq;
        'chunks: for chunk in &queue.chunks {
            if chunk.after_seq != expected_after {
                break;
            }
            expected_after = chunk.through_seq;
            for (event, owner) in &chunk.events {
                if event.seq <= cursor {
                    continue;
                }
                if event.seq > applied || taken.len() >= limit {
                    break 'chunks;
                }
                taken.push(RoundEvent {
                    event: event.clone(),
                    owner: Some(owner.map(now_owner)),
                });
            }
        }
        Ok(taken)
    }

    /// Waits until [`Activation::wake_fanout`] is called or `timeout` passes.
    pub fn wait_for_work(&self, timeout: Duration) {
        let (flag, signal) = &self.fanout_wake;
        let mut woken = flag.lock().unwrap_or_else(|p| p.into_inner());
        if !*woken {
            woken = signal
                .wait_timeout(woken, timeout)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        *woken = false;
    }

    /// One fan-out round; returns how many events, changes and runs it handled.
    pub fn round(&self, resolve: &Resolver) -> Result<usize, StoreError> {
        // An erasure waits for the round to end (and rounds wait for it), so no
        // round writes the erased person back after their rows were deleted.
        let _round = self.pause();
        let applied = self.stores.profiles.checkpoint()?;
        let destinations = self.destinations();
        let journeys = self.journeys();
        let events_cursor = self.store.cursor("events")?;
        // Events matter to a destination that takes them and to journeys (triggers,
        // runs waiting for an event). With neither, the cursor just follows the
        // processor: no event is read, resolved or matched for nothing.
        let events_matter =
            !journeys.is_empty() || destinations.iter().any(|d| d.enabled && d.takes_events());
        let mut events: Vec<RoundEvent> = Vec::new();
        if events_matter {
            match self.take_applied(events_cursor, applied, ROUND) {
                Ok(handed) => events = handed,
                Err(handed_from) => {
                    let until = handed_from.map_or(applied, |from| from.min(applied));
                    self.stores.log.scan(
                        &EventFilter {
                            after_seq: Some(events_cursor),
                            limit: Some(ROUND),
                            ..EventFilter::default()
                        },
                        &mut |event| {
                            // Events handed over are taken from there next round.
                            if event.seq <= until {
                                events.push(RoundEvent { event, owner: None });
                            }
                            Ok(())
                        },
                    )?;
                }
            }
        } else {
            // The cursor just follows the processor: nothing handed over is needed.
            self.forget_applied();
        }
        let changes =
            self.stores
                .audiences
                .store()
                .changes(self.store.cursor("changes")?, None, ROUND)?;
        let sources = self.source_ids()?;
        let now = self.now_ms();
        let mut batch = Batch {
            deliveries: Vec::new(),
            touched: HashSet::new(),
            sent: HashMap::new(),
        };
        let mut contexts = Contexts {
            sources: sources.clone(),
            cache: HashMap::new(),
        };
        let started = std::time::Instant::now();
        let out_of_time = || started.elapsed() >= ROUND_TIME || self.is_stopping();

        // Names of events a journey starts on or waits for: only those need the
        // journeys' runs looked up.
        let journey_events: HashSet<&str> =
            journeys
                .iter()
                .flat_map(|j| {
                    j.journey.trigger.event.as_deref().into_iter().chain(
                        j.program.iter().filter_map(|step| match step {
                            Instruction::WaitFor { event, .. } => Some(event.as_str()),
                            _ => None,
                        }),
                    )
                })
                .collect();
        let mut handled_events = 0;
        for RoundEvent { event, owner } in &events {
            if handled_events > 0 && out_of_time() {
                break;
            }
            handled_events += 1;
            let Ok(Value::Object(message)) = serde_json::from_str::<Value>(&event.payload) else {
                continue;
            };
            let name = event_name(&message).map(str::to_owned);
            // Before the owner is resolved (an identity lookup): most events of a busy
            // site are for no journey and no destination.
            let for_journeys = name
                .as_deref()
                .is_some_and(|name| journey_events.contains(name));
            let candidates: Vec<&Arc<Destination>> = destinations
                .iter()
                .filter(|d| {
                    d.enabled
                        && d.takes_events()
                        && message_matches(d, &message, event.source_key, &sources)
                })
                .collect();
            if !for_journeys && candidates.is_empty() {
                continue;
            }
            let owner = match owner {
                Some(known) => *known,
                None => resolve(&message)?,
            };
            let message = Value::Object(message);
            if let (true, Some(owner), Some(name)) = (for_journeys, owner, &name) {
                for journey in journeys.iter().filter(|j| {
                    j.journey.enabled && j.journey.trigger.event.as_deref() == Some(name)
                }) {
                    self.trigger(
                        journey,
                        owner,
                        &format!("event:{}", event.seq),
                        &message,
                        now,
                        &mut batch,
                    )?;
                }
                for mut run in self.family_active_runs(owner)? {
                    if run.waiting_event.as_deref() == Some(name.as_str()) {
                        let Some(journey) = self.journey(&run.journey) else {
                            continue;
                        };
                        run.waiting_event = None;
                        run.wake_at_ms = None;
                        run.step += 1;
                        push_history(
                            &mut run,
                            json!({"action": "event", "event": name, "at": now}),
                        );
                        self.execute(&journey, &mut run, now, &mut batch)?;
                    }
                }
            }
            for destination in candidates {
                if !self.member_matches(destination, owner)? {
                    continue;
                }
                let context = self.context_of(owner, &mut contexts)?;
                let key = format!("e{}:{}", event.seq, destination.id);
                self.add_delivery(
                    destination,
                    owner,
                    &context,
                    &message,
                    &Map::new(),
                    key,
                    self.observer
                        .acknowledged_at_ms(event.seq)
                        .unwrap_or(event.received_at_ms),
                    None,
                    &mut batch,
                )?;
            }
        }

        let mut handled_changes = 0;
        for change in &changes {
            if (handled_events < events.len() || handled_changes > 0) && out_of_time() {
                break;
            }
            handled_changes += 1;
            let owner = change.change.profile_id;
            let message = self.change_message(change)?;
            if change.change.entered {
                for journey in journeys.iter().filter(|j| {
                    j.journey.enabled
                        && j.journey.trigger.audience_entered.as_deref()
                            == Some(change.change.audience.as_str())
                }) {
                    self.trigger(
                        journey,
                        owner,
                        &format!("change:{}", change.seq),
                        &message,
                        now,
                        &mut batch,
                    )?;
                }
            }
            for destination in destinations
                .iter()
                .filter(|d| d.enabled && d.filter.audiences.contains(&change.change.audience))
            {
                let context = self.context_of(Some(owner), &mut contexts)?;
                let key = format!("c{}:{}", change.seq, destination.id);
                self.add_delivery(
                    destination,
                    Some(owner),
                    &context,
                    &message,
                    &Map::new(),
                    key,
                    change.change.at_ms,
                    None,
                    &mut batch,
                )?;
            }
        }

        let mut cursors: Vec<(&str, i64)> = Vec::new();
        if let Some(last) = events[..handled_events].last() {
            cursors.push(("events", last.event.seq));
        } else if !events_matter && applied > events_cursor {
            cursors.push(("events", applied));
        }
        if let Some(last) = changes[..handled_changes].last() {
            cursors.push(("changes", last.seq));
        }
        // Rows of events the processor had not applied yet are read again next round.
        let handled = handled_events + handled_changes;
        if !batch.deliveries.is_empty() || !cursors.is_empty() {
            self.store.enqueue(&batch.deliveries, &cursors)?;
        }

        let mut woken = 0;
        for mut run in self.store.due_runs(self.now_ms(), ROUND)? {
            let Some(journey) = self.journey(&run.journey) else {
                continue;
            };
            run.wake_at_ms = None;
            self.execute(&journey, &mut run, self.now_ms(), &mut batch)?;
            woken += 1;
        }
        for id in &batch.touched {
            self.notify(id);
        }
        Ok(handled + woken)
    }

    /// Whether `owner` is in the audience the destination's filter names (if any).
    fn member_matches(
        &self,
        destination: &Destination,
        owner: Option<ProfileId>,
    ) -> Result<bool, StoreError> {
        let Some(audience) = &destination.filter.member_of else {
            return Ok(true);
        };
        let Some(owner) = owner else {
            return Ok(false);
        };
        Ok(self
            .stores
            .audiences
            .store()
            .memberships(owner)?
            .iter()
            .any(|m| m.audience == *audience))
    }

    /// A canonical profile and the profiles merged into it: runs and sends made
    /// before a merge are still theirs.
    fn family(&self, owner: ProfileId) -> Result<Vec<ProfileId>, StoreError> {
        let mut family = vec![owner];
        family.extend(self.stores.profiles.merged_members(owner)?);
        Ok(family)
    }

    fn family_active_runs(&self, owner: ProfileId) -> Result<Vec<JourneyRun>, StoreError> {
        let mut runs = Vec::new();
        for member in self.family(owner)? {
            runs.extend(self.store.active_runs(member)?);
        }
        Ok(runs)
    }

    fn source_ids(&self) -> Result<HashMap<i64, String>, StoreError> {
        Ok(self
            .stores
            .catalog
            .list_sources()?
            .into_iter()
            .map(|s| (s.key, s.id))
            .collect())
    }

    /// The template context of a profile: id, traits, where each trait came from,
    /// computed traits.
    fn context_of(
        &self,
        owner: Option<ProfileId>,
        contexts: &mut Contexts,
    ) -> Result<Value, StoreError> {
        let Some(owner) = owner else {
            return Ok(json!({"profile": null, "traits": {}, "traitSources": {}, "computed": {}}));
        };
        if let Some(context) = contexts.cache.get(&owner) {
            return Ok(context.clone());
        }
        let sources = &contexts.sources;
        let mut traits = Map::new();
        let mut trait_sources = Map::new();
        for t in self.stores.profiles.traits(owner)? {
            let value = serde_json::from_str(&t.value_json).unwrap_or(Value::Null);
            trait_sources.insert(
                t.name.clone(),
                json!([sources.get(&t.source_key).cloned().unwrap_or_default()]),
            );
            traits.insert(t.name, value);
        }
        let computed = if self.stores.audiences.is_ready() {
            Value::Object(self.stores.audiences.computed_values(owner))
        } else {
            json!({})
        };
        let context = json!({
            "profile": {"id": owner},
            "traits": traits,
            "traitSources": trait_sources,
            "computed": computed,
        });
        contexts.cache.insert(owner, context.clone());
        Ok(context)
    }

    /// `Audience Entered` / `Audience Exited` as a Segment track message.
    fn change_message(&self, change: &StoredChange) -> Result<Value, StoreError> {
        let c = &change.change;
        let user_id = self
            .stores
            .profiles
            .identities(c.profile_id)?
            .into_iter()
            .find(|l| l.id_type == "user_id")
            .map(|l| l.value);
        let timestamp = chrono::DateTime::from_timestamp_millis(c.at_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        let mut message = json!({
            "type": "track",
            "event": if c.entered { "Audience Entered" } else { "Audience Exited" },
            "messageId": format!("audience-change-{}", change.seq),
            "timestamp": timestamp,
            "properties": {"audience_key": c.audience, "profile_id": c.profile_id, "reason": c.reason},
            "context": {"library": {"name": "tessera-audiences"}},
        });
        match user_id {
            Some(user_id) => message["userId"] = json!(user_id),
            None => message["anonymousId"] = json!(format!("profile-{}", c.profile_id)),
        }
        Ok(message)
    }

    /// Adds a delivery to the round: pending, or blocked (consent, frequency cap,
    /// nothing to send) — blocked ones are stored too, so they are counted and visible.
    #[allow(clippy::too_many_arguments)]
    fn add_delivery(
        &self,
        destination: &Destination,
        owner: Option<ProfileId>,
        context: &Value,
        message: &Value,
        overrides: &Map<String, Value>,
        idempotency_key: String,
        origin_ms: i64,
        journey: Option<&str>,
        batch: &mut Batch,
    ) -> Result<(), StoreError> {
        let channel = destination.kind.channel().to_string();
        let mut full = context.clone();
        full["event"] = message.clone();
        if let Some(journey) = journey {
            full["journey"] = json!({"key": journey});
        }
        let mut status = DeliveryStatus::Pending;
        let mut reason = None;
        let mut payload = String::from("null");
        if !self.consent_allows(owner, destination.purpose.as_deref())? {
            status = DeliveryStatus::Blocked;
            reason = Some(format!(
                "no consent for {}",
                destination.purpose.as_deref().unwrap_or("its purpose")
            ));
        } else if let (Some(cap), Some(profile)) = (&destination.delivery.frequency_cap, owner) {
            let window = parse_duration_ms(&cap.window).unwrap_or(0);
            let key = (profile, channel.clone());
            let earlier = match batch.sent.get(&key) {
                Some(n) => *n,
                None => {
                    let since = self.now_ms().saturating_sub(window);
                    let mut sent = 0;
                    for member in self.family(profile)? {
                        sent += self.store.recent_sends(member, &channel, since)?;
                    }
                    sent
                }
            };
            if earlier >= i64::from(cap.max) {
                status = DeliveryStatus::Blocked;
                reason = Some(format!(
                    "frequency cap: {} {channel} per {}",
                    cap.max, cap.window
                ));
            } else {
                batch.sent.insert(key, earlier + 1);
            }
        }
        if status == DeliveryStatus::Pending {
            match render_payload(destination, &full, message, overrides) {
                Ok(rendered) => payload = rendered.to_string(),
                // Queued as pending with the error in place of the message: the
                // destination's worker fails it (dead, with the error) without
                // sending, like any delivery that can never work.
                Err(error @ RenderError::Budget(_)) => {
                    payload = json!({ RENDER_ERROR_KEY: error.to_string() }).to_string();
                }
                Err(error) => {
                    status = DeliveryStatus::Blocked;
                    reason = Some(format!("nothing to send: {error}"));
                }
            }
        }
        if let Some(reason) = &reason {
            self.observer.blocked(&destination.id, reason);
        }
        batch.touched.insert(destination.id.clone());
        batch.deliveries.push(NewDelivery {
            destination: destination.id.clone(),
            profile_id: owner,
            idempotency_key,
            channel,
            purpose: destination.purpose.clone(),
            payload,
            origin_ms,
            status,
            reason,
            journey: journey.map(str::to_owned),
            queued_ms: self.now_ms(),
        });
        Ok(())
    }

    /// Starts a journey for a person, if its re-entry rule lets them in.
    fn trigger(
        &self,
        journey: &CompiledJourney,
        owner: ProfileId,
        trigger_key: &str,
        message: &Value,
        now: i64,
        batch: &mut Batch,
    ) -> Result<(), StoreError> {
        let key = &journey.journey.key;
        let mut last: Option<JourneyRun> = None;
        for member in self.family(owner)? {
            if let Some(run) = self.store.last_run(key, member)?
                && last
                    .as_ref()
                    .is_none_or(|l| run.entered_ms > l.entered_ms || run.state == "active")
            {
                last = Some(run);
            }
        }
        if let Some(last) = last {
            if last.state == "active" {
                return Ok(());
            }
            match journey.reentry {
                Reentry::Never => return Ok(()),
                Reentry::Always => {}
                Reentry::After(ms) if now - last.entered_ms < ms => return Ok(()),
                Reentry::After(_) => {}
            }
        }
        let mut run = JourneyRun {
            id: 0,
            journey: key.clone(),
            profile_id: owner,
            state: "active".into(),
            step: 0,
            wake_at_ms: None,
            waiting_event: None,
            entered_ms: now,
            updated_ms: now,
            trigger_key: trigger_key.to_string(),
            trigger_json: message.to_string(),
            history_json: json!([{"action": "entered", "trigger": trigger_key, "at": now}])
                .to_string(),
        };
        let mut own = Batch {
            deliveries: Vec::new(),
            touched: HashSet::new(),
            sent: batch.sent.clone(),
        };
        self.run_program(journey, &mut run, now, &mut own)?;
        // Counts of sends only count when the run (and its sends) was written.
        if self.store.start_run(&run, &own.deliveries)?.is_some() {
            batch.touched.extend(own.touched);
            batch.sent = own.sent;
        }
        Ok(())
    }

    /// Continues a run and saves it with what it sent.
    fn execute(
        &self,
        journey: &CompiledJourney,
        run: &mut JourneyRun,
        now: i64,
        batch: &mut Batch,
    ) -> Result<(), StoreError> {
        let mut own = Batch {
            deliveries: Vec::new(),
            touched: HashSet::new(),
            sent: batch.sent.clone(),
        };
        self.run_program(journey, run, now, &mut own)?;
        run.updated_ms = now;
        // A run a journey edit ended meanwhile is not revived (nor are its sends).
        if self.store.update_run(run, &own.deliveries)? {
            batch.touched.extend(own.touched);
            batch.sent = own.sent;
        }
        Ok(())
    }

    /// Executes instructions from the run's position until it waits or ends.
    fn run_program(
        &self,
        journey: &CompiledJourney,
        run: &mut JourneyRun,
        now: i64,
        batch: &mut Batch,
    ) -> Result<(), StoreError> {
        // The person may have been merged into another profile since they entered.
        let profile = match self.stores.profiles.profile(run.profile_id)? {
            Some(summary) => summary.merged_into.unwrap_or(run.profile_id),
            None => {
                run.state = "exited".into();
                push_history(
                    run,
                    json!({"action": "exit", "reason": "profile gone", "at": now}),
                );
                return Ok(());
            }
        };
        let trigger: Value = serde_json::from_str(&run.trigger_json).unwrap_or(Value::Null);
        for _ in 0..MAX_STEPS {
            let step = run.step as usize;
            let Some(instruction) = journey.program.get(step) else {
                run.state = "completed".into();
                push_history(run, json!({"action": "completed", "at": now}));
                return Ok(());
            };
            match instruction {
                Instruction::Wait(ms) => {
                    run.wake_at_ms = Some(now.saturating_add(*ms));
                    run.step += 1;
                    push_history(
                        run,
                        json!({"step": step, "action": "wait", "until": now.saturating_add(*ms), "at": now}),
                    );
                    return Ok(());
                }
                Instruction::WaitFor {
                    event,
                    timeout_ms,
                    on_timeout,
                } => {
                    if run.waiting_event.take().is_some() {
                        // Woken by the clock: the event did not come in time.
                        run.step = u32::try_from(*on_timeout).unwrap_or(u32::MAX);
                        push_history(
                            run,
                            json!({"step": step, "action": "timeout", "event": event, "at": now}),
                        );
                        continue;
                    }
                    run.waiting_event = Some(event.clone());
                    run.wake_at_ms = Some(now.saturating_add(*timeout_ms));
                    push_history(
                        run,
                        json!({"step": step, "action": "waiting", "event": event, "until": now.saturating_add(*timeout_ms), "at": now}),
                    );
                    return Ok(());
                }
                Instruction::Branch {
                    condition,
                    otherwise,
                } => match self.stores.audiences.holds_for(condition, profile) {
                    Some(holds) => {
                        run.step = if holds {
                            run.step + 1
                        } else {
                            u32::try_from(*otherwise).unwrap_or(u32::MAX)
                        };
                        push_history(
                            run,
                            json!({"step": step, "action": "branch", "holds": holds, "at": now}),
                        );
                    }
                    None => {
                        // The audience index is being built: look again shortly.
                        run.wake_at_ms = Some(now + 1_000);
                        return Ok(());
                    }
                },
                Instruction::Send(send) => {
                    let Some(destination) = self.destination(&send.destination) else {
                        push_history(
                            run,
                            json!({"step": step, "action": "send", "destination": send.destination, "error": "destination deleted", "at": now}),
                        );
                        run.step += 1;
                        continue;
                    };
                    let mut contexts = Contexts {
                        sources: self.source_ids()?,
                        cache: HashMap::new(),
                    };
                    let context = self.context_of(Some(profile), &mut contexts)?;
                    let key = format!(
                        "j:{}:{}:{}:{step}",
                        journey.journey.key, run.profile_id, run.trigger_key
                    );
                    self.add_delivery(
                        &destination,
                        Some(profile),
                        &context,
                        &trigger,
                        &send.overrides,
                        key,
                        now,
                        Some(&journey.journey.key),
                        batch,
                    )?;
                    let status = batch
                        .deliveries
                        .last()
                        .map(|d| d.status.as_str())
                        .unwrap_or("pending");
                    push_history(
                        run,
                        json!({"step": step, "action": "send", "destination": send.destination, "status": status, "at": now}),
                    );
                    run.step += 1;
                }
                Instruction::Jump(to) => run.step = u32::try_from(*to).unwrap_or(u32::MAX),
                Instruction::Exit => {
                    run.state = "exited".into();
                    push_history(run, json!({"step": step, "action": "exit", "at": now}));
                    return Ok(());
                }
            }
        }
        run.state = "exited".into();
        push_history(
            run,
            json!({"action": "exit", "reason": "too many steps at once", "at": now}),
        );
        Ok(())
    }
}

fn push_history(run: &mut JourneyRun, entry: Value) {
    let mut history: Vec<Value> = serde_json::from_str(&run.history_json).unwrap_or_default();
    history.push(entry);
    run.history_json = Value::Array(history).to_string();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(filter: Value) -> Destination {
        serde_json::from_value(json!({
            "id": "hook", "type": "webhook", "settings": {"url": "http://127.0.0.1:9/in"},
            "filter": filter,
        }))
        .unwrap_or_else(|e| panic!("destination: {e}"))
    }

    fn message(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn a_message_passes_the_filter_on_its_type_name_and_source_without_its_owner() {
        let sources = HashMap::from([(1, "web".to_owned()), (2, "shop".to_owned())]);
        let order = message(json!({"type": "track", "event": "Order Completed"}));
        let page = message(json!({"type": "page", "name": "Home"}));
        let identify = message(json!({"type": "identify", "traits": {}}));

        let any = destination(json!({}));
        assert!(message_matches(&any, &order, 1, &sources));
        assert!(message_matches(&any, &identify, 1, &sources));

        let orders = destination(json!({"events": ["Order Completed"]}));
        assert!(message_matches(&orders, &order, 1, &sources));
        assert!(!message_matches(&orders, &page, 1, &sources));
        assert!(
            !message_matches(&orders, &identify, 1, &sources),
            "no name: no match"
        );

        let pages = destination(json!({"types": ["page"], "events": ["Home"]}));
        assert!(message_matches(&pages, &page, 1, &sources));
        assert!(!message_matches(&pages, &order, 1, &sources));

        let shop = destination(json!({"sources": ["shop"]}));
        assert!(message_matches(&shop, &order, 2, &sources));
        assert!(!message_matches(&shop, &order, 1, &sources));
        assert!(
            !message_matches(&shop, &order, 3, &sources),
            "unknown source"
        );

        // The audience part is left to `member_matches`, which needs the owner.
        let members = destination(json!({"memberOf": "buyers"}));
        assert!(message_matches(&members, &order, 1, &sources));
    }
}
