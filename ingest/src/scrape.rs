//! One scrape's body into the head: the scrape cache, target labels,
//! metric relabeling, limits, staleness markers and the report series.
//!
//! [`ScrapeCache`] belongs to one target and lives as long as its scrape
//! loop. It maps the raw bytes of a series as the target wrote them (name
//! and label set, before any parsing of labels) to the head reference of
//! the final, relabeled series — or to "dropped by metric relabeling". A
//! series seen before therefore costs one hash lookup, the float parse and
//! an append by reference; label sets are built, merged with the target's
//! labels and relabeled only the first time a series appears (and again
//! only if the head garbage-collected the series meanwhile).
//!
//! Memory: the cache holds, per series, its raw bytes once in an arena, a
//! 20-byte entry and a 4-byte hash-table slot — no label set. With
//! millions of series this is a large share of the server's memory, so the
//! layout is deliberate: no allocation per series, and the arena is
//! compacted when evicted keys make up half of it.
//!
//! Invariants:
//! * a scrape is appended through one appender and is committed or rolled
//!   back whole by the caller; the cache is updated only by
//!   [`ScrapeCache::commit`] after the caller committed, so a failed scrape
//!   leaves the cache exactly as it was;
//! * a series present in the previous successful scrape (without an
//!   explicit timestamp) and absent from this one gets a staleness marker at
//!   this scrape's timestamp; a failed scrape counts as an empty one, so
//!   every series of the previous scrape goes stale — as in Prometheus;
//! * series that carry their own timestamps are not tracked for staleness
//!   unless `track_timestamps_staleness` is set (Prometheus's default too:
//!   the target owns their timeline).
//!
//! The HTTP side of a scrape (timing, requests, timeouts) is the server's;
//! this module sees only a body and a timestamp, so it is tested without a
//! network.

use hashbrown::HashTable;
use kiln_storage::{AppendError, Appender, HeadRef, Labels, LabelsBuilder, stale_nan};
use xxhash_rust::xxh3::xxh3_64;

use crate::exposition::{Entry, Format, MetricType, ParseError, Parser};
use crate::relabel::{RelabelConfig, relabel};

/// The per-target settings a scrape's samples are processed with.
#[derive(Debug, Clone)]
pub struct ScrapeSettings {
    /// The target's labels (`job`, `instance`, and any others), attached to
    /// every scraped series.
    pub target_labels: Labels,
    /// Keep the scraped value of a label that clashes with a target label
    /// (otherwise the scraped one is renamed `exported_<name>`).
    pub honor_labels: bool,
    /// Use timestamps the target gives; otherwise every sample gets the
    /// scrape's timestamp.
    pub honor_timestamps: bool,
    /// Write staleness markers for vanished series even when they carried
    /// explicit timestamps (`track_timestamps_staleness`).
    pub track_timestamps_staleness: bool,
    /// `metric_relabel_configs`.
    pub metric_relabel: Vec<RelabelConfig>,
    /// Most samples a scrape may keep after relabeling (0 = unlimited).
    pub sample_limit: u64,
    /// Most labels a series may have (0 = unlimited).
    pub label_limit: u64,
    /// Longest label name (0 = unlimited).
    pub label_name_length_limit: u64,
    /// Longest label value (0 = unlimited).
    pub label_value_length_limit: u64,
}

impl ScrapeSettings {
    /// Prometheus's defaults for a target with these labels: target labels
    /// win conflicts, the target's timestamps are honoured without
    /// staleness tracking, no metric relabeling, no limits.
    pub fn new(target_labels: Labels) -> Self {
        ScrapeSettings {
            target_labels,
            honor_labels: false,
            honor_timestamps: true,
            track_timestamps_staleness: false,
            metric_relabel: Vec::new(),
            sample_limit: 0,
            label_limit: 0,
            label_name_length_limit: 0,
            label_value_length_limit: 0,
        }
    }
}

/// Why a scrape's body was refused as a whole. Display texts are
/// Prometheus's, since they show up as the target's last error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScrapeError {
    /// The body does not parse.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// More samples than `sample_limit`.
    #[error("sample limit exceeded")]
    SampleLimit,
    /// A series has more labels than `label_limit`.
    #[error(
        "label_limit exceeded (metric: {metric:.50}, number of labels: {count}, limit: {limit})"
    )]
    LabelLimit {
        /// The series' metric name.
        metric: String,
        /// Its label count.
        count: usize,
        /// The limit.
        limit: u64,
    },
    /// A label name is longer than `label_name_length_limit`.
    #[error(
        "label_name_length_limit exceeded (metric: {metric:.50}, label name: {name:.50}, length: {len}, limit: {limit})"
    )]
    LabelNameLength {
        /// The series' metric name.
        metric: String,
        /// The label name.
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: u64,
    },
    /// A label value is longer than `label_value_length_limit`.
    #[error(
        "label_value_length_limit exceeded (metric: {metric:.50}, label name: {name:.50}, value: {value:.50?}, length: {len}, limit: {limit})"
    )]
    LabelValueLength {
        /// The series' metric name.
        metric: String,
        /// The label name.
        name: String,
        /// The value.
        value: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: u64,
    },
    /// The head refused a series outright (e.g. the series limit).
    #[error("append failed: {0}")]
    Append(AppendError),
}

