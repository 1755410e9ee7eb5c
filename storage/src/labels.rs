//! Label sets: the identity of a series.
//!
//! A [`Labels`] value is an immutable, sorted-by-name set of `(name, value)`
//! pairs with unique names and no empty values (in Prometheus an empty value
//! means "label absent", so `{a=""}` and `{}` are the same series).
//!
//! Representation: every name and value of the set is stored back to back in
//! one `Box<str>`, with one `u32` end offset per name and per value. A label
//! set therefore costs two allocations however many labels it has, compares
//! and hashes over contiguous memory, and clones cheaply enough for the query
//! path. The per-shard symbol interning of the head is separate (see the head
//! module); this type is the value that crosses crate boundaries.
//!
//! Invariants (upheld by every constructor):
//! * names are strictly increasing (sorted, no duplicates);
//! * no name is empty and no value is empty;
//! * `ends.len() == 2 * len()`, offsets are increasing and `<= buf.len()`.

use std::cmp::Ordering;
use std::fmt;

use xxhash_rust::xxh3::Xxh3;

/// The label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// Byte that separates names and values in [`Labels::hash`]. It cannot occur
/// in valid UTF-8, so no two different label sets feed the same byte stream.
const HASH_SEP: u8 = 0xff;

/// How label names are validated.
///
/// Prometheus 3 accepts any non-empty UTF-8 name (`Utf8`); the legacy scheme
/// of Prometheus 2 allows only `[a-zA-Z_][a-zA-Z0-9_]*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameValidation {
    /// Any non-empty UTF-8 string (Prometheus 3's default).
    #[default]
    Utf8,
    /// `[a-zA-Z_][a-zA-Z0-9_]*` (Prometheus 2).
    Legacy,
}

/// Why a label set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// A label name is empty.
    #[error("empty label name")]
    EmptyName,
    /// A label name does not match the validation scheme.
    #[error("invalid label name {name:?}")]
    InvalidName {
        /// The offending name.
        name: String,
    },
    /// The same name occurs twice.
    #[error("duplicate label name {name:?}")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// The label set is larger than the 4 GiB the offsets can address.
    #[error("label set too large")]
    TooLarge,
}

/// Whether `name` is a legacy (Prometheus 2) label name.
pub fn is_legacy_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `name` is a legacy (Prometheus 2) metric name: like a label name,
/// but colons are also allowed.
pub fn is_legacy_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Checks a label name against a validation scheme.
pub fn validate_label_name(name: &str, scheme: NameValidation) -> Result<(), LabelError> {
    if name.is_empty() {
        return Err(LabelError::EmptyName);
    }
    match scheme {
        // `&str` is valid UTF-8 by construction; non-empty is all that is left.
        NameValidation::Utf8 => Ok(()),
        NameValidation::Legacy if is_legacy_label_name(name) => Ok(()),
        NameValidation::Legacy => Err(LabelError::InvalidName {
            name: name.to_owned(),
        }),
    }
}

/// A sorted, immutable set of labels. See the module documentation.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Labels {
    buf: Box<str>,
    ends: Box<[u32]>,
}

/// One label of a [`Labels`] set, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label<'a> {
    /// The label name.
    pub name: &'a str,
    /// The label value (never empty inside a [`Labels`]).
    pub value: &'a str,
}

impl Labels {
    /// The empty label set.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Builds a label set from pairs in any order, validating names with the
    /// UTF-8 scheme. Pairs with an empty value are dropped; a repeated name is
    /// an error.
    pub fn from_pairs<N, V, I>(pairs: I) -> Result<Self, LabelError>
    where
        N: AsRef<str>,
        V: AsRef<str>,
        I: IntoIterator<Item = (N, V)>,
    {
        Self::from_pairs_with(pairs, NameValidation::Utf8)
    }

