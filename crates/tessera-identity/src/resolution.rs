//! Identity resolution: which profile a message belongs to, and which merges and
//! links it causes — decided by the rules, never by chance.
//!
//! Matching is flat, as in Segment Unify: no known identifier creates a profile, one
//! profile found attaches to it, several found merge into the oldest. Before acting,
//! the combined profile is checked against the per-type limits and the caps; if it
//! would break one, the message's lowest-priority identifier is dropped (and recorded
//! as a conflict) and matching is retried. So two profiles with different `user_id`s
//! are never merged: the second `user_id` would break the limit of 1.

use crate::identifiers::Identifier;
use crate::rules::CompiledRules;
use std::collections::{BTreeSet, HashMap};
use tessera_store::StoreResult;
use tessera_store::profiles::{ProfileId, ProfileTxn};

/// Read access to the graph that resolution needs.
pub trait GraphView {
    /// The profile owning an identifier.
    fn owner(&mut self, identifier: &Identifier) -> StoreResult<Option<ProfileId>>;
    /// Identifier counts by type of a profile.
    fn counts(&mut self, profile: ProfileId) -> StoreResult<HashMap<String, u32>>;
    /// Merges already made into a profile.
    fn merges(&mut self, profile: ProfileId) -> StoreResult<u32>;
}

impl<T: ProfileTxn + ?Sized> GraphView for T {
    fn owner(&mut self, identifier: &Identifier) -> StoreResult<Option<ProfileId>> {
        self.profile_of(&identifier.id_type, &identifier.value)
    }

    fn counts(&mut self, profile: ProfileId) -> StoreResult<HashMap<String, u32>> {
        Ok(self.identifier_counts(profile)?.into_iter().collect())
    }

    fn merges(&mut self, profile: ProfileId) -> StoreResult<u32> {
        Ok(self
            .summary(profile)?
            .map_or(0, |s| u32::try_from(s.merge_count).unwrap_or(u32::MAX)))
    }
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An existing profile (the oldest of those found).
    Existing(ProfileId),
    /// A new profile.
    New,
    /// The message has no usable identifier.
    Unidentified,
}

/// An identifier left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The identifier.
    pub identifier: Identifier,
    /// Why, naming types and counts, never values.
    pub reason: String,
}

/// The decision for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The profile it belongs to.
    pub target: Target,
    /// Other profiles to merge into the target, with the identifier types they share.
    pub merge: Vec<(ProfileId, Vec<String>)>,
    /// Identifiers to attach to the target.
    pub link: Vec<Identifier>,
    /// Identifiers dropped to keep the rules.
    pub dropped: Vec<Dropped>,
}

/// Resolves a message's identifiers (strongest first) against the graph.
pub fn resolve<G: GraphView + ?Sized>(
    rules: &CompiledRules,
    graph: &mut G,
    mut identifiers: Vec<Identifier>,
) -> StoreResult<Resolution> {
    let mut dropped = Vec::new();
    loop {
        if identifiers.is_empty() {
            return Ok(Resolution {
                target: Target::Unidentified,
                merge: Vec::new(),
                link: Vec::new(),
                dropped,
            });
        }
        let mut owners: Vec<(Identifier, Option<ProfileId>)> =
            Vec::with_capacity(identifiers.len());
        for identifier in &identifiers {
            owners.push((identifier.clone(), graph.owner(identifier)?));
        }
        let profiles: BTreeSet<ProfileId> = owners.iter().filter_map(|(_, p)| *p).collect();
        match check_limits(rules, graph, &owners, &profiles)? {
            Some(reason) => {
                // Drop the weakest identifier of the message and try again.
                if let Some(identifier) = identifiers.pop() {
                    dropped.push(Dropped { identifier, reason });
                }
            }
            None => {
                let link = owners
                    .iter()
                    .filter(|(_, owner)| owner.is_none())
                    .map(|(identifier, _)| identifier.clone())
                    .collect();
                let mut ordered = profiles.into_iter();
                let target = ordered.next().map_or(Target::New, Target::Existing);
                let merge = ordered
                    .map(|loser| {
                        let shared = owners
                            .iter()
                            .filter(|(_, owner)| *owner == Some(loser))
                            .map(|(identifier, _)| identifier.id_type.clone())
                            .collect();
                        (loser, shared)
                    })
                    .collect();
                return Ok(Resolution {
                    target,
                    merge,
                    link,
                    dropped,
                });
            }
        }
    }
}

