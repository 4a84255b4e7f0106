//! Access exports (GDPR art. 15): everything held about the person who owns an
//! identifier, in one JSON document.

use super::*;

/// Events read per page while exporting.
pub(super) const EXPORT_PAGE: usize = 1_000;

/// The stores a privacy request reads and changes.
pub struct PrivacyStores<'a> {
    /// The event log.
    pub log: &'a dyn EventLog,
    /// Profiles.
    pub profiles: &'a dyn ProfileStore,
    /// Memberships and the change feed.
    pub audiences: &'a dyn AudienceStore,
    /// Sources, settings, requests, audit.
    pub catalog: &'a dyn Catalog,
    /// The outbox and journey runs.
    pub activation: &'a dyn ActivationStore,
}

pub(super) fn format_millis(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms).map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    })
}

/// The access document of the person holding `identifier`; `None` when no profile
/// holds it. `computed` adds computed traits when the caller has them.
pub fn export_document(
    stores: &PrivacyStores<'_>,
    identifier: &Identifier,
    request_id: &str,
    computed: Option<&dyn Fn(ProfileId) -> Map<String, Value>>,
) -> StoreResult<Option<Value>> {
    let Some(profile) = stores
        .profiles
        .find(&identifier.id_type, &identifier.value)?
    else {
        return Ok(None);
    };
    let Some(summary) = stores.profiles.profile(profile)? else {
        return Ok(None);
    };
    let sources: HashMap<i64, (String, String)> = stores
        .catalog
        .list_sources()?
        .into_iter()
        .map(|s| (s.key, (s.id, s.name)))
        .collect();
    let source = |key: i64| match sources.get(&key) {
        Some((id, name)) => json!({"id": id, "name": name}),
        None => json!({"id": null, "name": "tessera"}),
    };
    let identities: Vec<Value> = stores
        .profiles
        .identities(profile)?
        .into_iter()
        .map(|l| {
            json!({"type": l.id_type, "value": l.value, "firstSeen": format_millis(l.first_seen_ms),
                   "source": source(l.source_key), "messageId": l.message_id})
        })
        .collect();
    let traits: Map<String, Value> = stores
        .profiles
        .traits(profile)?
        .into_iter()
        .map(|t| {
            let value: Value = serde_json::from_str(&t.value_json).unwrap_or(Value::Null);
            let provenance = json!({"value": value, "source": source(t.source_key),
                "messageId": t.message_id, "timestamp": format_millis(t.timestamp_ms)});
            (t.name, provenance)
        })
        .collect();
    let consent = consent_json(stores.profiles, profile, &|key| source(key))?;
    let mut events = Vec::new();
    let mut before = None;
    loop {
        let seqs = stores.profiles.event_seqs(profile, before, EXPORT_PAGE)?;
        let Some(last) = seqs.last().copied() else {
            break;
        };
        for event in stores.log.get(&seqs)? {
            let message: Value = serde_json::from_str(&event.payload).unwrap_or(Value::Null);
            events.push(json!({"seq": event.seq, "source": source(event.source_key),
                "receivedAt": format_millis(event.received_at_ms), "message": message}));
        }
        before = Some(last);
    }
    let memberships: Vec<Value> = stores
        .audiences
        .memberships(profile)?
        .into_iter()
        .map(|m| json!({"audience": m.audience, "since": format_millis(m.since_ms)}))
        .collect();
    let history: Vec<Value> = stores
        .audiences
        .profile_changes(profile)?
        .into_iter()
        .map(|c| {
            json!({"audience": c.change.audience,
                "event": if c.change.entered { "Audience Entered" } else { "Audience Exited" },
                "at": format_millis(c.change.at_ms), "reason": c.change.reason})
        })
        .collect();
    let groups: Vec<Value> = stores
        .profiles
        .groups(profile)?
        .into_iter()
        .map(|g| {
            json!({"groupId": g.group_id, "timestamp": format_millis(g.timestamp_ms),
                "traits": serde_json::from_str::<Value>(&g.traits_json).unwrap_or(Value::Null)})
        })
        .collect();
    let merges: Vec<Value> = stores
        .profiles
        .merges(profile)?
        .into_iter()
        .map(|m| {
            json!({"merged": m.loser, "rule": m.rule, "messageId": m.message_id,
                "timestamp": format_millis(m.timestamp_ms)})
        })
        .collect();
    let mut members = vec![profile];
    members.extend(stores.profiles.merged_members(profile)?);
    let mut journeys = Vec::new();
    let mut deliveries = Vec::new();
    for member in &members {
        journeys.extend(
            stores
                .activation
                .profile_runs(*member)?
                .iter()
                .map(tessera_activation::run_json),
        );
        let mut after = 0;
        loop {
            let page = stores.activation.deliveries(&DeliveryFilter {
                profile_id: Some(*member),
                after_id: after,
                limit: EXPORT_PAGE,
                ..DeliveryFilter::default()
            })?;
            let Some(last) = page.last().map(|d| d.id) else {
                break;
            };
            deliveries.extend(page.iter().map(|d| {
                json!({"destination": d.new.destination, "channel": d.new.channel,
                    "status": d.new.status.as_str(), "reason": d.new.reason,
                    "journey": d.new.journey, "attempts": d.attempts,
                    "createdAt": format_millis(d.created_ms),
                    "deliveredAt": d.delivered_ms.map(format_millis),
                    "payload": serde_json::from_str::<Value>(&d.new.payload).unwrap_or(Value::Null)})
            }));
            after = last;
        }
    }
    Ok(Some(json!({
        "requestId": request_id,
        "generatedAt": format_millis(chrono::Utc::now().timestamp_millis()),
        "subject": identifier.to_string(),
        "profile": {
            "id": profile,
            "mergedProfiles": stores.profiles.merged_members(profile)?,
            "firstSeen": format_millis(summary.first_seen_ms),
            "lastSeen": format_millis(summary.last_seen_ms),
            "eventCount": summary.event_count,
        },
        "identities": identities,
        "traits": traits,
        "computedTraits": computed.map(|f| f(profile)),
        "consent": consent,
        "audiences": {"current": memberships, "history": history},
        "groups": groups,
        "merges": merges,
        "events": events,
        "journeys": journeys,
        "deliveries": deliveries,
    })))
}

