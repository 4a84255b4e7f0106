//! The in-memory profile index that audiences and computed traits are evaluated on.
//!
//! It is derived state: built from the profile store and the event log, updated as
//! the processor applies events, and rebuilt from them at start — never the truth.
//!
//! Layout, chosen for the batch evaluator's scans:
//! - profiles get dense slots; traits are columns (one `Vec<Option<Scalar>>` per
//!   trait path, nested objects flattened to dotted paths);
//! - events are 16 bytes each ([`CompactEvent`]: time, interned name, interned
//!   property set), stored per profile in time order in one contiguous array
//!   (offsets per slot). A profile changed since the last compaction keeps its events
//!   in an overlay; [`ProfileIndex::compact`] folds the overlay back in.
//! - an event's properties are interned as a whole ([`PropertySets`]): product events
//!   repeat the same sku/category/price, so most events share a set.

use crate::bitset::Bitset;
use crate::scalar::{Scalar, Sym, Symbols, flatten, to_scalar};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tessera_core::time::parse_timestamp;
use tessera_store::profiles::ProfileId;

pub use crate::bitset::Slot;

/// One event as the index keeps it: 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactEvent {
    /// Event time (Unix ms).
    pub timestamp_ms: i64,
    /// Interned event name.
    pub name: Sym,
    /// Interned property set ([`ProfileIndex::properties`]).
    pub props: u32,
}

/// An event to index, taken from a stored Segment message.
#[derive(Debug, Clone, PartialEq)]
pub struct EventInput {
    /// Event time (Unix ms).
    pub timestamp_ms: i64,
    /// The name audiences use: see [`event_name`].
    pub name: String,
    /// The message's `properties` (for `identify`/`group`: empty).
    pub properties: Map<String, Value>,
    /// Consent decisions the message carried, purpose (lowercase) to granted: see
    /// [`tessera_core::consent::decisions`].
    pub consent: Vec<(String, bool)>,
}

/// Everything the index keeps of one profile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileInput {
    /// The profile.
    pub id: ProfileId,
    /// Its traits.
    pub traits: Map<String, Value>,
    /// The types of identifiers it has (`email`, `user_id`, ...).
    pub identifier_types: Vec<String>,
    /// Its events, in any order.
    pub events: Vec<EventInput>,
}

/// The name an event has in the audience language: a `track` call's `event`, and
/// `Page Viewed`, `Screen Viewed`, `Identify`, `Group`, `Alias` for the other calls.
pub fn event_name(message: &Map<String, Value>) -> Option<String> {
    let name = match message.get("type").and_then(Value::as_str)? {
        "track" => {
            return message
                .get("event")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        "page" => "Page Viewed",
        "screen" => "Screen Viewed",
        "identify" => "Identify",
        "group" => "Group",
        "alias" => "Alias",
        _ => return None,
    };
    Some(name.to_owned())
}

impl EventInput {
    /// Reads a stored Segment message (as normalized at ingest: `timestamp` set).
    pub fn from_message(message: &Map<String, Value>) -> Option<Self> {
        let name = event_name(message)?;
        let timestamp_ms = message
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(parse_timestamp)?
            .timestamp_millis();
        let properties = match message.get("type").and_then(Value::as_str) {
            Some("track" | "page" | "screen") => message
                .get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            _ => Map::new(),
        };
        let consent = tessera_core::consent::decisions(message);
        Some(Self {
            timestamp_ms,
            name,
            properties,
            consent,
        })
    }
}

/// Interned property sets: each distinct set of (flattened) properties once.
#[derive(Debug, Default)]
pub struct PropertySets {
    sets: Vec<Arc<[(Sym, Scalar)]>>,
    ids: HashMap<PropertyKey, u32>,
}

/// Hashable wrapper of a property set (numbers by their bits).
#[derive(Debug, Clone)]
struct PropertyKey(Arc<[(Sym, Scalar)]>);

impl PartialEq for PropertyKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .all(|((ka, va), (kb, vb))| ka == kb && same_scalar(va, vb))
    }
}

impl Eq for PropertyKey {}

impl Hash for PropertyKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for (key, value) in self.0.iter() {
            key.hash(state);
            hash_scalar(value, state);
        }
    }
}

fn same_scalar(a: &Scalar, b: &Scalar) -> bool {
    match (a, b) {
        (Scalar::Num(x), Scalar::Num(y)) => x.to_bits() == y.to_bits(),
        (Scalar::List(x), Scalar::List(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(a, b)| same_scalar(a, b))
        }
        _ => a == b,
    }
}

fn hash_scalar<H: Hasher>(value: &Scalar, state: &mut H) {
    match value {
        Scalar::Null => 0u8.hash(state),
        Scalar::Bool(b) => (1u8, b).hash(state),
        Scalar::Num(n) => (2u8, n.to_bits()).hash(state),
        Scalar::Str(s) => (3u8, s).hash(state),
        Scalar::List(items) => {
            (4u8, items.len()).hash(state);
            for item in items.iter() {
                hash_scalar(item, state);
            }
        }
        Scalar::Object => 5u8.hash(state),
        Scalar::Time(t) => (6u8, t).hash(state),
    }
}

