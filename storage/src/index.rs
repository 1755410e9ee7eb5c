//! The head's series registry: interned symbols, shard-local `u32` series
//! ids, the label-set → id lookup, and roaring postings per (name, value)
//! plus the all-series bitmap; matcher evaluation over them.
//!
//! Invariants:
//! * every registered series has its id in `all` and in exactly one posting
//!   per label, `postings[name][value]`, and nowhere else; an empty bitmap
//!   or an empty value map is removed at once;
//! * a symbol's reference count is the number of label names and values of
//!   registered series that use it; at zero the symbol is forgotten and its
//!   id reused;
//! * lookups are collision safe: `by_hash` maps an xxh3 hash to one series,
//!   `collisions` holds the other series whose label sets share that hash,
//!   and every hit is confirmed by comparing label sets;
//! * `bytes` is the heap estimate of the last [`Index::recount`] plus
//!   per-operation estimates since, so reading it is O(1).

use std::collections::HashMap;
use std::sync::Arc;

use roaring::RoaringBitmap;

use crate::labels::Labels;
use crate::matcher::{MatchOp, Matcher};

/// Estimated heap bytes of one interned symbol besides its text: the `Arc`
/// header, its slot, its count and its map entry.
const SYMBOL_BYTES: usize = 16 + 16 + 4 + 32;
/// Estimated heap bytes of a posting bitmap and its map entry.
const BITMAP_BYTES: usize = 48 + 16;
/// Estimated bytes of one id in a posting (roaring array container) and in
/// the all-series bitmap.
const ID_BYTES: usize = 2;
/// Estimated bytes of a series' entry in the hash lookup.
const LOOKUP_BYTES: usize = 24;

/// Interned strings with reference counts.
#[derive(Debug, Default)]
struct Symbols {
    strings: Vec<Arc<str>>,
    refs: Vec<u32>,
    ids: HashMap<Arc<str>, u32>,
    free: Vec<u32>,
}

impl Symbols {
    /// Interns `s`; returns its id and the estimated bytes it added.
    fn intern(&mut self, s: &str) -> (u32, usize) {
        if let Some(&id) = self.ids.get(s) {
            self.refs[id as usize] += 1;
            return (id, 0);
        }
        let arc: Arc<str> = Arc::from(s);
        let id = match self.free.pop() {
            Some(id) => {
                self.strings[id as usize] = arc.clone();
                self.refs[id as usize] = 1;
                id
            }
            None => {
                self.strings.push(arc.clone());
                self.refs.push(1);
                // The registry caps series ids at u32; symbols are at most
                // twice the labels of those series, bounded by memory first.
                (self.strings.len() - 1) as u32
            }
        };
        self.ids.insert(arc, id);
        (id, s.len() + SYMBOL_BYTES)
    }

    /// Drops one reference; returns the estimated bytes freed.
    fn release(&mut self, id: u32) -> usize {
        let r = &mut self.refs[id as usize];
        *r -= 1;
        if *r > 0 {
            return 0;
        }
        let s = std::mem::replace(&mut self.strings[id as usize], Arc::from(""));
        self.ids.remove(&s);
        self.free.push(id);
        s.len() + SYMBOL_BYTES
    }

    fn get(&self, id: u32) -> &str {
        &self.strings[id as usize]
    }