/// A profile's consent: the latest decision per purpose and the whole history.
pub fn consent_json(
    profiles: &dyn ProfileStore,
    profile: ProfileId,
    source: &dyn Fn(i64) -> Value,
) -> StoreResult<Value> {
    let history = profiles.consent(profile)?;
    let mut current = Map::new();
    for record in &history {
        current.insert(
            record.purpose.clone(),
            json!({"granted": record.granted, "timestamp": format_millis(record.timestamp_ms),
                "source": source(record.source_key), "messageId": record.message_id}),
        );
    }
    let history: Vec<Value> = history
        .into_iter()
        .map(|r| {
            json!({"purpose": r.purpose, "granted": r.granted,
                "timestamp": format_millis(r.timestamp_ms), "source": source(r.source_key),
                "messageId": r.message_id})
        })
        .collect();
    Ok(json!({"current": current, "history": history}))
}

/// Records a completed access export (request row and audit entry; a salted hash
/// of the identifier only).
pub fn record_export(
    privacy: &Privacy,
    identifier: &Identifier,
    actor: &str,
    request_id: &str,
    found: bool,
) -> StoreResult<()> {
    let now = chrono::Utc::now().timestamp_millis();
    let hash = privacy.hash(identifier);
    privacy.catalog.create_privacy_request(&PrivacyRequest {
        id: request_id.to_string(),
        kind: PrivacyRequestKind::Export,
        identifier: None,
        identifier_hash: hash.clone(),
        status: "completed".into(),
        actor: actor.to_string(),
        requested_at_ms: now,
        completed_at_ms: Some(now),
        result_json: Some(json!({"found": found}).to_string()),
        plan_json: None,
    })?;
    record_audit(
        privacy.catalog.as_ref(),
        actor,
        "privacy.export",
        request_id,
        None,
        Some(
            &json!({"identifier": format!("{}:salted-sha256:{hash}", identifier.id_type), "found": found}),
        ),
    );
    Ok(())
}