impl PropertySets {
    fn intern(&mut self, set: Vec<(Sym, Scalar)>) -> u32 {
        let key = PropertyKey(Arc::from(set));
        if let Some(id) = self.ids.get(&key) {
            return *id;
        }
        let id = self.sets.len() as u32;
        self.sets.push(Arc::clone(&key.0));
        self.ids.insert(key, id);
        id
    }

    /// The properties of a set, sorted by key.
    pub fn get(&self, id: u32) -> &[(Sym, Scalar)] {
        self.sets.get(id as usize).map(|s| &**s).unwrap_or(&[])
    }

    /// Number of distinct sets.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    fn heap_bytes(&self) -> usize {
        let sets: usize = self
            .sets
            .iter()
            .map(|s| 16 + s.len() * std::mem::size_of::<(Sym, Scalar)>() + list_bytes(s))
            .sum();
        sets + self.sets.capacity() * 16 + self.ids.capacity() * 24
    }
}

fn list_bytes(set: &[(Sym, Scalar)]) -> usize {
    set.iter()
        .map(|(_, v)| match v {
            Scalar::List(items) => 32 + items.len() * std::mem::size_of::<Scalar>(),
            _ => 0,
        })
        .sum()
}

/// A slot value marking a deleted event (merged profiles move, removed ones die).
const DEAD: Slot = Slot::MAX;
/// Marks a [`EventRef`] position as one in the late buffer.
const LATE: u32 = 1 << 31;
/// An event at most this many places from the end of its name's run is inserted in
/// place (its followers' references are moved); an older one goes to the late buffer.
const NEAR_TAIL: usize = 256;

/// One event in a name's postings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    /// Event time (Unix ms).
    pub timestamp_ms: i64,
    /// The profile's slot ([`Slot::MAX`] when deleted).
    pub slot: Slot,
    /// Interned property set.
    pub props: u32,
}

/// Every event of one name: in time order (`main`), plus those that arrived out of
/// order since the last compaction (`late`, unordered, scanned whole).
#[derive(Debug, Default)]
struct NameEvents {
    name: Sym,
    main: Vec<Posting>,
    late: Vec<Posting>,
}

/// Where a profile's event lives: the name's index and its position (`LATE` bit:
/// in the late buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EventRef {
    name: u32,
    pos: u32,
}

/// Every event, twice addressed: per event name in time order (what batch scans
/// read: a window is a binary search and a contiguous run), and per profile as
/// references in time order (what the realtime evaluator and computed traits read).
/// A profile changed since the last compaction keeps its references in an overlay.
#[derive(Debug, Default)]
struct EventStore {
    names: Vec<NameEvents>,
    name_index: HashMap<Sym, u32>,
    /// `refs[offsets[s]..offsets[s + 1]]` are the references of slot `s`.
    offsets: Vec<u64>,
    refs: Vec<EventRef>,
    overlay: HashMap<Slot, Vec<EventRef>>,
    /// Late and dead postings since the last compaction.
    churn: usize,
    live: usize,
}

impl EventStore {
    fn posting(&self, r: EventRef) -> &Posting {
        let names = &self.names[r.name as usize];
        if r.pos & LATE != 0 {
            &names.late[(r.pos & !LATE) as usize]
        } else {
            &names.main[r.pos as usize]
        }
    }

    fn posting_mut(&mut self, r: EventRef) -> &mut Posting {
        let names = &mut self.names[r.name as usize];
        if r.pos & LATE != 0 {
            &mut names.late[(r.pos & !LATE) as usize]
        } else {
            &mut names.main[r.pos as usize]
        }
    }

    fn refs(&self, slot: Slot) -> &[EventRef] {
        if let Some(refs) = self.overlay.get(&slot) {
            return refs;
        }
        let s = slot as usize;
        match (self.offsets.get(s), self.offsets.get(s + 1)) {
            (Some(&from), Some(&to)) => &self.refs[from as usize..to as usize],
            _ => &[],
        }
    }

    fn refs_mut(&mut self, slot: Slot) -> &mut Vec<EventRef> {
        let s = slot as usize;
        let (offsets, refs) = (&self.offsets, &self.refs);
        self.overlay
            .entry(slot)
            .or_insert_with(|| match (offsets.get(s), offsets.get(s + 1)) {
                (Some(&from), Some(&to)) => refs[from as usize..to as usize].to_vec(),
                _ => Vec::new(),
            })
    }

    /// A slot's events in time order.
    fn events(&self, slot: Slot) -> Vec<CompactEvent> {
        self.refs(slot)
            .iter()
            .map(|r| {
                let p = self.posting(*r);
                CompactEvent {
                    timestamp_ms: p.timestamp_ms,
                    name: self.names[r.name as usize].name,
                    props: p.props,
                }
            })
            .collect()
    }