    fn lookup(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    fn heap_bytes(&self) -> usize {
        let strings: usize = self.strings.iter().map(|s| s.len() + 16).sum();
        strings
            + self.strings.capacity() * 16
            + self.refs.capacity() * 4
            + self.ids.capacity() * (16 + 4 + 8)
            + self.free.capacity() * 4
    }
}

/// How a regex pattern can be evaluated without running the regex.
enum Pattern {
    /// `.*`: every value, the empty one included.
    Any,
    /// `.+`: every non-empty value.
    NonEmpty,
    /// `a|b|c` with no metacharacters: exactly these values.
    Literals(Vec<String>),
    /// `foo.*` with a literal `foo`: values starting with it.
    Prefix(String),
    /// Anything else: run the regex.
    General,
}

fn is_literal(s: &str) -> bool {
    !s.chars().any(|c| "\\.+*?()|[]{}^$".contains(c))
}

fn classify(p: &str) -> Pattern {
    match p {
        ".*" => return Pattern::Any,
        ".+" => return Pattern::NonEmpty,
        _ => {}
    }
    if let Some(prefix) = p.strip_suffix(".*")
        && !prefix.is_empty()
        && is_literal(prefix)
    {
        return Pattern::Prefix(prefix.to_owned());
    }
    if p.split('|').all(is_literal) {
        return Pattern::Literals(p.split('|').map(str::to_owned).collect());
    }
    Pattern::General
}

/// Evaluation order of matchers: `=` first, then literal and other regexes,
/// then matchers that match the empty string (complements of postings).
fn selectivity_rank(m: &Matcher) -> u8 {
    if m.matches_empty() {
        return 3;
    }
    match m.op() {
        MatchOp::Equal => 0,
        MatchOp::Regex if matches!(classify(m.value()), Pattern::Literals(_)) => 1,
        _ => 2,
    }
}

/// Postings that matchers can be evaluated over: the head's [`Index`] or
/// a persisted block's.
pub(crate) trait PostingsSource {
    /// Every series.
    fn all(&self) -> &RoaringBitmap;
    /// Calls `f` with the series having `name` = `value`, if any.
    fn with_exact(&self, name: &str, value: &str, f: &mut dyn FnMut(&RoaringBitmap));
    /// Calls `f` with the series of each value of `name` that `keep`
    /// accepts.
    fn with_values(
        &self,
        name: &str,
        keep: &mut dyn FnMut(&str) -> bool,
        f: &mut dyn FnMut(&RoaringBitmap),
    );
}

/// Series matching every matcher (all series for no matcher).
///
/// Matchers run from the likely most selective (`=`) to the likely least
/// (those matching the empty string, computed as complements); each one
/// only unions postings within the ids still selected, so a broad regex
/// after a narrow `=` costs little.
pub(crate) fn select_postings(src: &impl PostingsSource, matchers: &[Matcher]) -> RoaringBitmap {
    let mut order: Vec<&Matcher> = matchers.iter().collect();
    order.sort_by_key(|m| selectivity_rank(m));
    let mut acc: Option<RoaringBitmap> = None;
    for m in order {
        let ids = select_one(src, m, acc.as_ref());
        let done = ids.is_empty();
        acc = Some(ids);
        if done {
            break;
        }
    }
    acc.unwrap_or_else(|| src.all().clone())
}

/// Series among `within` (all series when `None`) selected by one matcher.
/// A series without the label has the value `""`. With `P` the series
/// whose value passes the matcher's positive test (`=` or `=~` for either
/// polarity) and `H` the series that have the label: `=`/`=~` select `P`,
/// plus the series lacking the label when `""` passes; `!=`/`!~` select
/// `H − P`, plus those lacking it when `""` fails the positive test.
fn select_one(
    src: &impl PostingsSource,
    m: &Matcher,
    within: Option<&RoaringBitmap>,
) -> RoaringBitmap {
    let base = within.unwrap_or(src.all());
    let negated = matches!(m.op(), MatchOp::NotEqual | MatchOp::NotRegex);
    let pattern = match m.op() {
        MatchOp::Equal | MatchOp::NotEqual => Pattern::Literals(vec![m.value().to_owned()]),
        MatchOp::Regex | MatchOp::NotRegex => classify(m.value()),
    };
    // Whether "" passes the positive test.
    let empty_passes = m.matches_empty() != negated;
    if matches!(pattern, Pattern::Any) {
        return if negated {
            RoaringBitmap::new()
        } else {
            base.clone()
        };
    }
    let mut passing = RoaringBitmap::new();
    let mut add = |ids: &RoaringBitmap| match within {
        Some(w) => passing |= ids & w,
        None => passing |= ids,
    };
    let name = m.name();
    match &pattern {
        Pattern::Literals(lits) => {
            for lit in lits {
                src.with_exact(name, lit, &mut add);
            }
        }
        Pattern::NonEmpty => src.with_values(name, &mut |_| true, &mut add),
        Pattern::Prefix(p) => src.with_values(name, &mut |v| v.starts_with(p.as_str()), &mut add),
        Pattern::General | Pattern::Any => src.with_values(
            name,
            &mut |v| if negated { !m.matches(v) } else { m.matches(v) },
            &mut add,
        ),
    }
    let having = || {
        let mut h = RoaringBitmap::new();
        src.with_values(name, &mut |_| true, &mut |ids| match within {
            Some(w) => h |= ids & w,
            None => h |= ids,
        });
        h
    };
    match (negated, empty_passes) {
        (false, false) => passing,
        (false, true) => base - &(having() - &passing),
        (true, false) => base - &passing,
        (true, true) => having() - &passing,
    }
}

/// Series ids, symbols and postings. See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Index {
    symbols: Symbols,
    /// name symbol → value symbol → series ids.
    postings: HashMap<u32, HashMap<u32, RoaringBitmap>>,
    all: RoaringBitmap,
    by_hash: HashMap<u64, u32>,
    collisions: HashMap<u64, Vec<u32>>,
    /// Heap estimate; see the module invariants.
    bytes: usize,
}