/// What one scrape did, for the report series and self-metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrapeStats {
    /// Samples in the body (`scrape_samples_scraped`).
    pub scraped: u64,
    /// Samples left after metric relabeling
    /// (`scrape_samples_post_metric_relabeling`).
    pub post_relabel: u64,
    /// Series seen for the first time (`scrape_series_added`).
    pub series_added: u64,
    /// Samples the head accepted.
    pub appended: u64,
    /// Samples rejected as out of order.
    pub out_of_order: u64,
    /// Samples rejected as a second value at an existing timestamp.
    pub duplicate: u64,
    /// Samples rejected as too old for the head.
    pub out_of_bounds: u64,
    /// Staleness markers written.
    pub stale_markers: u64,
}

/// What a cached series resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Appended under this reference, with the scrape's timestamp.
    Series(HeadRef),
    /// Appended under this reference with the target's own timestamp (no
    /// staleness tracking for it).
    OwnTimestamp(HeadRef),
    /// Dropped by metric relabeling.
    Dropped,
    /// An evicted entry, waiting in the free list.
    Free,
}

impl Slot {
    fn head_ref(self) -> Option<HeadRef> {
        match self {
            Slot::Series(r) | Slot::OwnTimestamp(r) => Some(r),
            Slot::Dropped | Slot::Free => None,
        }
    }

    /// The reference of a series that goes stale when it vanishes.
    fn staleness_ref(self) -> Option<HeadRef> {
        match self {
            Slot::Series(r) => Some(r),
            _ => None,
        }
    }
}

/// One cached series: its raw bytes in the cache's arena, what they
/// resolve to, and the generation of the last committed scrape that had it.
#[derive(Debug, Clone, Copy)]
struct CacheEntry {
    key_at: u32,
    key_len: u32,
    slot: Slot,
    /// Generations wrap (a u32 lasts 136 years at one scrape a second);
    /// only differences are compared.
    seen: u32,
}

/// What a target says about one metric family (`# TYPE`, `# HELP`,
/// `# UNIT`), for `/api/v1/metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The declared type (`unknown` when only HELP or UNIT was given).
    pub kind: MetricType,
    /// The help text.
    pub help: String,
    /// The unit (OpenMetrics), often empty.
    pub unit: String,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            kind: MetricType::Unknown,
            help: String::new(),
            unit: String::new(),
        }
    }
}

/// A scrape that has been appended but not yet committed by the caller.
/// Pass it to [`ScrapeCache::commit`] after the appender committed, or drop
/// it after a rollback.
#[derive(Debug, Default)]
#[must_use = "pass to ScrapeCache::commit after committing the appender"]
pub struct PendingScrape {
    /// Raw bytes of the series new to the cache, back to back.
    added_keys: Vec<u8>,
    /// Series new to the cache: the hash, range in `added_keys` and slot.
    added: Vec<(u64, u32, u32, Slot)>,
    /// Cached series the head re-resolved under a new reference.
    touched: Vec<(u32, HeadRef)>,
    /// Bit per cache slot: present in this scrape.
    seen: Vec<u64>,
    /// Metadata entries that differ from the cache's, in body order.
    metadata: Vec<(String, Metadata)>,
    stats: ScrapeStats,
    failed: bool,
}

impl PendingScrape {
    /// The scrape's statistics.
    pub fn stats(&self) -> ScrapeStats {
        self.stats
    }

    fn mark(&mut self, slot: u32) {
        let (w, b) = (slot as usize / 64, slot % 64);
        if let Some(word) = self.seen.get_mut(w) {
            *word |= 1 << b;
        }
    }

    fn is_marked(&self, slot: usize) -> bool {
        self.seen
            .get(slot / 64)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }
}

/// The report series' names, in the order Prometheus appends them.
const REPORT_NAMES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// The per-target cache. See the module documentation.
#[derive(Debug, Default)]
pub struct ScrapeCache {
    /// Indices into `slots`, hashed by the xxh3 of the raw series bytes.
    index: HashTable<u32>,
    slots: Vec<CacheEntry>,
    /// Evicted slots, for reuse.
    free: Vec<u32>,
    /// Every cached series' raw bytes, back to back.
    keys: Vec<u8>,
    /// Bytes of `keys` that belong to evicted series.
    garbage: usize,
    /// Generation of the last committed scrape.
    generation: u32,
    /// Head refs of the report series, by position in [`REPORT_NAMES`].
    report: [Option<HeadRef>; 5],
    /// Metadata by metric family, as of the last scrape that changed it.
    metadata: std::collections::BTreeMap<String, Metadata>,
    /// Bumped whenever `metadata` changes.
    metadata_version: u64,
}