    fn insert(&mut self, slot: Slot, event: CompactEvent) {
        let name = match self.name_index.get(&event.name) {
            Some(i) => *i,
            None => {
                let i = self.names.len() as u32;
                self.names.push(NameEvents {
                    name: event.name,
                    ..NameEvents::default()
                });
                self.name_index.insert(event.name, i);
                i
            }
        };
        let posting = Posting {
            timestamp_ms: event.timestamp_ms,
            slot,
            props: event.props,
        };
        let names = &mut self.names[name as usize];
        // Live traffic is nearly in time order: it goes at (or near) the end of the run;
        // only events older than the last few hundred of their name go to the late
        // buffer.
        let at = if names
            .main
            .last()
            .is_none_or(|l| l.timestamp_ms <= event.timestamp_ms)
        {
            Some(names.main.len())
        } else {
            let at = names
                .main
                .partition_point(|p| p.timestamp_ms <= event.timestamp_ms);
            (names.main.len() - at <= NEAR_TAIL).then_some(at)
        };
        let pos = match at {
            Some(at) => {
                names.main.insert(at, posting);
                // The postings after it moved one place: so do their references, last
                // first (otherwise a moved reference would be taken for the next one).
                // A shifted posting is among the newest of its name, so its reference
                // is among the last of its profile's: searched from the end, the cost
                // does not grow with the profile's history. (name, old position) is
                // unique at the time of the search, so the first match is the one.
                for new_pos in (at + 1..self.names[name as usize].main.len()).rev() {
                    let shifted_slot = self.names[name as usize].main[new_pos].slot;
                    if shifted_slot == DEAD {
                        continue;
                    }
                    let old_pos = (new_pos - 1) as u32;
                    if let Some(r) = self
                        .refs_mut(shifted_slot)
                        .iter_mut()
                        .rev()
                        .find(|r| r.name == name && r.pos == old_pos)
                    {
                        r.pos = new_pos as u32;
                    }
                }
                at as u32
            }
            None => {
                let names = &mut self.names[name as usize];
                names.late.push(posting);
                self.churn += 1;
                (names.late.len() - 1) as u32 | LATE
            }
        };
        self.live += 1;
        let r = EventRef { name, pos };
        let ts = event.timestamp_ms;
        // After the last reference not later than it: equal times keep arrival order.
        let current = self.refs(slot);
        let mut at = current.len();
        while at > 0 && self.posting(current[at - 1]).timestamp_ms > ts {
            at -= 1;
        }
        self.refs_mut(slot).insert(at, r);
    }

    /// Deletes a slot's events.
    fn clear(&mut self, slot: Slot) {
        let refs = std::mem::take(self.refs_mut(slot));
        for r in &refs {
            self.posting_mut(*r).slot = DEAD;
        }
        self.churn += refs.len();
        self.live -= refs.len();
    }

    /// Gives the loser's events to the winner.
    fn reassign(&mut self, winner: Slot, loser: Slot) {
        let moved = std::mem::take(self.refs_mut(loser));
        for r in &moved {
            self.posting_mut(*r).slot = winner;
        }
        let mut all = self.refs_mut(winner).clone();
        all.extend(moved);
        // Stable: equal times keep the winner's events first.
        all.sort_by_key(|r| self.posting(*r).timestamp_ms);
        *self.refs_mut(winner) = all;
    }

    /// Late and dead postings slow every batch scan of their name; per-profile
    /// overlays only cost memory, so they alone never trigger a compaction.
    fn needs_compaction(&self) -> bool {
        self.churn > 262_144.max(self.live / 8)
    }

    /// Rewrites every name's run in time order without dead events and rebuilds the
    /// per-profile references.
    fn compact(&mut self, slots: usize) {
        for names in &mut self.names {
            let mut all: Vec<Posting> = names
                .main
                .drain(..)
                .chain(names.late.drain(..))
                .filter(|p| p.slot != DEAD)
                .collect();
            all.sort_by_key(|p| (p.timestamp_ms, p.slot));
            names.main = all;
            names.main.shrink_to_fit();
            names.late = Vec::new();
        }
        // Per-profile references in time order: counting sort by slot, fed by a merge
        // of every name's run by time (so no per-profile sort is needed).
        let mut counts = vec![0u64; slots + 1];
        for names in &self.names {
            for p in &names.main {
                counts[p.slot as usize + 1] += 1;
            }
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let total = counts[slots] as usize;
        let mut next = counts.clone();
        let mut refs = vec![EventRef { name: 0, pos: 0 }; total];
        let mut heads: std::collections::BinaryHeap<std::cmp::Reverse<(i64, u32, u32)>> = self
            .names
            .iter()
            .enumerate()
            .filter_map(|(n, names)| {
                names
                    .main
                    .first()
                    .map(|p| std::cmp::Reverse((p.timestamp_ms, n as u32, 0)))
            })
            .collect();
        while let Some(std::cmp::Reverse((_, n, pos))) = heads.pop() {
            let run = &self.names[n as usize].main;
            let p = run[pos as usize];
            let at = &mut next[p.slot as usize];
            refs[*at as usize] = EventRef { name: n, pos };
            *at += 1;
            if let Some(following) = run.get(pos as usize + 1) {
                heads.push(std::cmp::Reverse((following.timestamp_ms, n, pos + 1)));
            }
        }
        self.offsets = counts;
        self.refs = refs;
        self.overlay.clear();
        self.churn = 0;
        self.live = total;
    }

    fn heap_bytes(&self) -> usize {
        let posting = std::mem::size_of::<Posting>();
        let r = std::mem::size_of::<EventRef>();
        self.names
            .iter()
            .map(|n| (n.main.capacity() + n.late.capacity()) * posting)
            .sum::<usize>()
            + self.refs.capacity() * r
            + self.offsets.capacity() * 8
            + self
                .overlay
                .values()
                .map(|v| v.capacity() * r + 48)
                .sum::<usize>()
    }
}

/// One profile's events in time order, read where they are (no copy): what the
/// realtime evaluator, computed traits and RFM walk for each changed profile. Events
/// of other names are skipped by their reference alone, without reading the posting.
#[derive(Clone, Copy)]
pub struct ProfileEvents<'a> {
    store: &'a EventStore,
    refs: &'a [EventRef],
}