impl Index {
    /// Registers series `id` with `labels` (whose xxh3 hash is `hash`);
    /// returns its interned label pairs, name then value, in label order.
    pub(crate) fn add(&mut self, id: u32, labels: &Labels, hash: u64) -> Box<[u32]> {
        let mut syms = Vec::with_capacity(labels.len() * 2);
        let mut bytes = ID_BYTES + LOOKUP_BYTES;
        for l in labels.iter() {
            let (n, nb) = self.symbols.intern(l.name);
            let (v, vb) = self.symbols.intern(l.value);
            syms.push(n);
            syms.push(v);
            let values = self.postings.entry(n).or_insert_with(|| {
                bytes += BITMAP_BYTES;
                HashMap::new()
            });
            let ids = values.entry(v).or_insert_with(|| {
                bytes += BITMAP_BYTES;
                RoaringBitmap::new()
            });
            ids.insert(id);
            bytes += nb + vb + ID_BYTES;
        }
        self.bytes += bytes;
        self.all.insert(id);
        if let Some(&_first) = self.by_hash.get(&hash) {
            self.collisions.entry(hash).or_default().push(id);
        } else {
            self.by_hash.insert(hash, id);
        }
        syms.into_boxed_slice()
    }

    /// Entries of the hash → id lookup, collisions included (tests check
    /// that removals leave none behind).
    #[cfg(test)]
    pub(crate) fn lookup_entries(&self) -> usize {
        self.by_hash.len() + self.collisions.values().map(Vec::len).sum::<usize>()
    }

    /// Unregisters series `id`, whose interned pairs are `syms`.
    pub(crate) fn remove(&mut self, id: u32, syms: &[u32], hash: u64) {
        let mut bytes = ID_BYTES + LOOKUP_BYTES;
        for pair in syms.chunks_exact(2) {
            let (n, v) = (pair[0], pair[1]);
            if let Some(values) = self.postings.get_mut(&n) {
                if let Some(ids) = values.get_mut(&v) {
                    ids.remove(id);
                    bytes += ID_BYTES;
                    if ids.is_empty() {
                        values.remove(&v);
                        bytes += BITMAP_BYTES;
                    }
                }
                if values.is_empty() {
                    self.postings.remove(&n);
                    bytes += BITMAP_BYTES;
                }
            }
            bytes += self.symbols.release(n);
            bytes += self.symbols.release(v);
        }
        self.bytes = self.bytes.saturating_sub(bytes);
        self.all.remove(id);
        if self.by_hash.get(&hash) == Some(&id) {
            match self.collisions.get_mut(&hash).and_then(Vec::pop) {
                Some(other) => {
                    self.by_hash.insert(hash, other);
                }
                None => {
                    self.by_hash.remove(&hash);
                }
            }
        } else if let Some(others) = self.collisions.get_mut(&hash) {
            others.retain(|&o| o != id);
        }
        if self.collisions.get(&hash).is_some_and(Vec::is_empty) {
            self.collisions.remove(&hash);
        }
    }