    /// [`Labels::from_pairs`] with an explicit name validation scheme.
    pub fn from_pairs_with<N, V, I>(pairs: I, scheme: NameValidation) -> Result<Self, LabelError>
    where
        N: AsRef<str>,
        V: AsRef<str>,
        I: IntoIterator<Item = (N, V)>,
    {
        let mut owned: Vec<(N, V)> = pairs
            .into_iter()
            .filter(|(_, v)| !v.as_ref().is_empty())
            .collect();
        for (n, _) in &owned {
            validate_label_name(n.as_ref(), scheme)?;
        }
        owned.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        for w in owned.windows(2) {
            if w[0].0.as_ref() == w[1].0.as_ref() {
                return Err(LabelError::DuplicateName {
                    name: w[0].0.as_ref().to_owned(),
                });
            }
        }
        Self::from_sorted_unchecked(owned.iter().map(|(n, v)| (n.as_ref(), v.as_ref())))
    }

    /// Builds a label set from pairs that the caller guarantees are sorted by
    /// name, unique and non-empty. Only the total size is checked. Used by
    /// the builder and by storage code that reads already-valid sets.
    pub(crate) fn from_sorted_unchecked<'a, I>(pairs: I) -> Result<Self, LabelError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut buf = String::new();
        let mut ends = Vec::new();
        let mut prev_name_end: Option<(usize, usize)> = None;
        for (n, v) in pairs {
            debug_assert!(!n.is_empty() && !v.is_empty(), "empty name or value");
            let start = buf.len();
            buf.push_str(n);
            if let Some((ps, pe)) = prev_name_end {
                debug_assert!(&buf[ps..pe] < n, "names not strictly increasing");
            }
            prev_name_end = Some((start, buf.len()));
            ends.push(u32::try_from(buf.len()).map_err(|_| LabelError::TooLarge)?);
            buf.push_str(v);
            ends.push(u32::try_from(buf.len()).map_err(|_| LabelError::TooLarge)?);
        }
        Ok(Labels {
            buf: buf.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        })
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.ends.len() / 2
    }

    /// Whether the set has no labels.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `i`-th label in name order. Panics when `i >= len()`.
    pub fn at(&self, i: usize) -> Label<'_> {
        let name_start = if i == 0 {
            0
        } else {
            self.ends[2 * i - 1] as usize
        };
        let name_end = self.ends[2 * i] as usize;
        let value_end = self.ends[2 * i + 1] as usize;
        Label {
            name: &self.buf[name_start..name_end],
            value: &self.buf[name_end..value_end],
        }
    }

    /// The labels in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Label<'_>> + '_ {
        (0..self.len()).map(move |i| self.at(i))
    }

    /// The value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        // Binary search: names are sorted.
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let l = self.at(mid);
            match l.name.cmp(name) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Some(l.value),
            }
        }
        None
    }

    /// The metric name (`__name__`), if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// Whether a label named `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The xxh3 hash of the label set. Equal sets hash equally; lookups must
    /// still compare the sets, since different sets may collide.
    pub fn hash(&self) -> u64 {
        let mut h = Xxh3::new();
        for l in self.iter() {
            h.update(l.name.as_bytes());
            h.update(&[HASH_SEP]);
            h.update(l.value.as_bytes());
            h.update(&[HASH_SEP]);
        }
        h.digest()
    }

    /// Approximate heap bytes held by this label set.
    pub fn heap_bytes(&self) -> usize {
        self.buf.len() + self.ends.len() * std::mem::size_of::<u32>()
    }

    /// A builder seeded with this set, for relabeling and result shaping.
    pub fn builder(&self) -> LabelsBuilder {
        LabelsBuilder {
            pairs: self
                .iter()
                .map(|l| (l.name.to_owned(), l.value.to_owned()))
                .collect(),
        }
    }
}

impl Ord for Labels {
    /// Prometheus's order: compare label by label, name first, then value; a
    /// set that is a prefix of another sorts first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.iter().cmp(other.iter())
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for Labels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(Labels::hash(self));
    }
}

impl fmt::Display for Labels {
    /// `{a="b", c="d"}`, with values escaped as in PromQL strings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if is_legacy_label_name(l.name) {
                f.write_str(l.name)?;
            } else {
                write!(f, "{:?}", l.name)?;
            }
            write!(f, "={:?}", l.value)?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A mutable label set: set, delete, keep; then [`LabelsBuilder::build`].