impl<'a> ProfileEvents<'a> {
    /// How many events.
    pub fn len(&self) -> usize {
        self.refs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    fn event(store: &EventStore, r: EventRef) -> CompactEvent {
        let p = store.posting(r);
        CompactEvent {
            timestamp_ms: p.timestamp_ms,
            name: store.names[r.name as usize].name,
            props: p.props,
        }
    }

    /// Those with a time in `[from, to]` (a binary search: the references are in time
    /// order).
    pub fn between(self, from: i64, to: i64) -> Self {
        let time = |r: &EventRef| self.store.posting(*r).timestamp_ms;
        let lo = self.refs.partition_point(|r| time(r) < from);
        let hi = self.refs.partition_point(|r| time(r) <= to);
        Self {
            refs: &self.refs[lo..hi.max(lo)],
            ..self
        }
    }

    /// Every event, oldest first.
    pub fn iter(self) -> impl DoubleEndedIterator<Item = CompactEvent> + 'a {
        let store = self.store;
        self.refs.iter().map(move |r| Self::event(store, *r))
    }

    /// The events named `name`, oldest first.
    pub fn named(self, name: Sym) -> impl DoubleEndedIterator<Item = CompactEvent> + 'a {
        let store = self.store;
        let wanted = store.name_index.get(&name).copied();
        self.refs
            .iter()
            .filter(move |r| Some(r.name) == wanted)
            .map(move |r| Self::event(store, *r))
    }
}

/// One name's events for a batch scan: the postings in `[from, to]`, in time order
/// for the main run, then the late ones.
pub struct NamePostings<'a> {
    main: &'a [Posting],
    late: &'a [Posting],
}

impl<'a> NamePostings<'a> {
    /// Every live posting with a time in `[from, to]`.
    pub fn between(&self, from: i64, to: i64) -> impl Iterator<Item = &'a Posting> + 'a {
        self.main_between(from, to)
            .iter()
            .chain(self.late_between(from, to))
            .filter(|p| p.slot != DEAD)
    }

    /// The in-order run of postings with a time in `[from, to]` (dead ones included:
    /// their slot is [`Slot::MAX`]).
    pub fn main_between(&self, from: i64, to: i64) -> &'a [Posting] {
        let lo = self.main.partition_point(|p| p.timestamp_ms < from);
        let hi = self.main.partition_point(|p| p.timestamp_ms <= to);
        &self.main[lo..hi.max(lo)]
    }

    /// Out-of-order postings with a time in `[from, to]` (dead ones included).
    pub fn late_between(&self, from: i64, to: i64) -> impl Iterator<Item = &'a Posting> + 'a {
        self.late
            .iter()
            .filter(move |p| from <= p.timestamp_ms && p.timestamp_ms <= to)
    }
}

/// Memory the index uses, by part (approximate heap bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MemoryReport {
    /// Live profiles.
    pub profiles: usize,
    /// Indexed events.
    pub events: usize,
    /// Distinct property sets.
    pub property_sets: usize,
    /// Event arrays (16 bytes per event plus offsets).
    pub event_bytes: usize,
    /// Interned property sets.
    pub property_set_bytes: usize,
    /// Interned strings.
    pub symbol_bytes: usize,
    /// Trait columns, identifiers and consent.
    pub profile_bytes: usize,
}

impl MemoryReport {
    /// Event arrays plus property sets, per event: the index memory an event costs.
    pub fn bytes_per_event(&self) -> f64 {
        (self.event_bytes + self.property_set_bytes) as f64 / self.events.max(1) as f64
    }

    /// Trait columns, identifiers and consent, per profile.
    pub fn bytes_per_profile(&self) -> f64 {
        self.profile_bytes as f64 / self.profiles.max(1) as f64
    }
}

/// A consent decision: purpose, granted, and the time it was given.
pub type ConsentEntry = (Sym, bool, i64);

/// The index.
#[derive(Debug, Default)]
pub struct ProfileIndex {
    /// Interned strings (names, trait paths, string values).
    pub symbols: Symbols,
    /// Interned event property sets.
    pub property_sets: PropertySets,
    slot_of: HashMap<ProfileId, Slot>,
    ids: Vec<ProfileId>,
    alive: Bitset,
    live: usize,
    traits: HashMap<Sym, Vec<Option<Scalar>>>,
    identifier_bits: Vec<u64>,
    identifier_types: Vec<Sym>,
    consent: HashMap<Slot, Vec<ConsentEntry>>,
    events: EventStore,
}