    /// The series with exactly `labels`, given their hash and a way to get
    /// a candidate's interned pairs.
    pub(crate) fn lookup<'s>(
        &self,
        labels: &Labels,
        hash: u64,
        syms_of: impl Fn(u32) -> Option<&'s [u32]>,
    ) -> Option<u32> {
        let first = *self.by_hash.get(&hash)?;
        let same = |id: u32| syms_of(id).is_some_and(|s| self.equal(s, labels));
        if same(first) {
            return Some(first);
        }
        self.collisions
            .get(&hash)?
            .iter()
            .copied()
            .find(|&id| same(id))
    }

    /// Whether interned pairs `syms` spell exactly `labels`.
    pub(crate) fn equal(&self, syms: &[u32], labels: &Labels) -> bool {
        syms.len() == labels.len() * 2
            && syms
                .chunks_exact(2)
                .zip(labels.iter())
                .all(|(p, l)| self.symbols.get(p[0]) == l.name && self.symbols.get(p[1]) == l.value)
    }

    /// The label set spelled by interned pairs.
    pub(crate) fn labels(&self, syms: &[u32]) -> Labels {
        let pairs = syms
            .chunks_exact(2)
            .map(|p| (self.symbols.get(p[0]), self.symbols.get(p[1])));
        // The pairs were interned from a valid `Labels` (sorted, unique,
        // non-empty, under 4 GiB), so rebuilding it cannot fail.
        Labels::from_sorted_unchecked(pairs).unwrap_or_default()
    }

    /// Number of registered series.
    pub(crate) fn series_count(&self) -> u64 {
        self.all.len()
    }

    /// Series ids matching every matcher (all series for no matcher).
    pub(crate) fn select(&self, matchers: &[Matcher]) -> RoaringBitmap {
        select_postings(self, matchers)
    }

    /// For each interned label name, the bitmap of series having it.
    pub(crate) fn names(
        &self,
    ) -> impl Iterator<Item = (&str, impl Iterator<Item = &RoaringBitmap>)> {
        self.postings
            .iter()
            .map(|(&n, values)| (self.symbols.get(n), values.values()))
    }

    /// The values of label `name` with their series.
    pub(crate) fn values(&self, name: &str) -> impl Iterator<Item = (&str, &RoaringBitmap)> {
        self.symbols
            .lookup(name)
            .and_then(|n| self.postings.get(&n))
            .into_iter()
            .flat_map(|values| values.iter().map(|(&v, ids)| (self.symbols.get(v), ids)))
    }

    /// Approximate heap bytes of symbols, postings and lookup maps, in O(1).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.bytes
    }

    /// Recomputes the heap estimate from the structures (O(label pairs)).
    pub(crate) fn recount(&mut self) {
        self.bytes = self.measure();
    }

    fn measure(&self) -> usize {
        let postings: usize = self
            .postings
            .values()
            .map(|values| {
                values.capacity() * (4 + 8 + 24 + 8)
                    + values.values().map(|b| b.serialized_size()).sum::<usize>()
            })
            .sum();
        self.symbols.heap_bytes()
            + postings
            + self.postings.capacity() * (4 + 48 + 8)
            + self.all.serialized_size()
            + self.by_hash.capacity() * (8 + 4 + 4)
            + self.collisions.capacity() * (8 + 24 + 8)
    }
}

impl PostingsSource for Index {
    fn all(&self) -> &RoaringBitmap {
        &self.all
    }

    fn with_exact(&self, name: &str, value: &str, f: &mut dyn FnMut(&RoaringBitmap)) {
        let ids = self
            .symbols
            .lookup(name)
            .and_then(|n| self.postings.get(&n))
            .and_then(|values| values.get(&self.symbols.lookup(value)?));
        if let Some(ids) = ids {
            f(ids);
        }
    }