impl ScrapeCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached series (including dropped ones).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The slot index of the series with these raw bytes.
    fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        self.index
            .find(hash, |&i| {
                cache_key(&self.keys, &self.slots[i as usize]) == key
            })
            .copied()
    }

    /// Appends one scrape's body at scrape time `t_ms`, and staleness
    /// markers for the series that vanished since the previous scrape.
    /// On error nothing in the cache changes; the caller rolls the appender
    /// back and reports the scrape as failed (see [`Self::append_failed`]).
    pub fn append_body(
        &self,
        app: &mut Appender<'_>,
        body: &[u8],
        format: Format,
        settings: &ScrapeSettings,
        t_ms: i64,
    ) -> Result<PendingScrape, ScrapeError> {
        let mut p = PendingScrape {
            seen: vec![0; self.slots.len().div_ceil(64)],
            ..PendingScrape::default()
        };
        // Series first seen in this very body: indices into `p.added`.
        let mut fresh: HashTable<u32> = HashTable::new();
        let mut parser = Parser::new(body, format);
        while let Some(entry) = parser.next_entry() {
            let s = match entry? {
                Entry::Sample(s) => s,
                Entry::Type { metric, kind } => {
                    self.note_metadata(&mut p, &metric, |m| m.kind = kind, |m| m.kind == kind);
                    continue;
                }
                Entry::Help { metric, text } => {
                    self.note_metadata(
                        &mut p,
                        &metric,
                        |m| m.help = text.to_string(),
                        |m| m.help == text,
                    );
                    continue;
                }
                Entry::Unit { metric, unit } => {
                    self.note_metadata(
                        &mut p,
                        &metric,
                        |m| m.unit = unit.to_owned(),
                        |m| m.unit == unit,
                    );
                    continue;
                }
            };
            p.stats.scraped += 1;
            let key = s.series();
            let ts = if settings.honor_timestamps {
                s.timestamp_ms()
            } else {
                None
            };
            let t = ts.unwrap_or(t_ms);
            let v = s.value();

            let hash = xxh3_64(key);

            // Hot path: a series the cache knows.
            if let Some(i) = self.find(hash, key) {
                p.mark(i);
                let Some(r) = self.slots[i as usize].slot.head_ref() else {
                    continue;
                };
                p.stats.post_relabel += 1;
                check_sample_limit(&p, settings)?;
                match app.append_ref(r, t, v) {
                    Ok(()) => p.stats.appended += 1,
                    Err(AppendError::UnknownRef) => {
                        // The head collected the series: resolve its labels
                        // again (the same ones: relabeling is deterministic).
                        let Some(labels) = final_labels(&s.to_labels()?, settings)? else {
                            continue;
                        };
                        match app.append(&labels, t, v) {
                            Ok(r) => {
                                p.stats.appended += 1;
                                p.touched.push((i, r));
                            }
                            Err(e) => count_rejection(&mut p.stats, e)?,
                        }
                    }
                    Err(e) => count_rejection(&mut p.stats, e)?,
                }
                continue;
            }

            // A series repeated within this body.
            let added = (&p.added, &p.added_keys);
            let pending_key = |j: &u32| {
                let (_, at, len, _) = added.0[*j as usize];
                &added.1[at as usize..][..len as usize]
            };
            if let Some(&j) = fresh.find(hash, |j| pending_key(j) == key) {
                if let Some(r) = p.added[j as usize].3.head_ref() {
                    p.stats.post_relabel += 1;
                    check_sample_limit(&p, settings)?;
                    match app.append_ref(r, t, v) {
                        Ok(()) => p.stats.appended += 1,
                        Err(e) => count_rejection(&mut p.stats, e)?,
                    }
                }
                continue;
            }

            // First sighting: build, attach, relabel, limit, append.
            let scraped = s.to_labels()?;
            let slot = match final_labels(&scraped, settings)? {
                None => Slot::Dropped,
                Some(labels) => {
                    p.stats.post_relabel += 1;
                    check_sample_limit(&p, settings)?;
                    match app.append(&labels, t, v) {
                        Ok(r) => {
                            p.stats.appended += 1;
                            p.stats.series_added += 1;
                            if ts.is_some() && !settings.track_timestamps_staleness {
                                Slot::OwnTimestamp(r)
                            } else {
                                Slot::Series(r)
                            }
                        }
                        Err(e) => {
                            count_rejection(&mut p.stats, e)?;
                            continue;
                        }
                    }
                }
            };
            let j = p.added.len() as u32;
            let at = p.added_keys.len() as u32;
            p.added_keys.extend_from_slice(key);
            p.added.push((hash, at, key.len() as u32, slot));
            let added = &p.added;
            fresh.insert_unique(hash, j, |&j| added[j as usize].0);
        }
        // Staleness: series of the previous scrape that this one lacks.
        for (i, e) in self.slots.iter().enumerate() {
            if let Some(r) = e.slot.staleness_ref()
                && e.seen == self.generation
                && !p.is_marked(i)
                && app.append_ref(r, t_ms, stale_nan()).is_ok()
            {
                p.stats.stale_markers += 1;
            }
        }
        Ok(p)
    }

    /// For a scrape that failed (connection error, bad body, limits):
    /// staleness markers for every series of the previous scrape, as if the
    /// target had returned nothing.
    pub fn append_failed(&self, app: &mut Appender<'_>, t_ms: i64) -> PendingScrape {
        let mut p = PendingScrape {
            failed: true,
            ..PendingScrape::default()
        };
        for e in &self.slots {
            if e.seen == self.generation
                && let Some(r) = e.slot.staleness_ref()
                && app.append_ref(r, t_ms, stale_nan()).is_ok()
            {
                p.stats.stale_markers += 1;
            }
        }
        p
    }

    /// Staleness markers for every series of the last scrape and for the
    /// report series: the target is gone (removed from the configuration or
    /// its loop is stopping).
    pub fn append_end_of_run(&self, app: &mut Appender<'_>, t_ms: i64) -> u64 {
        let p = self.append_failed(app, t_ms);
        let mut n = p.stats.stale_markers;
        for r in self.report.iter().flatten() {
            if app.append_ref(*r, t_ms, stale_nan()).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// The metadata of the target's metric families.
    pub fn metadata(&self) -> &std::collections::BTreeMap<String, Metadata> {
        &self.metadata
    }

    /// A number that changes whenever [`Self::metadata`] does, so a caller
    /// can copy the metadata only when it changed.
    pub fn metadata_version(&self) -> u64 {
        self.metadata_version
    }

    /// Records a metadata line when it says something new: the common case,
    /// the same HELP and TYPE as last scrape, costs a map lookup and no
    /// allocation.
    fn note_metadata(
        &self,
        p: &mut PendingScrape,
        metric: &str,
        set: impl FnOnce(&mut Metadata),
        same: impl Fn(&Metadata) -> bool,
    ) {
        if let Some((_, m)) = p.metadata.iter_mut().rev().find(|(n, _)| n == metric) {
            set(m);
            return;
        }
        let current = self.metadata.get(metric);
        if current.is_some_and(&same) {
            return;
        }
        let mut m = current.cloned().unwrap_or_default();
        set(&mut m);
        p.metadata.push((metric.to_owned(), m));
    }

    /// Records a committed scrape: seen series get the new generation, new
    /// series enter the cache, and series unseen for two scrapes leave it.
    pub fn commit(&mut self, mut p: PendingScrape) -> ScrapeStats {
        self.generation = self.generation.wrapping_add(1);
        let g = self.generation;
        if !p.metadata.is_empty() {
            self.metadata.extend(std::mem::take(&mut p.metadata));
            self.metadata_version += 1;
        }
        if !p.failed {
            for (i, e) in self.slots.iter_mut().enumerate() {
                if p.is_marked(i) {
                    e.seen = g;
                }
            }
            for (i, r) in p.touched {
                if let Some(e) = self.slots.get_mut(i as usize) {
                    e.slot = match e.slot {
                        Slot::OwnTimestamp(_) => Slot::OwnTimestamp(r),
                        _ => Slot::Series(r),
                    };
                }
            }
            // Offsets are u32: a target whose series' raw bytes would pass
            // 4 GiB (only possible with bodies near the 1 GiB limit) keeps
            // its new series out of the cache, which then treats them as
            // new at every scrape (correct, just slower).
            if self.garbage > 0 && self.keys.len() + p.added_keys.len() > MAX_KEY_BYTES {
                self.compact_keys();
            }
            if self.keys.len() + p.added_keys.len() > MAX_KEY_BYTES {
                p.added.clear();
            }
            self.index.reserve(p.added.len(), |&i| {
                xxh3_64(cache_key(&self.keys, &self.slots[i as usize]))
            });
            self.keys.reserve(p.added_keys.len());
            for (hash, at, len, slot) in p.added {
                let e = CacheEntry {
                    key_at: self.keys.len() as u32,
                    key_len: len,
                    slot,
                    seen: g,
                };
                self.keys
                    .extend_from_slice(&p.added_keys[at as usize..][..len as usize]);
                let i = match self.free.pop() {
                    Some(i) => {
                        self.slots[i as usize] = e;
                        i
                    }
                    None => {
                        self.slots.push(e);
                        (self.slots.len() - 1) as u32
                    }
                };
                let (keys, slots) = (&self.keys, &self.slots);
                self.index
                    .insert_unique(hash, i, |&i| xxh3_64(cache_key(keys, &slots[i as usize])));
            }
        }
        // Keep an entry one scrape past its last sighting, so a series that
        // flaps costs no new label work; evict it after that.
        let (slots, free, garbage) = (&mut self.slots, &mut self.free, &mut self.garbage);
        self.index.retain(|&mut i| {
            let e = &mut slots[i as usize];
            let keep = g.wrapping_sub(e.seen) <= 1;
            if !keep {
                *garbage += e.key_len as usize;
                e.slot = Slot::Free;
                e.key_len = 0;
                free.push(i);
            }
            keep
        });
        if self.garbage > 4096 && self.garbage * 2 > self.keys.len() {
            self.compact_keys();
        }
        p.stats
    }

    /// Rewrites the key arena without the evicted series' bytes.
    fn compact_keys(&mut self) {
        let mut keys = Vec::with_capacity(self.keys.len() - self.garbage);
        for e in &mut self.slots {
            if e.slot != Slot::Free {
                let at = keys.len() as u32;
                keys.extend_from_slice(cache_key(&self.keys, e));
                e.key_at = at;
            }
        }
        self.keys = keys;
        self.garbage = 0;
    }

    /// Appends the report series (`up`, `scrape_duration_seconds`,
    /// `scrape_samples_scraped`, `scrape_samples_post_metric_relabeling`,
    /// `scrape_series_added`) with the target's labels at `t_ms`.
    pub fn append_report(
        &mut self,
        app: &mut Appender<'_>,
        target_labels: &Labels,
        t_ms: i64,
        up: bool,
        duration_s: f64,
        stats: &ScrapeStats,
    ) -> Result<(), AppendError> {
        let values = [
            if up { 1.0 } else { 0.0 },
            duration_s,
            stats.scraped as f64,
            stats.post_relabel as f64,
            stats.series_added as f64,
        ];
        for (i, v) in values.into_iter().enumerate() {
            if let Some(r) = self.report[i] {
                match app.append_ref(r, t_ms, v) {
                    Ok(()) => continue,
                    Err(AppendError::UnknownRef) => {}
                    Err(e) => return Err(e),
                }
            }
            let mut b = target_labels.builder();
            b.set(kiln_storage::METRIC_NAME, REPORT_NAMES[i]);
            // The target labels are valid and the names are fixed.
            let labels = b.build().map_err(|_| AppendError::EmptyLabels)?;
            self.report[i] = Some(app.append(&labels, t_ms, v)?);
        }
        Ok(())
    }
}

/// Most bytes of raw series text one cache holds (its offsets are u32).
const MAX_KEY_BYTES: usize = u32::MAX as usize;

/// The raw bytes of a cache entry.
fn cache_key<'k>(keys: &'k [u8], e: &CacheEntry) -> &'k [u8] {
    &keys[e.key_at as usize..][..e.key_len as usize]
}