/// The first rule the combined profile would break, if any.
fn check_limits<G: GraphView + ?Sized>(
    rules: &CompiledRules,
    graph: &mut G,
    owners: &[(Identifier, Option<ProfileId>)],
    profiles: &BTreeSet<ProfileId>,
) -> StoreResult<Option<String>> {
    // The common case — a known person sends an event with identifiers already
    // linked — changes nothing the limits guard: skip reading the counts.
    if profiles.len() <= 1 && owners.iter().all(|(_, owner)| owner.is_some()) {
        return Ok(None);
    }
    let mut combined: HashMap<String, u32> = HashMap::new();
    let mut largest_existing: HashMap<String, u32> = HashMap::new();
    let mut combined_total = 0u32;
    let mut largest_total = 0u32;
    let mut merges = 0u32;
    for profile in profiles {
        let counts = graph.counts(*profile)?;
        let total: u32 = counts.values().sum();
        combined_total += total;
        largest_total = largest_total.max(total);
        for (id_type, count) in counts {
            *combined.entry(id_type.clone()).or_default() += count;
            let largest = largest_existing.entry(id_type).or_default();
            *largest = (*largest).max(count);
        }
        if profiles.len() > 1 {
            merges += graph.merges(*profile)?;
        }
    }
    for (identifier, owner) in owners {
        if owner.is_none() {
            *combined.entry(identifier.id_type.clone()).or_default() += 1;
            combined_total += 1;
        }
    }
    // Only a message that makes things worse is refused: a profile already over a
    // limit (the rules were tightened later) keeps receiving its events.
    for id_type in &rules.types {
        let count = combined.get(&id_type.name).copied().unwrap_or(0);
        let before = largest_existing.get(&id_type.name).copied().unwrap_or(0);
        if count > id_type.limit && count > before {
            return Ok(Some(format!(
                "the profile would hold {count} {} values; the limit is {}",
                id_type.name, id_type.limit
            )));
        }
    }
    let cap = rules.rules.max_identifiers_per_profile;
    if combined_total > cap && combined_total > largest_total {
        return Ok(Some(format!(
            "the profile would hold {combined_total} identifiers; the cap is {cap}"
        )));
    }
    if profiles.len() > 1 {
        let merges = merges + u32::try_from(profiles.len() - 1).unwrap_or(u32::MAX);
        let cap = rules.rules.max_merges_per_profile;
        if merges > cap {
            return Ok(Some(format!(
                "the merge would make {merges} merges into one profile; the cap is {cap}"
            )));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::IdentityRules;

    /// An in-memory graph for table-driven tests.
    #[derive(Default)]
    struct Graph {
        owners: HashMap<Identifier, ProfileId>,
        merges: HashMap<ProfileId, u32>,
    }

    impl Graph {
        fn with(links: &[(&str, &str, ProfileId)]) -> Self {
            let mut graph = Graph::default();
            for (t, v, p) in links {
                graph.owners.insert(Identifier::new(*t, *v), *p);
            }
            graph
        }
    }

    impl GraphView for Graph {
        fn owner(&mut self, identifier: &Identifier) -> StoreResult<Option<ProfileId>> {
            Ok(self.owners.get(identifier).copied())
        }
        fn counts(&mut self, profile: ProfileId) -> StoreResult<HashMap<String, u32>> {
            let mut counts = HashMap::new();
            for (identifier, owner) in &self.owners {
                if *owner == profile {
                    *counts.entry(identifier.id_type.clone()).or_default() += 1;
                }
            }
            Ok(counts)
        }
        fn merges(&mut self, profile: ProfileId) -> StoreResult<u32> {
            Ok(self.merges.get(&profile).copied().unwrap_or(0))
        }
    }

    fn ids(list: &[(&str, &str)]) -> Vec<Identifier> {
        list.iter().map(|(t, v)| Identifier::new(*t, *v)).collect()
    }

    fn resolve_in(graph: &mut Graph, list: &[(&str, &str)]) -> Resolution {
        let rules = IdentityRules::default()
            .compile()
            .unwrap_or_else(|e| panic!("{e}"));
        resolve(&rules, graph, ids(list)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn unknown_identifiers_make_a_new_profile() {
        let r = resolve_in(
            &mut Graph::default(),
            &[("user_id", "u1"), ("anonymous_id", "a1")],
        );
        assert_eq!(r.target, Target::New);
        assert_eq!(r.link.len(), 2);
    }

    #[test]
    fn a_known_identifier_attaches_the_new_ones() {
        let mut graph = Graph::with(&[("anonymous_id", "a1", 10)]);
        let r = resolve_in(&mut graph, &[("email", "j@x.io"), ("anonymous_id", "a1")]);
        assert_eq!(r.target, Target::Existing(10));
        assert_eq!(r.link, ids(&[("email", "j@x.io")]));
        assert!(r.merge.is_empty());
    }

    #[test]
    fn identifiers_of_two_profiles_merge_them_into_the_oldest() {
        let mut graph = Graph::with(&[("anonymous_id", "a1", 20), ("email", "j@x.io", 10)]);
        let r = resolve_in(&mut graph, &[("email", "j@x.io"), ("anonymous_id", "a1")]);
        assert_eq!(r.target, Target::Existing(10));
        assert_eq!(r.merge, vec![(20, vec!["anonymous_id".to_string()])]);
    }

    #[test]
    fn shared_device_never_merges_two_user_ids() {
        let mut graph = Graph::with(&[("user_id", "alice", 10), ("device_id", "tablet", 10)]);
        let r = resolve_in(&mut graph, &[("user_id", "bob"), ("device_id", "tablet")]);
        assert_eq!(r.target, Target::New);
        assert_eq!(r.link, ids(&[("user_id", "bob")]));
        assert_eq!(r.dropped.len(), 1);
        assert_eq!(
            r.dropped[0].identifier,
            Identifier::new("device_id", "tablet")
        );
        assert!(r.dropped[0].reason.contains("2 user_id values"));
    }

    #[test]
    fn a_sixth_email_is_dropped_but_the_event_still_lands() {
        let mut graph = Graph::with(&[
            ("user_id", "u", 1),
            ("email", "1@x.io", 1),
            ("email", "2@x.io", 1),
            ("email", "3@x.io", 1),
            ("email", "4@x.io", 1),
            ("email", "5@x.io", 1),
        ]);
        let r = resolve_in(&mut graph, &[("user_id", "u"), ("email", "6@x.io")]);
        assert_eq!(r.target, Target::Existing(1));
        assert!(r.link.is_empty());
        assert_eq!(r.dropped[0].identifier, Identifier::new("email", "6@x.io"));
    }

    #[test]
    fn merge_cap_stops_runaway_merging() {
        let mut graph = Graph::with(&[("email", "a@x.io", 1), ("anonymous_id", "b", 2)]);
        graph.merges.insert(1, 100);
        let r = resolve_in(&mut graph, &[("email", "a@x.io"), ("anonymous_id", "b")]);
        assert_eq!(r.target, Target::Existing(1));
        assert!(r.merge.is_empty());
        assert!(r.dropped[0].reason.contains("cap is 100"));
    }

    #[test]
    fn a_message_without_identifiers_is_unidentified() {
        assert_eq!(
            resolve_in(&mut Graph::default(), &[]).target,
            Target::Unidentified
        );
    }
}