///
/// Setting an empty value deletes the label, as in Prometheus.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelsBuilder {
    /// Unsorted pairs with unique names and non-empty values.
    pairs: Vec<(String, String)>,
}

impl LabelsBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name` to `value`; an empty value removes the label.
    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        if value.is_empty() {
            return self.del(name);
        }
        match self.pairs.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => {
                v.clear();
                v.push_str(value);
            }
            None => self.pairs.push((name.to_owned(), value.to_owned())),
        }
        self
    }

    /// Removes `name` if present.
    pub fn del(&mut self, name: &str) -> &mut Self {
        self.pairs.retain(|(n, _)| n != name);
        self
    }

    /// Keeps only the labels for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) -> &mut Self {
        self.pairs.retain(|(n, v)| keep(n, v));
        self
    }

    /// The current labels, in no particular order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Builds the sorted set. Fails only on an empty name or a set over 4 GiB.
    pub fn build(&self) -> Result<Labels, LabelError> {
        let mut refs: Vec<(&str, &str)> = self.pairs().collect();
        if refs.iter().any(|(n, _)| n.is_empty()) {
            return Err(LabelError::EmptyName);
        }
        refs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        Labels::from_sorted_unchecked(refs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn sorted_and_empty_values_dropped() {
        let l = ls(&[("job", "api"), ("__name__", "up"), ("zone", "")]);
        let names: Vec<_> = l.iter().map(|l| l.name).collect();
        assert_eq!(names, ["__name__", "job"]);
        assert_eq!(l.get("job"), Some("api"));
        assert_eq!(l.get("zone"), None);
        assert_eq!(l.metric_name(), Some("up"));
        assert_eq!(ls(&[("a", "")]), Labels::empty());
    }

    #[test]
    fn duplicate_and_invalid_names_are_errors() {
        assert_eq!(
            Labels::from_pairs([("a", "1"), ("a", "2")]),
            Err(LabelError::DuplicateName { name: "a".into() })
        );
        assert_eq!(Labels::from_pairs([("", "1")]), Err(LabelError::EmptyName));
        assert!(Labels::from_pairs_with([("a.b", "1")], NameValidation::Legacy).is_err());
        assert!(Labels::from_pairs_with([("a.b", "1")], NameValidation::Utf8).is_ok());
        assert!(Labels::from_pairs_with([("0a", "1")], NameValidation::Legacy).is_err());
    }

    #[test]
    fn legacy_names() {
        assert!(is_legacy_label_name("_a9"));
        assert!(!is_legacy_label_name("a:b"));
        assert!(is_legacy_metric_name("a:b"));
        assert!(!is_legacy_metric_name("9a"));
        assert!(!is_legacy_metric_name(""));
    }

    #[test]
    fn ordering_is_label_by_label() {
        let a = ls(&[("a", "1")]);
        let ab = ls(&[("a", "1"), ("b", "1")]);
        let a2 = ls(&[("a", "2")]);
        assert!(a < ab);
        assert!(ab < a2);
        assert!(ls(&[("a", "1"), ("c", "1")]) > ab);
    }

    #[test]
    fn hash_separates_name_and_value_boundaries() {
        assert_ne!(ls(&[("ab", "c")]).hash(), ls(&[("a", "bc")]).hash());
        assert_eq!(
            ls(&[("a", "1"), ("b", "2")]).hash(),
            ls(&[("b", "2"), ("a", "1")]).hash()
        );
    }

    #[test]
    fn builder_set_del_build() {
        let mut b = ls(&[("a", "1"), ("b", "2")]).builder();
        b.set("c", "3").set("a", "x").del("b").set("d", "");
        assert_eq!(b.build().unwrap(), ls(&[("a", "x"), ("c", "3")]));
    }

    #[test]
    fn display_quotes_utf8_names() {
        let l = ls(&[("__name__", "up"), ("a.b", "q\"")]);
        assert_eq!(l.to_string(), r#"{__name__="up", "a.b"="q\""}"#);
    }
}