impl ProfileIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of slots, live or not (slots are never reused).
    pub fn slot_count(&self) -> usize {
        self.ids.len()
    }

    /// Number of live profiles.
    pub fn profile_count(&self) -> usize {
        self.live
    }

    /// The live profiles.
    pub fn alive(&self) -> &Bitset {
        &self.alive
    }

    /// The live profiles as a set over every slot of the index.
    pub fn alive_slots(&self) -> Bitset {
        let mut set = self.alive.clone();
        set.resize(self.slot_count());
        set
    }

    /// Whether a slot holds a live profile.
    pub fn is_alive(&self, slot: Slot) -> bool {
        self.alive.contains(slot)
    }

    /// The slot of a live profile.
    pub fn slot(&self, id: ProfileId) -> Option<Slot> {
        self.slot_of.get(&id).copied().filter(|s| self.is_alive(*s))
    }

    /// The profile in a slot.
    pub fn profile_id(&self, slot: Slot) -> ProfileId {
        self.ids.get(slot as usize).copied().unwrap_or_default()
    }

    /// A slot's events, oldest first (equal times in arrival order).
    pub fn events(&self, slot: Slot) -> Vec<CompactEvent> {
        self.events.events(slot)
    }

    /// A slot's events, oldest first, read in place (see [`ProfileEvents`]).
    pub fn profile_events(&self, slot: Slot) -> ProfileEvents<'_> {
        ProfileEvents {
            store: &self.events,
            refs: self.events.refs(slot),
        }
    }

    /// Every event of a name, for batch scans (`None` when no event has it).
    pub fn postings(&self, name: Sym) -> Option<NamePostings<'_>> {
        let i = *self.events.name_index.get(&name)?;
        let names = &self.events.names[i as usize];
        Some(NamePostings {
            main: &names.main,
            late: &names.late,
        })
    }

    /// The properties of an event, sorted by key.
    pub fn properties(&self, event: &CompactEvent) -> &[(Sym, Scalar)] {
        self.property_sets.get(event.props)
    }

    /// One property of an event.
    pub fn property(&self, event: &CompactEvent, key: Sym) -> Option<&Scalar> {
        self.property_of(event.props, key)
    }

    /// One property of an interned property set.
    pub fn property_of(&self, props: u32, key: Sym) -> Option<&Scalar> {
        let props = self.property_sets.get(props);
        props
            .binary_search_by_key(&key, |(k, _)| *k)
            .ok()
            .map(|i| &props[i].1)
    }

    /// The column of a trait path (`None` when no profile has it).
    pub fn trait_column(&self, path: &str) -> Option<&[Option<Scalar>]> {
        let sym = self.symbols.get(path)?;
        self.traits.get(&sym).map(Vec::as_slice)
    }

    /// Every trait path in the index.
    pub fn trait_paths(&self) -> impl Iterator<Item = &str> {
        self.traits.keys().map(|s| self.symbols.text(*s))
    }

    /// Every event name with at least one event in the index (in no order).
    pub fn event_names(&self) -> impl Iterator<Item = &str> {
        self.events.name_index.keys().map(|s| self.symbols.text(*s))
    }

    /// Whether some event in the index has a property (a flattened path) of this
    /// name. Reads the interned property sets only when the name is interned at all.
    pub fn has_property(&self, name: &str) -> bool {
        let Some(sym) = self.symbols.get(name) else {
            return false;
        };
        (0..self.property_sets.len() as u32)
            .any(|id| self.property_sets.get(id).iter().any(|(k, _)| *k == sym))
    }

    /// The distinct property names (flattened paths) of the first `max_sets`
    /// interned property sets: the catalog "did you mean" suggestions come from.
    pub fn property_names(&self, max_sets: usize) -> std::collections::BTreeSet<&str> {
        let mut seen = std::collections::HashSet::new();
        for id in 0..self.property_sets.len().min(max_sets) as u32 {
            for (key, _) in self.property_sets.get(id) {
                seen.insert(*key);
            }
        }
        seen.into_iter().map(|s| self.symbols.text(s)).collect()
    }

    /// Whether a slot has an identifier of the given type.
    pub fn has_identifier(&self, slot: Slot, id_type: &str) -> bool {
        let Some(bit) = self.identifier_bit(id_type) else {
            return false;
        };
        self.identifier_bits
            .get(slot as usize)
            .is_some_and(|bits| bits & (1 << bit) != 0)
    }

    /// The bit of an identifier type, when some profile has one.
    pub fn identifier_bit(&self, id_type: &str) -> Option<u32> {
        let sym = self.symbols.get(id_type)?;
        self.identifier_types
            .iter()
            .position(|t| *t == sym)
            .map(|p| p as u32)
    }

    /// The identifier bits of every slot.
    pub fn identifier_bits(&self) -> &[u64] {
        &self.identifier_bits
    }

    /// Whether the person granted consent for `purpose` (their latest decision).
    pub fn consent(&self, slot: Slot, purpose: Sym) -> bool {
        self.consent
            .get(&slot)
            .and_then(|entries| entries.iter().find(|(p, _, _)| *p == purpose))
            .is_some_and(|(_, granted, _)| *granted)
    }

    fn ensure_slot(&mut self, id: ProfileId) -> Slot {
        if let Some(slot) = self.slot_of.get(&id).copied() {
            if !self.alive.contains(slot) {
                self.alive.insert(slot);
                self.live += 1;
            }
            return slot;
        }
        let slot = self.ids.len() as Slot;
        self.ids.push(id);
        self.alive.insert(slot);
        self.identifier_bits.push(0);
        self.slot_of.insert(id, slot);
        self.live += 1;
        slot
    }

    fn compact_event(&mut self, event: &EventInput) -> CompactEvent {
        let name = self.symbols.intern(&event.name);
        let mut set = Vec::with_capacity(event.properties.len());
        for (key, value) in &event.properties {
            let symbols = &mut self.symbols;
            flatten_into(symbols, key, value, &mut set);
        }
        set.sort_by_key(|(k, _)| *k);
        set.dedup_by_key(|(k, _)| *k);
        CompactEvent {
            timestamp_ms: event.timestamp_ms,
            name,
            props: self.property_sets.intern(set),
        }
    }

    fn record_consent(&mut self, slot: Slot, event: &EventInput) {
        if event.consent.is_empty() {
            return;
        }
        let decisions: Vec<ConsentEntry> = event
            .consent
            .iter()
            .map(|(purpose, granted)| (self.symbols.intern(purpose), *granted, event.timestamp_ms))
            .collect();
        let entries = self.consent.entry(slot).or_default();
        for decision in decisions {
            upsert_consent(entries, decision);
        }
    }

    /// Sets everything of a profile at once (loading, or reloading after a rebuild).
    pub fn upsert_profile(&mut self, input: &ProfileInput) -> Slot {
        let slot = self.ensure_slot(input.id);
        self.set_traits(slot, &input.traits);
        self.set_identifier_types(slot, &input.identifier_types);
        self.consent.remove(&slot);
        self.events.clear(slot);
        let mut events: Vec<CompactEvent> = Vec::with_capacity(input.events.len());
        for event in &input.events {
            events.push(self.compact_event(event));
            self.record_consent(slot, event);
        }
        events.sort_by_key(|e| e.timestamp_ms);
        for event in events {
            self.events.insert(slot, event);
        }
        slot
    }

    /// Replaces a profile's traits.
    pub fn set_traits(&mut self, slot: Slot, traits: &Map<String, Value>) {
        for column in self.traits.values_mut() {
            if let Some(cell) = column.get_mut(slot as usize) {
                *cell = None;
            }
        }
        let mut flat = Vec::new();
        for (key, value) in traits {
            flatten_into(&mut self.symbols, key, value, &mut flat);
        }
        let slots = self.ids.len();
        for (path, value) in flat {
            let column = self.traits.entry(path).or_default();
            if column.len() < slots {
                column.resize(slots, None);
            }
            column[slot as usize] = Some(value);
        }
    }

    /// Replaces a profile's identifier types.
    pub fn set_identifier_types(&mut self, slot: Slot, types: &[String]) {
        let mut bits = 0u64;
        for id_type in types {
            let sym = self.symbols.intern(id_type);
            let position = match self.identifier_types.iter().position(|t| *t == sym) {
                Some(p) => p,
                None if self.identifier_types.len() < 64 => {
                    self.identifier_types.push(sym);
                    self.identifier_types.len() - 1
                }
                None => {
                    tracing::warn!(
                        "more than 64 identifier types; `identifier` conditions ignore the rest"
                    );
                    continue;
                }
            };
            bits |= 1 << position;
        }
        if let Some(cell) = self.identifier_bits.get_mut(slot as usize) {
            *cell = bits;
        }
    }

    /// Adds one event to a profile (creating the profile when new).
    pub fn add_event(&mut self, id: ProfileId, event: &EventInput) -> Slot {
        let slot = self.ensure_slot(id);
        let compact = self.compact_event(event);
        self.record_consent(slot, event);
        self.events.insert(slot, compact);
        slot
    }

    /// Makes sure a profile has a slot (a profile whose events the index does not
    /// keep, e.g. only `alias` calls, still has traits and identifiers).
    pub fn add_profile(&mut self, id: ProfileId) -> Slot {
        self.ensure_slot(id)
    }

    /// Moves everything of `loser` into `winner` (a merge). The loser's slot dies;
    /// the caller refreshes the winner's traits and identifiers from the store.
    pub fn merge(&mut self, winner: ProfileId, loser: ProfileId) -> Option<Slot> {
        let loser_slot = self.slot(loser)?;
        let winner_slot = self.ensure_slot(winner);
        self.events.reassign(winner_slot, loser_slot);
        if let Some(entries) = self.consent.remove(&loser_slot) {
            let target = self.consent.entry(winner_slot).or_default();
            for entry in entries {
                upsert_consent(target, entry);
            }
        }
        let loser_bits = self.identifier_bits[loser_slot as usize];
        self.identifier_bits[winner_slot as usize] |= loser_bits;
        self.kill(loser_slot);
        Some(winner_slot)
    }

    /// Removes a profile (erased, or rebuilt under other ids).
    pub fn remove(&mut self, id: ProfileId) {
        if let Some(slot) = self.slot(id) {
            self.events.clear(slot);
            self.kill(slot);
        }
    }

    fn kill(&mut self, slot: Slot) {
        self.set_traits(slot, &Map::new());
        self.identifier_bits[slot as usize] = 0;
        self.consent.remove(&slot);
        if self.alive.contains(slot) {
            self.alive.remove(slot);
            self.live -= 1;
        }
    }

    /// Folds changed profiles back into the contiguous array when the overlay has
    /// grown (cheap to call often).
    pub fn maybe_compact(&mut self) {
        if self.events.needs_compaction() {
            self.compact();
        }
    }

    /// Folds every changed profile back into the contiguous array.
    pub fn compact(&mut self) {
        let slots = self.ids.len();
        self.events.compact(slots);
        for column in self.traits.values_mut() {
            column.resize(slots, None);
        }
    }

    /// Memory by part.
    pub fn memory(&self) -> MemoryReport {
        let scalar = std::mem::size_of::<Option<Scalar>>();
        let trait_bytes: usize = self
            .traits
            .values()
            .map(|c| c.capacity() * scalar + 32)
            .sum();
        let consent_bytes: usize = self
            .consent
            .values()
            .map(|v| v.capacity() * std::mem::size_of::<ConsentEntry>() + 48)
            .sum();
        let slot_bytes = self.ids.capacity() * 8
            + self.alive.capacity() / 8
            + self.identifier_bits.capacity() * 8
            + self.slot_of.capacity() * 16;
        MemoryReport {
            profiles: self.live,
            events: self.events.live,
            property_sets: self.property_sets.len(),
            event_bytes: self.events.heap_bytes(),
            property_set_bytes: self.property_sets.heap_bytes(),
            symbol_bytes: self.symbols.heap_bytes(),
            profile_bytes: trait_bytes + consent_bytes + slot_bytes,
        }
    }

    /// A trait of a slot as JSON (flattened path), for display.
    pub fn trait_json(&self, slot: Slot, path: &str) -> Option<Value> {
        let column = self.trait_column(path)?;
        column
            .get(slot as usize)?
            .as_ref()
            .map(|v| crate::scalar::to_json(&self.symbols, v))
    }
}