    fn with_values(
        &self,
        name: &str,
        keep: &mut dyn FnMut(&str) -> bool,
        f: &mut dyn FnMut(&RoaringBitmap),
    ) {
        for (v, ids) in self.values(name) {
            if keep(v) {
                f(ids);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ls(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied()).unwrap()
    }

    /// A tiny registry of series for tests: the index plus each id's pairs.
    #[derive(Default)]
    struct Reg {
        index: Index,
        syms: Vec<Option<Box<[u32]>>>,
        hashes: Vec<u64>,
    }

    impl Reg {
        fn add(&mut self, l: &Labels, hash: u64) -> u32 {
            let id = self.syms.len() as u32;
            let s = self.index.add(id, l, hash);
            self.syms.push(Some(s));
            self.hashes.push(hash);
            id
        }

        fn lookup(&self, l: &Labels, hash: u64) -> Option<u32> {
            self.index
                .lookup(l, hash, |id| self.syms[id as usize].as_deref())
        }

        fn remove(&mut self, id: u32) {
            let s = self.syms[id as usize].take().unwrap();
            self.index.remove(id, &s, self.hashes[id as usize]);
        }
    }

    #[test]
    fn hash_collisions_keep_series_apart() {
        let mut r = Reg::default();
        let (a, b, c) = (ls(&[("a", "1")]), ls(&[("b", "2")]), ls(&[("c", "3")]));
        // Force the same hash for all three.
        let ia = r.add(&a, 7);
        let ib = r.add(&b, 7);
        let ic = r.add(&c, 7);
        assert_eq!(r.lookup(&a, 7), Some(ia));
        assert_eq!(r.lookup(&b, 7), Some(ib));
        assert_eq!(r.lookup(&c, 7), Some(ic));
        assert_eq!(r.lookup(&ls(&[("d", "4")]), 7), None);
        r.remove(ia);
        assert_eq!(r.lookup(&a, 7), None);
        assert_eq!(r.lookup(&b, 7), Some(ib));
        assert_eq!(r.lookup(&c, 7), Some(ic));
        r.remove(ic);
        assert_eq!(r.lookup(&b, 7), Some(ib));
        r.remove(ib);
        assert!(r.index.by_hash.is_empty() && r.index.collisions.is_empty());
    }

    #[test]
    fn symbols_are_released_and_reused() {
        let mut r = Reg::default();
        let a = ls(&[("job", "x")]);
        let id = r.add(&a, a.hash());
        assert_eq!(r.index.labels(r.syms[0].as_deref().unwrap()), a);
        r.remove(id);
        assert!(r.index.symbols.ids.is_empty());
        assert!(r.index.postings.is_empty());
        let b = ls(&[("job", "y")]);
        r.add(&b, b.hash());
        assert_eq!(r.index.symbols.strings.len(), 2);
        assert_eq!(r.index.labels(r.syms[1].as_deref().unwrap()), b);
    }

    fn label_set() -> impl Strategy<Value = Labels> {
        prop::collection::btree_map(
            prop::sample::select(vec!["a", "b", "c"]),
            prop::sample::select(vec!["x", "y", "xy", "yx", "foo", "foobar"]),
            0..3,
        )
        .prop_map(|m| Labels::from_pairs(m).unwrap())
    }

    fn matcher() -> impl Strategy<Value = Matcher> {
        let op = prop::sample::select(vec![
            MatchOp::Equal,
            MatchOp::NotEqual,
            MatchOp::Regex,
            MatchOp::NotRegex,
        ]);
        let value = prop::sample::select(vec![
            "", "x", "foo", ".*", ".+", "x|y", "x|", "foo.*", "f.*", "x.", "(x|y)+", "y?x",
        ]);
        (op, prop::sample::select(vec!["a", "b", "d"]), value)
            .prop_map(|(op, n, v)| Matcher::new(op, n, v).unwrap())
    }

    proptest! {
        #[test]
        fn select_agrees_with_direct_matching(
            sets in prop::collection::vec(label_set(), 0..12),
            matchers in prop::collection::vec(matcher(), 0..3),
            remove in prop::collection::vec(any::<bool>(), 12),
        ) {
            let mut r = Reg::default();
            let mut live = Vec::new();
            for l in &sets {
                if r.lookup(l, l.hash()).is_none() {
                    live.push((r.add(l, l.hash()), l.clone()));
                }
            }
            live.retain(|(id, _)| {
                if remove[*id as usize] {
                    r.remove(*id);
                    false
                } else {
                    true
                }
            });
            let got: Vec<u32> = r.index.select(&matchers).iter().collect();
            let want: Vec<u32> = live
                .iter()
                .filter(|(_, l)| matchers.iter().all(|m| m.matches(l.get(m.name()).unwrap_or(""))))
                .map(|(id, _)| *id)
                .collect();
            prop_assert_eq!(got, want);
            for (id, l) in &live {
                prop_assert_eq!(r.lookup(l, l.hash()), Some(*id));
            }
        }
    }
}