fn check_sample_limit(p: &PendingScrape, settings: &ScrapeSettings) -> Result<(), ScrapeError> {
    if settings.sample_limit > 0 && p.stats.post_relabel > settings.sample_limit {
        return Err(ScrapeError::SampleLimit);
    }
    Ok(())
}

/// The stored label set of a newly seen series: the scraped labels with the
/// target's attached, then metric relabeling, then the label limits. `None`
/// when relabeling drops it.
fn final_labels(
    scraped: &Labels,
    settings: &ScrapeSettings,
) -> Result<Option<Labels>, ScrapeError> {
    let mut b: LabelsBuilder = scraped.builder();
    let mut conflicts = Vec::new();
    for t in settings.target_labels.iter() {
        match scraped.get(t.name) {
            Some(_) if settings.honor_labels => {}
            Some(existing) => {
                conflicts.push((t.name, existing));
                b.set(t.name, t.value);
            }
            None => {
                b.set(t.name, t.value);
            }
        }
    }
    // A scraped label that clashes with a target label moves to
    // `exported_<name>`, with more prefixes until the name is free.
    for (name, value) in conflicts {
        let mut new = format!("exported_{name}");
        while b.get(&new).is_some() {
            new = format!("exported_{new}");
        }
        b.set(&new, value);
    }
    if !settings.metric_relabel.is_empty() && !relabel(&mut b, &settings.metric_relabel) {
        return Ok(None);
    }
    let Ok(labels) = b.build() else {
        return Ok(None);
    };
    if labels.is_empty() {
        return Ok(None);
    }
    check_label_limits(&labels, settings)?;
    Ok(Some(labels))
}