fn upsert_consent(entries: &mut Vec<ConsentEntry>, decision: ConsentEntry) {
    match entries.iter_mut().find(|(p, _, _)| *p == decision.0) {
        // The latest decision wins; a tie keeps the one applied last.
        Some(existing) if existing.2 <= decision.2 => *existing = decision,
        Some(_) => {}
        None => entries.push(decision),
    }
}

fn flatten_into(symbols: &mut Symbols, key: &str, value: &Value, out: &mut Vec<(Sym, Scalar)>) {
    match value {
        Value::Object(_) => {
            let mut pairs: Vec<(String, Scalar)> = Vec::new();
            flatten(symbols, key, value, &mut |path, scalar| {
                pairs.push((path.to_owned(), scalar));
            });
            for (path, scalar) in pairs {
                out.push((symbols.intern(&path), scalar));
            }
        }
        _ => {
            let scalar = to_scalar(symbols, value);
            out.push((symbols.intern(key), scalar));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(ts: i64, name: &str, props: Value) -> EventInput {
        EventInput {
            timestamp_ms: ts,
            name: name.into(),
            properties: props.as_object().cloned().unwrap_or_default(),
            consent: vec![],
        }
    }

    #[test]
    fn events_stay_in_time_order_through_overlay_merge_and_compaction() {
        let mut index = ProfileIndex::new();
        index.upsert_profile(&ProfileInput {
            id: 1,
            events: vec![event(30, "A", json!({})), event(10, "B", json!({"x": 1}))],
            ..Default::default()
        });
        index.upsert_profile(&ProfileInput {
            id: 2,
            events: vec![event(20, "C", json!({"x": 1}))],
            ..Default::default()
        });
        index.add_event(1, &event(15, "D", json!({})));
        let names = |index: &ProfileIndex, id| -> Vec<String> {
            let slot = index.slot(id).unwrap();
            index
                .events(slot)
                .iter()
                .map(|e| index.symbols.text(e.name).to_owned())
                .collect()
        };
        assert_eq!(names(&index, 1), ["B", "D", "A"]);
        index.merge(1, 2);
        assert_eq!(names(&index, 1), ["B", "D", "C", "A"]);
        assert_eq!(index.slot(2), None);
        assert_eq!(index.profile_count(), 1);
        index.compact();
        assert_eq!(names(&index, 1), ["B", "D", "C", "A"]);
        assert_eq!(index.memory().events, 4);
        // Equal property sets are stored once.
        assert_eq!(index.property_sets.len(), 2);
    }

    #[test]
    fn an_insert_before_several_events_of_one_profile_keeps_their_references() {
        let mut index = ProfileIndex::new();
        // Profile 1: two orders; then profile 2's older order goes in front of both.
        index.add_event(1, &event(20, "Order", json!({"n": 1})));
        index.add_event(1, &event(30, "Order", json!({"n": 2})));
        index.add_event(2, &event(10, "Order", json!({"n": 3})));
        let times = |index: &ProfileIndex, id| -> Vec<i64> {
            let slot = index.slot(id).unwrap();
            index.events(slot).iter().map(|e| e.timestamp_ms).collect()
        };
        assert_eq!(times(&index, 1), [20, 30]);
        assert_eq!(times(&index, 2), [10]);
        index.compact();
        assert_eq!(times(&index, 1), [20, 30]);
    }

    /// One step of the model test: an event, a merge, an erasure or a compaction.
    #[derive(Debug, Clone)]
    enum Step {
        Add { id: i64, name: u8, ts: i64 },
        Merge { winner: i64, loser: i64 },
        Remove { id: i64 },
        Compact,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            // Mostly nearly in order (a small jitter around a rising clock), some much
            // older: the near-tail insert and the late buffer both get exercised.
            20 => (0i64..12, 0u8..3, 0i64..40).prop_map(|(id, name, ts)| Step::Add { id, name, ts }),
            2 => (0i64..12, 0u8..3, -2_000i64..0).prop_map(|(id, name, ts)| Step::Add { id, name, ts }),
            1 => (0i64..12, 0i64..12).prop_map(|(winner, loser)| Step::Merge { winner, loser }),
            1 => (0i64..12).prop_map(|id| Step::Remove { id }),
            1 => Just(Step::Compact),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever the order of arrival, each profile's events are exactly what it was
        /// given (merges included), in time order, and each name's postings point back
        /// at the profiles that hold them.
        #[test]
        fn every_profile_keeps_exactly_its_events_in_time_order(
            steps in proptest::collection::vec(step(), 1..1_500),
        ) {
            let mut index = ProfileIndex::new();
            let mut model: HashMap<i64, Vec<(i64, String)>> = HashMap::new();
            let mut clock = 1_000i64;
            for step in steps {
                match step {
                    Step::Add { id, name, ts } => {
                        clock += 1;
                        let name = format!("E{name}");
                        let at = clock + ts;
                        index.add_event(id, &event(at, &name, json!({})));
                        model.entry(id).or_default().push((at, name));
                    }
                    Step::Merge { winner, loser } => {
                        if winner != loser && index.merge(winner, loser).is_some() {
                            let moved = model.remove(&loser).unwrap_or_default();
                            model.entry(winner).or_default().extend(moved);
                        }
                    }
                    Step::Remove { id } => {
                        index.remove(id);
                        model.remove(&id);
                    }
                    Step::Compact => index.compact(),
                }
            }
            for (id, expected) in &model {
                let mut expected = expected.clone();
                expected.sort();
                let Some(slot) = index.slot(*id) else {
                    proptest::prop_assert!(expected.is_empty(), "profile {} lost", id);
                    continue;
                };
                let got: Vec<(i64, String)> = index
                    .events(slot)
                    .iter()
                    .map(|e| (e.timestamp_ms, index.symbols.text(e.name).to_owned()))
                    .collect();
                proptest::prop_assert!(got.windows(2).all(|w| w[0].0 <= w[1].0), "not in time order: {:?}", got);
                // The in-place view reads the same events, by name and by window.
                let copied = index.events(slot);
                let view = index.profile_events(slot);
                proptest::prop_assert_eq!(view.iter().collect::<Vec<_>>(), copied.clone());
                let (from, to) = (clock - 50, clock - 10);
                let e1 = index.symbols.get("E1");
                proptest::prop_assert_eq!(
                    e1.map(|n| view.between(from, to).named(n).collect::<Vec<_>>()).unwrap_or_default(),
                    copied
                        .iter()
                        .filter(|e| Some(e.name) == e1 && from <= e.timestamp_ms && e.timestamp_ms <= to)
                        .copied()
                        .collect::<Vec<_>>()
                );
                let mut sorted = got.clone();
                sorted.sort();
                proptest::prop_assert_eq!(sorted, expected);
            }
            // Each name's live postings: in time order in the main run, and as many per
            // profile as the model holds.
            for name in ["E0", "E1", "E2"] {
                let Some(sym) = index.symbols.get(name) else { continue };
                let Some(postings) = index.postings(sym) else { continue };
                let main = postings.main_between(i64::MIN, i64::MAX);
                proptest::prop_assert!(main.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));
                let mut per_profile: HashMap<i64, usize> = HashMap::new();
                for p in postings.between(i64::MIN, i64::MAX) {
                    *per_profile.entry(index.profile_id(p.slot)).or_default() += 1;
                }
                for (id, events) in &model {
                    let want = events.iter().filter(|(_, n)| n == name).count();
                    proptest::prop_assert_eq!(per_profile.get(id).copied().unwrap_or(0), want);
                }
            }
        }
    }

    #[test]
    fn nested_traits_are_columns_under_dotted_paths() {
        let mut index = ProfileIndex::new();
        let slot = index.upsert_profile(&ProfileInput {
            id: 7,
            traits: json!({"address": {"country": "DE"}, "plan": "pro"})
                .as_object()
                .cloned()
                .unwrap(),
            identifier_types: vec!["email".into()],
            events: vec![],
        });
        assert_eq!(index.trait_json(slot, "address.country"), Some(json!("DE")));
        assert_eq!(index.trait_json(slot, "plan"), Some(json!("pro")));
        assert!(index.has_identifier(slot, "email"));
        assert!(!index.has_identifier(slot, "phone"));
        index.set_traits(slot, &Map::new());
        assert_eq!(index.trait_json(slot, "plan"), None);
    }

    #[test]
    fn the_latest_consent_decision_wins() {
        let mut index = ProfileIndex::new();
        let mut granted = event(10, "Signed Up", json!({}));
        granted.consent = vec![("marketing".into(), true)];
        let mut revoked = event(20, "Settings Changed", json!({}));
        revoked.consent = vec![("marketing".into(), false)];
        index.add_event(1, &revoked);
        let slot = index.add_event(1, &granted);
        let marketing = index.symbols.get("marketing").unwrap();
        assert!(!index.consent(slot, marketing));
    }
}
