//! [`Bitset`]: a set of profile slots, the currency of the batch evaluator and the
//! index's live-profile set.

/// A dense index of a profile in the index.
pub type Slot = u32;

/// A set of slots.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bitset {
    pub(crate) words: Vec<u64>,
    pub(crate) len: usize,
}

impl Bitset {
    /// An empty set over `len` slots.
    pub fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    /// Sets the number of slots it ranges over; slots added are out.
    pub fn resize(&mut self, len: usize) {
        self.len = len;
        self.words.resize(len.div_ceil(64), 0);
    }

    /// Number of slots it ranges over.
    pub fn capacity(&self) -> usize {
        self.len
    }

    /// Adds a slot (growing the set when needed).
    pub fn insert(&mut self, slot: Slot) {
        let s = slot as usize;
        if s >= self.len {
            self.len = s + 1;
            self.words.resize(self.len.div_ceil(64), 0);
        }
        self.words[s / 64] |= 1 << (s % 64);
    }

    /// Removes a slot.
    pub fn remove(&mut self, slot: Slot) {
        let s = slot as usize;
        if let Some(word) = self.words.get_mut(s / 64) {
            *word &= !(1 << (s % 64));
        }
    }

    /// Whether a slot is in.
    pub fn contains(&self, slot: Slot) -> bool {
        let s = slot as usize;
        self.words
            .get(s / 64)
            .is_some_and(|w| w & (1 << (s % 64)) != 0)
    }

    /// Number of slots in.
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The slots in, ascending.
    pub fn iter(&self) -> impl Iterator<Item = Slot> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &word)| {
            let mut w = word;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros();
                w &= w - 1;
                Some((i * 64) as Slot + bit)
            })
        })
    }

    fn zip_with(&self, other: &Bitset, f: impl Fn(u64, u64) -> u64) -> Bitset {
        let len = self.len.max(other.len);
        let words = (0..len.div_ceil(64))
            .map(|i| {
                f(
                    self.words.get(i).copied().unwrap_or(0),
                    other.words.get(i).copied().unwrap_or(0),
                )
            })
            .collect();
        Bitset { words, len }
    }

    /// Slots in both.
    pub fn and(&self, other: &Bitset) -> Bitset {
        self.zip_with(other, |a, b| a & b)
    }

    /// Slots in either.
    pub fn or(&self, other: &Bitset) -> Bitset {
        self.zip_with(other, |a, b| a | b)
    }

    /// Slots in `self` but not in `other`.
    pub fn minus(&self, other: &Bitset) -> Bitset {
        self.zip_with(other, |a, b| a & !b)
    }

    /// Whether no slot is in.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }
}