fn count_rejection(stats: &mut ScrapeStats, e: AppendError) -> Result<(), ScrapeError> {
    match e {
        AppendError::OutOfOrder => stats.out_of_order += 1,
        AppendError::DuplicateTimestamp => stats.duplicate += 1,
        AppendError::OutOfBounds => stats.out_of_bounds += 1,
        other => return Err(ScrapeError::Append(other)),
    }
    Ok(())
}

fn check_label_limits(labels: &Labels, s: &ScrapeSettings) -> Result<(), ScrapeError> {
    let metric = || labels.metric_name().unwrap_or_default().to_owned();
    if s.label_limit > 0 && labels.len() as u64 > s.label_limit {
        return Err(ScrapeError::LabelLimit {
            metric: metric(),
            count: labels.len(),
            limit: s.label_limit,
        });
    }
    for l in labels.iter() {
        if s.label_name_length_limit > 0 && l.name.len() as u64 > s.label_name_length_limit {
            return Err(ScrapeError::LabelNameLength {
                metric: metric(),
                name: l.name.to_owned(),
                len: l.name.len(),
                limit: s.label_name_length_limit,
            });
        }
        if s.label_value_length_limit > 0 && l.value.len() as u64 > s.label_value_length_limit {
            return Err(ScrapeError::LabelValueLength {
                metric: metric(),
                name: l.name.to_owned(),
                value: l.value.to_owned(),
                len: l.value.len(),
                limit: s.label_value_length_limit,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_storage::{Head, HeadOptions, Matcher, Select, SelectHints, is_stale_nan};

    fn settings() -> ScrapeSettings {
        ScrapeSettings::new(Labels::from_pairs([("instance", "h:9100"), ("job", "node")]).unwrap())
    }

    /// One scrape as the server does it: body, report, commit.
    fn scrape(
        head: &mut Head,
        cache: &mut ScrapeCache,
        body: &str,
        s: &ScrapeSettings,
        t: i64,
    ) -> Result<ScrapeStats, String> {
        let mut app = head.appender();
        match cache.append_body(&mut app, body.as_bytes(), Format::PromText, s, t) {
            Ok(p) => {
                let stats = p.stats();
                cache
                    .append_report(&mut app, &s.target_labels, t, true, 0.01, &stats)
                    .unwrap();
                app.commit().unwrap();
                Ok(cache.commit(p))
            }
            Err(e) => {
                app.rollback();
                let mut app = head.appender();
                let p = cache.append_failed(&mut app, t);
                cache
                    .append_report(
                        &mut app,
                        &s.target_labels,
                        t,
                        false,
                        0.01,
                        &ScrapeStats::default(),
                    )
                    .unwrap();
                app.commit().unwrap();
                cache.commit(p);
                Err(e.to_string())
            }
        }
    }

    /// Every (labels, samples) the head holds for metric `name`.
    fn samples(head: &Head, name: &str) -> Vec<(String, Vec<(i64, f64)>)> {
        let b = head
            .select(
                &[Matcher::equal("__name__", name)],
                &SelectHints::range(i64::MIN, i64::MAX),
            )
            .unwrap();
        b.iter()
            .map(|s| {
                let pts = s
                    .timestamps
                    .iter()
                    .zip(s.values)
                    .map(|(&t, &v)| (t, v))
                    .collect();
                (s.labels.to_string(), pts)
            })
            .collect()
    }

    #[test]
    fn known_series_reuse_the_cache_and_vanished_ones_go_stale() {
        let mut head = Head::new(HeadOptions::default());
        let mut cache = ScrapeCache::new();
        let s = settings();
        let st = scrape(&mut head, &mut cache, "a 1\nb{x=\"1\"} 2\n", &s, 1000).unwrap();
        assert_eq!(
            (st.scraped, st.post_relabel, st.series_added, st.appended),
            (2, 2, 2, 2)
        );
        let st = scrape(&mut head, &mut cache, "a 3\n", &s, 2000).unwrap();
        assert_eq!(
            (st.scraped, st.series_added, st.appended, st.stale_markers),
            (1, 0, 1, 1)
        );
        assert_eq!(
            samples(&head, "a"),
            vec![(
                r#"{__name__="a", instance="h:9100", job="node"}"#.to_owned(),
                vec![(1000, 1.0), (2000, 3.0)]
            )]
        );
        let b = samples(&head, "b");
        assert_eq!(b[0].1.len(), 2);
        assert_eq!(b[0].1[0], (1000, 2.0));
        assert_eq!(b[0].1[1].0, 2000);
        assert!(is_stale_nan(b[0].1[1].1));
        // Report series carry the target's labels.
        let up = samples(&head, "up");
        assert_eq!(up[0].0, r#"{__name__="up", instance="h:9100", job="node"}"#);
        assert_eq!(up[0].1, vec![(1000, 1.0), (2000, 1.0)]);
        assert_eq!(
            samples(&head, "scrape_samples_scraped")[0].1,
            vec![(1000, 2.0), (2000, 1.0)]
        );
        assert_eq!(
            samples(&head, "scrape_series_added")[0].1,
            vec![(1000, 2.0), (2000, 0.0)]
        );
    }

    #[test]
    fn explicit_timestamps_are_honoured_and_not_marked_stale() {
        let mut head = Head::new(HeadOptions::default());
        let mut cache = ScrapeCache::new();
        let s = settings();
        scrape(&mut head, &mut cache, "a 1 500\nb 2\n", &s, 1000).unwrap();
        // The same explicit sample again is an exact duplicate: dropped
        // silently, not an error.
        let st = scrape(&mut head, &mut cache, "a 1 500\n", &s, 2000).unwrap();
        assert_eq!((st.out_of_order, st.duplicate), (0, 0));
        assert_eq!(samples(&head, "a")[0].1, vec![(500, 1.0)]);
        let st = scrape(&mut head, &mut cache, "b 3\n", &s, 3000).unwrap();
        assert_eq!(st.stale_markers, 0, "a has its own timestamps");
        // With honor_timestamps off the scrape time is used.
        let mut head = Head::new(HeadOptions::default());
        let mut cache = ScrapeCache::new();
        let s = ScrapeSettings {
            honor_timestamps: false,
            ..settings()
        };
        scrape(&mut head, &mut cache, "a 1 500\n", &s, 1000).unwrap();
        assert_eq!(samples(&head, "a")[0].1, vec![(1000, 1.0)]);
    }

    #[test]
    fn a_failed_scrape_appends_nothing_and_stales_the_previous_series() {
        let mut head = Head::new(HeadOptions::default());
        let mut cache = ScrapeCache::new();
        let s = settings();
        scrape(&mut head, &mut cache, "a 1\n", &s, 1000).unwrap();
        let e = scrape(&mut head, &mut cache, "c 5\na 2\n{bad\n", &s, 2000).unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        assert!(
            samples(&head, "c").is_empty(),
            "a failed scrape left samples behind"
        );
        let a = samples(&head, "a");
        assert_eq!(a[0].1.len(), 2);
        assert!(is_stale_nan(a[0].1[1].1));
        assert_eq!(samples(&head, "up")[0].1, vec![(1000, 1.0), (2000, 0.0)]);
        // The next good scrape starts over: `a` is back, nothing re-staled.
        let st = scrape(&mut head, &mut cache, "a 3\n", &s, 3000).unwrap();
        assert_eq!(st.stale_markers, 0);
        assert_eq!(samples(&head, "a")[0].1[2], (3000, 3.0));
    }

    #[test]
    fn target_labels_win_unless_honor_labels() {
        let body = "m{job=\"scraped\",exported_job=\"x\"} 1\n";
        let mut head = Head::new(HeadOptions::default());
        let mut cache = ScrapeCache::new();
        scrape(&mut head, &mut cache, body, &settings(), 1000).unwrap();
        assert_eq!(
            samples(&head, "m")[0].0,
            r#"{__name__="m", exported_exported_job="scraped", exported_job="x", instance="h:9100", job="node"}"#
        );
        let mut head = Head::new(HeadOptions::default());
        let mut cache = ScrapeCache::new();
        let s = ScrapeSettings {
            honor_labels: true,
            ..settings()
        };
        scrape(&mut head, &mut cache, body, &s, 1000).unwrap();
        assert_eq!(
            samples(&head, "m")[0].0,
            r#"{__name__="m", exported_job="x", instance="h:9100", job="scraped"}"#
        );
    }

    #[test]
    fn metric_relabeling_drops_and_rewrites() {
        let cfgs: Vec<RelabelConfig> = serde_norway::from_str(
            "- source_labels: [__name__]\n  regex: drop_.*\n  action: drop\n\
             - source_labels: [mode]\n  target_label: m\n",
        )
        .unwrap();
        let s = ScrapeSettings {
            metric_relabel: cfgs,
            ..settings()
        };
        let mut head = Head::new(HeadOptions::default());
        let mut cache = ScrapeCache::new();
        let body = "drop_me 1\nkeep{mode=\"idle\"} 2\n";
        for t in [1000, 2000] {
            let st = scrape(&mut head, &mut cache, body, &s, t).unwrap();
            assert_eq!((st.scraped, st.post_relabel), (2, 1));
        }
        assert!(samples(&head, "drop_me").is_empty());
        assert_eq!(
            samples(&head, "keep"),
            vec![(
                r#"{__name__="keep", instance="h:9100", job="node", m="idle", mode="idle"}"#
                    .to_owned(),
                vec![(1000, 2.0), (2000, 2.0)]
            )]
        );
    }

    #[test]
    fn limits_fail_the_whole_scrape() {
        let mut head = Head::new(HeadOptions::default());
        let mut cache = ScrapeCache::new();
        let s = ScrapeSettings {
            sample_limit: 2,
            ..settings()
        };
        let e = scrape(&mut head, &mut cache, "a 1\nb 1\nc 1\n", &s, 1000).unwrap_err();
        assert_eq!(e, "sample limit exceeded");
        assert!(samples(&head, "a").is_empty());
        assert_eq!(samples(&head, "up")[0].1, vec![(1000, 0.0)]);

        let s = ScrapeSettings {
            label_limit: 3,
            ..settings()
        };
        let e = scrape(&mut head, &mut cache, "a{x=\"1\"} 1\n", &s, 2000).unwrap_err();
        assert_eq!(
            e,
            "label_limit exceeded (metric: a, number of labels: 4, limit: 3)"
        );
        let s = ScrapeSettings {
            label_value_length_limit: 3,
            ..settings()
        };
        let e = scrape(&mut head, &mut cache, "a{x=\"long\"} 1\n", &s, 3000).unwrap_err();
        assert!(
            e.starts_with("label_value_length_limit exceeded (metric: a,"),
            "{e}"
        );
    }

    #[test]
    fn end_of_run_stales_everything_including_the_report() {
        let mut head = Head::new(HeadOptions::default());
        let mut cache = ScrapeCache::new();
        scrape(&mut head, &mut cache, "a 1\n", &settings(), 1000).unwrap();
        let mut app = head.appender();
        assert_eq!(cache.append_end_of_run(&mut app, 2000), 6);
        app.commit().unwrap();
        for name in ["a", "up", "scrape_duration_seconds"] {
            let s = samples(&head, name);
            assert!(is_stale_nan(s[0].1.last().unwrap().1), "{name}");
        }
    }

    #[test]
    fn metadata_is_kept_and_versioned_only_on_change() {
        let mut head = Head::new(HeadOptions::default());
        let mut cache = ScrapeCache::new();
        let body = "# HELP a Things done.\n# TYPE a counter\na 1\n# TYPE g gauge\ng 2\n";
        scrape(&mut head, &mut cache, body, &settings(), 1000).unwrap();
        let v = cache.metadata_version();
        assert_eq!(
            cache.metadata().get("a"),
            Some(&Metadata {
                kind: MetricType::Counter,
                help: "Things done.".into(),
                unit: String::new()
            })
        );
        assert_eq!(
            cache.metadata().get("g").map(|m| m.kind),
            Some(MetricType::Gauge)
        );
        scrape(&mut head, &mut cache, body, &settings(), 2000).unwrap();
        assert_eq!(cache.metadata_version(), v, "nothing changed");
        let changed = body.replace("Things done.", "Things finished.");
        scrape(&mut head, &mut cache, &changed, &settings(), 3000).unwrap();
        assert!(cache.metadata_version() > v);
        assert_eq!(cache.metadata()["a"].help, "Things finished.");
        assert_eq!(cache.metadata()["a"].kind, MetricType::Counter);
    }

    #[test]
    fn churning_series_keep_the_cache_and_its_arena_bounded() {
        let mut head = Head::new(HeadOptions::default());
        let mut cache = ScrapeCache::new();
        let s = settings();
        let mut peak_keys = 0;
        for round in 0..200 {
            // 50 series that live for two scrapes each.
            let body: String = (0..50)
                .map(|i| {
                    format!(
                        "churn_series_with_a_long_name{{i=\"{}\"}} 1\n",
                        round / 2 * 50 + i
                    )
                })
                .collect();
            let st = scrape(&mut head, &mut cache, &body, &s, 1000 * (round + 1)).unwrap();
            assert_eq!(st.series_added, if round % 2 == 0 { 50 } else { 0 });
            assert!(cache.len() <= 150, "round {round}: {} cached", cache.len());
            peak_keys = peak_keys.max(cache.keys.len());
        }
        // Evicted keys are reclaimed: the arena stays within a few rounds'
        // worth of keys instead of growing with every series ever seen.
        assert!(peak_keys < 200 * 50, "arena grew to {peak_keys} bytes");
        assert!(
            cache.keys.len()
                >= cache
                    .slots
                    .iter()
                    .map(|e| e.key_len as usize)
                    .sum::<usize>()
        );
    }

    /// A naive model of what a sequence of scrapes leaves in the head.
    #[derive(Default)]
    struct Model {
        series: std::collections::BTreeMap<String, Vec<(i64, f64)>>,
        previous: std::collections::BTreeSet<String>,
    }

    impl Model {
        fn scrape(&mut self, present: &[(String, f64)], ok: bool, t: i64) {
            let now: std::collections::BTreeSet<String> = if ok {
                present.iter().map(|(k, _)| k.clone()).collect()
            } else {
                Default::default()
            };
            for k in self.previous.difference(&now) {
                // A marker needs the series to still be in the head.
                if let Some(v) = self.series.get_mut(k) {
                    v.push((t, stale_nan()));
                }
            }
            if ok {
                for (k, v) in present {
                    self.series.entry(k.clone()).or_default().push((t, *v));
                }
            }
            self.previous = now;
        }

        fn truncate(&mut self, below: i64) {
            for v in self.series.values_mut() {
                v.retain(|&(t, _)| t >= below);
            }
            self.series.retain(|_, v| !v.is_empty());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Random scrapes (series coming and going, failed scrapes, metric
        /// relabeling, head truncations that collect cached series) leave
        /// in the head exactly the samples and staleness markers the naive
        /// model says.
        #[test]
        fn scrapes_match_a_naive_model(
            steps in proptest::collection::vec(
                (proptest::collection::vec(proptest::option::of(0u8..20), 12), 0u8..10),
                1..40,
            )
        ) {
            let mut head = Head::new(HeadOptions::default());
            let mut cache = ScrapeCache::new();
            let mut s = settings();
            s.metric_relabel = vec![RelabelConfig::new(
                crate::relabel::Action::Drop,
                vec!["k".into()],
                None,
                Some(crate::relabel::RelabelRegex::new("d.*").unwrap()),
                0,
                String::new(),
                None,
            ).unwrap()];
            let mut model = Model::default();
            for (step, (values, op)) in steps.iter().enumerate() {
                let t = 1000 * (step as i64 + 1);
                let mut body = String::new();
                let mut present = Vec::new();
                for (i, v) in values.iter().enumerate() {
                    let Some(v) = v else { continue };
                    let k = if i % 4 == 3 { format!("d{i}") } else { format!("s{i}") };
                    body += &format!("m{{k=\"{k}\"}} {v}\n");
                    if !k.starts_with('d') {
                        present.push((
                            format!("{{__name__=\"m\", instance=\"h:9100\", job=\"node\", k=\"{k}\"}}"),
                            f64::from(*v),
                        ));
                    }
                }
                let ok = *op != 0;
                if !ok {
                    body += "{garbage\n";
                }
                let r = scrape(&mut head, &mut cache, &body, &s, t);
                proptest::prop_assert_eq!(r.is_ok(), ok);
                model.scrape(&present, ok, t);
                if *op == 9 {
                    // Collects every series: cached refs go unknown.
                    head.truncate_below(t + 1).unwrap();
                    model.truncate(t + 1);
                }
                let got = samples(&head, "m");
                let want: Vec<(String, Vec<(i64, f64)>)> =
                    model.series.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                proptest::prop_assert_eq!(got.len(), want.len());
                for ((gk, gv), (wk, wv)) in got.iter().zip(&want) {
                    proptest::prop_assert_eq!(gk, wk);
                    proptest::prop_assert_eq!(gv.len(), wv.len());
                    for (g, w) in gv.iter().zip(wv) {
                        proptest::prop_assert_eq!(g.0, w.0);
                        proptest::prop_assert_eq!(g.1.to_bits(), w.1.to_bits());
                    }
                }
            }
        }
    }
}
