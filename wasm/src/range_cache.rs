//! Byte ranges already fetched, kept in memory so that a query run again (or another query over
//! the same columns) reads them from here instead of the network. Pure bookkeeping: the requests
//! that fill and revalidate it are [`crate::fetch_storage`]'s.
//!
//! What it promises: a range is served from memory only for the version of the file it was
//! fetched from, and only once that version has been confirmed on the server during the current
//! call (`register`, `sql`, `runPipeline`; each one starts a new [epoch](RangeCache::begin_call)).
//! Confirmation is the validator of any answer about the file sent during the call — the first
//! ranged GET, or one HEAD when the call's first read of the file would be a hit — or, with no
//! request at all, a freshness lifetime the server gave its last answer (`Cache-Control:
//! max-age`, less `Age`; see [`fresh_until`]): for that long the server has said the bytes stay
//! valid, as any HTTP cache may take it to mean. A data file of a Delta table is not confirmed
//! again once held with a strong ETag and the size its log gives
//! ([`RangeCache::mark_immutable`]): the protocol never rewrites one, so the table's log, not
//! the file's server, says which files a version is made of. A validator is
//! a strong ETag (and the size when known), else `Last-Modified` and the size; a file whose
//! answers carry neither is never cached. Only `Last-Modified` (no ETag exposed to the page)
//! cannot tell apart two versions of equal size written within the same second.
//!
//! Memory is bounded by a byte cap, least recently used ranges going first. Ranges are kept so
//! that none contains another (a larger fetch replaces the smaller ones inside it), which keeps
//! lookups to one `BTreeMap` probe.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::ops::{Range, Sub};

use bytes::Bytes;

/// What identifies one version of a file, as far as its server's answers tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Version {
    /// A strong ETag (weak ones promise equivalence, not equal bytes, so they are left out).
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub size: Option<u64>,
}

impl Version {
    pub fn new(etag: Option<String>, last_modified: Option<String>, size: Option<u64>) -> Self {
        Self {
            etag: etag.filter(|t| !t.starts_with("W/")),
            last_modified,
            size,
        }
    }

    /// Whether answers can be told apart by this version at all.
    fn identifies(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }

    /// Whether `self` and `other` are surely the same bytes; unknown counts as different.
    fn same(&self, other: &Version) -> bool {
        let sizes_agree = match (self.size, other.size) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        let tags_agree = match (&self.etag, &other.etag) {
            (Some(a), Some(b)) => a == b,
            _ => match (&self.last_modified, &other.last_modified) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            },
        };
        sizes_agree && tags_agree
    }
}

/// Counters for `stats()`; all but `cached_bytes` only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Reads answered from memory.
    pub hits: u64,
    /// Bytes those reads returned (what the network was spared).
    pub hit_bytes: u64,
    /// HEAD requests sent to confirm a file had not changed before a hit.
    pub revalidations: u64,
    /// Bytes held now.
    pub cached_bytes: u64,
}

impl Sub for CacheCounts {
    type Output = CacheCounts;
    /// The growth since `o`; `cached_bytes` stays the current figure.
    fn sub(self, o: CacheCounts) -> CacheCounts {
        CacheCounts {
            hits: self.hits - o.hits,
            hit_bytes: self.hit_bytes - o.hit_bytes,
            revalidations: self.revalidations - o.revalidations,
            cached_bytes: self.cached_bytes,
        }
    }
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The bytes, and the version they belong to.
    Hit(Bytes, Version),
    /// Held, but the file has not been confirmed unchanged during this call.
    Unconfirmed,
    Miss,
}

#[derive(Debug)]
struct Slot {
    bytes: Bytes,
    /// Its key in [`State::by_use`].
    used: u64,
}

#[derive(Debug)]
struct File {
    version: Version,
    /// The latest epoch in which an answer confirmed `version`.
    confirmed: u64,
    /// Until when (ms since the Unix epoch) the server's last answer said `version` stays
    /// fresh; 0 when it gave no lifetime.
    fresh_until_ms: f64,
    /// Ranges by start offset; none contains another, so ends grow with starts.
    ranges: BTreeMap<u64, Slot>,
}

#[derive(Debug, Default)]
struct State {
    files: HashMap<String, File>,
    /// Ranges in order of last use: tick → (location, start).
    by_use: BTreeMap<u64, (String, u64)>,
    tick: u64,
    counts: CacheCounts,
    /// Delta data files and their sizes by the log (see [`RangeCache::mark_immutable`]).
    immutable: HashMap<String, u64>,
}

#[derive(Debug, Default)]
pub struct RangeCache {
    /// Most bytes held; 0 turns the cache off.
    capacity: u64,
    epoch: Cell<u64>,
    state: RefCell<State>,
}

impl RangeCache {
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            ..Default::default()
        }
    }

    /// Starts a call: every file must be confirmed again before its ranges are served.
    pub fn begin_call(&self) {
        self.epoch.set(self.epoch.get() + 1);
    }

    /// The current epoch; a request records it when sent, and hands it to [`Self::observe`].
    pub fn epoch(&self) -> u64 {
        self.epoch.get()
    }

    pub fn counts(&self) -> CacheCounts {
        self.state.borrow().counts
    }

    pub fn count_revalidation(&self) {
        self.state.borrow_mut().counts.revalidations += 1;
    }

    /// The size of the file as last seen, if known (to turn a suffix read into a range).
    pub fn size(&self, location: &str) -> Option<u64> {
        self.state.borrow().files.get(location)?.version.size
    }

    /// `now_ms`: the time (ms since the Unix epoch), to tell whether the file is still fresh.
    pub fn lookup(&self, location: &str, range: &Range<u64>, now_ms: f64) -> Lookup {
        if self.capacity == 0 || range.start >= range.end {
            return Lookup::Miss;
        }
        let mut state = self.state.borrow_mut();
        let State {
            files,
            by_use,
            tick,
            counts,
            immutable,
        } = &mut *state;
        let Some(file) = files.get_mut(location) else {
            return Lookup::Miss;
        };
        let Some((&start, slot)) = file.ranges.range_mut(..=range.start).next_back() else {
            return Lookup::Miss;
        };
        if start + (slot.bytes.len() as u64) < range.end {
            return Lookup::Miss;
        }
        // A Delta data file needs no confirmation if the held version is the one its log
        // describes (same size) and carries a strong ETag, which every read that misses must
        // then match: without one, a miss could not tell a rewritten file from this one.
        let immutable = file.version.etag.is_some()
            && file.version.size.is_some()
            && immutable.get(location).copied() == file.version.size;
        if file.confirmed != self.epoch.get() && now_ms >= file.fresh_until_ms && !immutable {
            return Lookup::Unconfirmed;
        }
        by_use.remove(&slot.used);
        *tick += 1;
        slot.used = *tick;
        by_use.insert(*tick, (location.to_string(), start));
        let bytes = slot
            .bytes
            .slice((range.start - start) as usize..(range.end - start) as usize);
        counts.hits += 1;
        counts.hit_bytes += bytes.len() as u64;
        Lookup::Hit(bytes, file.version.clone())
    }

    /// Records what an answer sent in epoch `sent` said of the file: a different version
    /// drops what is held of it; the same one confirms it for the current call. The answer's
    /// freshness ([`fresh_until`]) replaces the one held: the server's latest word counts.
    pub fn observe(&self, location: &str, version: Version, sent: u64, fresh_until_ms: f64) {
        if self.capacity == 0 {
            return;
        }
        let mut state = self.state.borrow_mut();
        if !version.identifies() {
            drop(state);
            self.drop_file(location);
            return;
        }
        let known = state
            .files
            .get(location)
            .map(|f| (f.version.same(&version), f.confirmed));
        match known {
            Some((true, _)) => {
                let Some(file) = state.files.get_mut(location) else {
                    return;
                };
                if sent >= file.confirmed {
                    file.fresh_until_ms = fresh_until_ms;
                }
                file.confirmed = file.confirmed.max(sent);
                if file.version.size.is_none() {
                    file.version.size = version.size;
                }
            }
            // An answer older than the version already confirmed says nothing new.
            Some((false, confirmed)) if sent < confirmed => {}
            _ => {
                drop(state);
                self.drop_file(location);
                self.state.borrow_mut().files.insert(
                    location.to_string(),
                    File {
                        version,
                        confirmed: sent,
                        fresh_until_ms,
                        ranges: BTreeMap::new(),
                    },
                );
            }
        }
    }

    /// Keeps `bytes` (the file's bytes from `start`) if they belong to the version last seen.
    pub fn insert(&self, location: &str, version: &Version, start: u64, bytes: Bytes) {
        let len = bytes.len() as u64;
        if len == 0 || len > self.capacity {
            return;
        }
        let end = start + len;
        let mut state = self.state.borrow_mut();
        let State {
            files,
            by_use,
            tick,
            counts,
            ..
        } = &mut *state;
        let Some(file) = files.get_mut(location) else {
            return;
        };
        if !file.version.same(version) {
            return;
        }
        if let Some((&s, slot)) = file.ranges.range(..=start).next_back() {
            if s + slot.bytes.len() as u64 >= end {
                return;
            }
        }
        let inside: Vec<u64> = file
            .ranges
            .range(start..)
            .take_while(|(&s, slot)| s + slot.bytes.len() as u64 <= end)
            .map(|(&s, _)| s)
            .collect();
        for s in inside {
            if let Some(old) = file.ranges.remove(&s) {
                by_use.remove(&old.used);
                counts.cached_bytes -= old.bytes.len() as u64;
            }
        }
        *tick += 1;
        file.ranges.insert(start, Slot { bytes, used: *tick });
        by_use.insert(*tick, (location.to_string(), start));
        counts.cached_bytes += len;
        while counts.cached_bytes > self.capacity {
            let Some((_, (loc, s))) = by_use.pop_first() else {
                break;
            };
            if let Some(old) = files.get_mut(&loc).and_then(|f| f.ranges.remove(&s)) {
                counts.cached_bytes -= old.bytes.len() as u64;
            }
        }
    }

    /// Says that `location` is a data file of a Delta table, `size` bytes long by its log:
    /// what is held of it is served in later calls without a HEAD, as long as the held version
    /// has that size and a strong ETag (see [`Self::lookup`]). Reads that miss must agree with
    /// that ETag ([`crate::fetch_storage`] pins it), so a server that answers with other bytes
    /// fails the query instead of mixing them in. A path rewritten with bytes of the same size
    /// and a different ETag, against the protocol, is served from memory until it is evicted.
    pub fn mark_immutable(&self, location: &str, size: u64) {
        if self.capacity > 0 {
            self.state
                .borrow_mut()
                .immutable
                .insert(location.to_string(), size);
        }
    }

    /// Drops everything held of `location` (this engine wrote or deleted it, or it changed),
    /// and that it was a Delta data file: its next reads are confirmed again.
    pub fn forget(&self, location: &str) {
        self.state.borrow_mut().immutable.remove(location);
        self.drop_file(location);
    }

    /// Drops the ranges held of `location`.
    fn drop_file(&self, location: &str) {
        let mut state = self.state.borrow_mut();
        let State {
            files,
            by_use,
            counts,
            ..
        } = &mut *state;
        if let Some(file) = files.remove(location) {
            for slot in file.ranges.values() {
                by_use.remove(&slot.used);
                counts.cached_bytes -= slot.bytes.len() as u64;
            }
        }
    }
}

/// Until when (ms since the Unix epoch) an answer sent at `sent_ms` stays fresh, by its
/// `Cache-Control` and `Age` headers (RFC 9111, 4.2): `max-age` less the age the answer already
/// had. 0 (revalidate on every call) when the server gave no lifetime, said `no-cache` or
/// `no-store`, or gave a malformed or repeated `max-age`. `Expires` and heuristic lifetimes
/// are not used: without an explicit lifetime, every call confirms the file.
pub fn fresh_until(cache_control: Option<&str>, age: Option<&str>, sent_ms: f64) -> f64 {
    let Some(cache_control) = cache_control else {
        return 0.0;
    };
    let mut max_age = None;
    for directive in cache_control.split(',') {
        let (name, value) = match directive.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (directive.trim(), None),
        };
        if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
            return 0.0;
        }
        if name.eq_ignore_ascii_case("max-age") {
            match (max_age, value.and_then(|v| v.parse::<u64>().ok())) {
                (None, Some(secs)) => max_age = Some(secs),
                _ => return 0.0,
            }
        }
    }
    let age = age.and_then(|a| a.trim().parse::<u64>().ok()).unwrap_or(0);
    match max_age {
        Some(secs) if secs > age => sent_ms + (secs - age) as f64 * 1000.0,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(etag: &str, size: u64) -> Version {
        Version::new(Some(etag.into()), None, Some(size))
    }

    fn bytes(start: u64, len: u64) -> Bytes {
        (start..start + len).map(|i| i as u8).collect()
    }

    /// A cache holding `file` at version "a" (100 bytes), confirmed in the current call.
    fn cache(capacity: u64) -> RangeCache {
        let c = RangeCache::new(capacity);
        c.begin_call();
        c.observe("f", v("a", 100), c.epoch(), 0.0);
        c
    }

    fn hit(c: &RangeCache, r: Range<u64>) -> Option<Bytes> {
        match c.lookup("f", &r, 0.0) {
            Lookup::Hit(b, _) => Some(b),
            _ => None,
        }
    }

    #[test]
    fn serves_sub_ranges_of_what_it_holds() {
        let c = cache(1000);
        c.insert("f", &v("a", 100), 10, bytes(10, 20));
        assert_eq!(hit(&c, 12..18), Some(bytes(12, 6)));
        assert_eq!(hit(&c, 10..30), Some(bytes(10, 20)));
        assert_eq!(c.lookup("f", &(5..15), 0.0), Lookup::Miss);
        assert_eq!(c.lookup("f", &(25..31), 0.0), Lookup::Miss);
        assert_eq!(c.lookup("g", &(10..20), 0.0), Lookup::Miss);
        let n = c.counts();
        assert_eq!((n.hits, n.hit_bytes, n.cached_bytes), (2, 26, 20));
    }

    #[test]
    fn a_new_call_needs_confirmation_and_a_new_version_drops_the_old() {
        let c = cache(1000);
        c.insert("f", &v("a", 100), 0, bytes(0, 50));
        c.begin_call();
        assert_eq!(c.lookup("f", &(0..10), 0.0), Lookup::Unconfirmed);
        c.observe("f", v("a", 100), c.epoch(), 0.0);
        assert_eq!(hit(&c, 0..10), Some(bytes(0, 10)));
        c.begin_call();
        c.observe("f", v("b", 100), c.epoch(), 0.0);
        assert_eq!(c.lookup("f", &(0..10), 0.0), Lookup::Miss);
        assert_eq!(c.counts().cached_bytes, 0);
        // Bytes of the old version arriving late are not kept.
        c.insert("f", &v("a", 100), 0, bytes(0, 50));
        assert_eq!(c.lookup("f", &(0..10), 0.0), Lookup::Miss);
        // Nor is an answer sent before the new version was seen taken as news.
        c.observe("f", v("a", 100), c.epoch() - 1, 0.0);
        c.insert("f", &v("b", 100), 0, bytes(0, 50));
        assert!(hit(&c, 0..10).is_some());
    }

    #[test]
    fn a_delta_data_file_is_served_in_later_calls_without_confirmation() {
        let c = RangeCache::new(1000);
        // Marked when the table is registered, before its first read.
        c.mark_immutable("f", 100);
        c.begin_call();
        c.observe("f", v("a", 100), c.epoch(), 0.0);
        c.insert("f", &v("a", 100), 0, bytes(0, 50));
        c.begin_call();
        assert_eq!(hit(&c, 0..10), Some(bytes(0, 10)));
        // Another version seen replaces what is held; the mark stays with the location.
        c.observe("f", v("b", 100), c.epoch(), 0.0);
        assert_eq!(c.lookup("f", &(0..10), 0.0), Lookup::Miss);
        c.insert("f", &v("b", 100), 0, bytes(0, 50));
        c.begin_call();
        assert!(hit(&c, 0..10).is_some());
        // A log that gives the path another size (a new table where an old one was):
        // confirmed, then the mark holds again once the held version is that size.
        c.mark_immutable("f", 120);
        assert_eq!(c.lookup("f", &(0..10), 0.0), Lookup::Unconfirmed);
        c.observe("f", v("d", 120), c.epoch(), 0.0);
        c.insert("f", &v("d", 120), 0, bytes(0, 50));
        c.begin_call();
        assert!(hit(&c, 0..10).is_some());
        // Written or deleted by this engine: confirmed again from then on.
        c.forget("f");
        c.observe("f", v("c", 100), c.epoch(), 0.0);
        c.insert("f", &v("c", 100), 0, bytes(0, 50));
        c.begin_call();
        assert_eq!(c.lookup("f", &(0..10), 0.0), Lookup::Unconfirmed);
        // Without a strong ETag a miss could not tell a rewritten file apart: confirmed.
        let lm = Version::new(None, Some("Mon".into()), Some(100));
        c.mark_immutable("g", 100);
        c.observe("g", lm.clone(), c.epoch(), 0.0);
        c.insert("g", &lm, 0, bytes(0, 50));
        c.begin_call();
        assert_eq!(c.lookup("g", &(0..10), 0.0), Lookup::Unconfirmed);
        // A cache that is off keeps no marks either.
        let off = RangeCache::new(0);
        off.mark_immutable("f", 100);
        assert!(off.state.borrow().immutable.is_empty());
    }

    #[test]
    fn same_tag_other_size_or_no_validator_is_not_the_same_file() {
        assert!(!v("a", 100).same(&v("a", 101)));
        assert!(v("a", 100).same(&Version::new(Some("a".into()), None, None)));
        let lm = |t: &str, s| Version::new(None, Some(t.into()), Some(s));
        assert!(lm("Mon", 5).same(&lm("Mon", 5)));
        assert!(!lm("Mon", 5).same(&lm("Tue", 5)));
        assert!(!Version::default().same(&Version::default()));
        // A weak ETag says nothing about bytes: only Last-Modified is left to compare.
        assert_eq!(
            Version::new(Some("W/\"x\"".into()), None, None),
            Version::default()
        );
        let c = cache(1000);
        c.observe("f", Version::new(None, None, Some(100)), c.epoch(), 0.0);
        c.insert("f", &Version::new(None, None, Some(100)), 0, bytes(0, 10));
        assert_eq!(c.lookup("f", &(0..10), 0.0), Lookup::Miss);
    }

    #[test]
    fn a_larger_range_replaces_the_ones_inside_it() {
        let c = cache(1000);
        let a = v("a", 100);
        c.insert("f", &a, 10, bytes(10, 10));
        c.insert("f", &a, 30, bytes(30, 10));
        c.insert("f", &a, 12, bytes(12, 5));
        assert_eq!(
            c.counts().cached_bytes,
            20,
            "contained in 10..20: not kept twice"
        );
        c.insert("f", &a, 5, bytes(5, 40));
        assert_eq!(c.counts().cached_bytes, 40);
        assert_eq!(hit(&c, 31..39), Some(bytes(31, 8)));
        // Overlapping but not containing: both kept, each range served by one of them.
        c.insert("f", &a, 40, bytes(40, 20));
        assert_eq!(c.counts().cached_bytes, 60);
        assert_eq!(hit(&c, 42..60), Some(bytes(42, 18)));
        assert_eq!(hit(&c, 5..45), Some(bytes(5, 40)));
    }

    #[test]
    fn the_cap_evicts_least_recently_used_first() {
        let c = cache(30);
        let a = v("a", 100);
        c.insert("f", &a, 0, bytes(0, 10));
        c.insert("f", &a, 20, bytes(20, 10));
        c.insert("f", &a, 40, bytes(40, 10));
        assert!(hit(&c, 0..10).is_some());
        c.insert("f", &a, 60, bytes(60, 10));
        assert_eq!(c.counts().cached_bytes, 30);
        assert!(hit(&c, 0..10).is_some(), "used recently: kept");
        assert!(hit(&c, 20..30).is_none(), "least recently used: evicted");
        c.insert("f", &a, 0, bytes(0, 31));
        assert_eq!(
            c.counts().cached_bytes,
            30,
            "larger than the cap: never kept"
        );
        let off = RangeCache::new(0);
        off.begin_call();
        off.observe("f", a.clone(), off.epoch(), 0.0);
        off.insert("f", &a, 0, bytes(0, 1));
        assert_eq!(off.lookup("f", &(0..1), 0.0), Lookup::Miss);
    }

    /// Over many random inserts and lookups of one file: every hit is the file's own bytes,
    /// the bytes held never exceed the cap, and the count of them is exact.
    #[test]
    fn random_use_serves_only_true_bytes_within_the_cap() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let c = RangeCache::new(300);
        c.begin_call();
        let a = v("a", 100_000);
        c.observe("f", a.clone(), c.epoch(), 0.0);
        let mut hits = 0;
        for _ in 0..5000 {
            let start = next(1000);
            let len = 1 + next(120);
            if next(2) == 0 {
                c.insert("f", &a, start, bytes(start, len));
            } else if let Some(b) = hit(&c, start..start + len) {
                assert_eq!(b, bytes(start, len));
                hits += 1;
            }
            let state = c.state.borrow();
            let held: u64 = state.files["f"]
                .ranges
                .values()
                .map(|s| s.bytes.len() as u64)
                .sum();
            assert_eq!(held, state.counts.cached_bytes);
            assert!(held <= 300);
            assert_eq!(state.by_use.len(), state.files["f"].ranges.len());
        }
        assert!(hits > 100, "{hits} hits: the test must exercise hits");
    }

    #[test]
    fn forgetting_frees_the_bytes() {
        let c = cache(1000);
        c.insert("f", &v("a", 100), 0, bytes(0, 10));
        c.forget("f");
        assert_eq!(c.counts().cached_bytes, 0);
        assert_eq!(c.lookup("f", &(0..10), 0.0), Lookup::Miss);
    }

    #[test]
    fn a_lifetime_from_the_server_spares_confirmation_until_it_ends() {
        let c = cache(1000);
        c.insert("f", &v("a", 100), 0, bytes(0, 50));
        // max-age=10 on an answer sent at t=1000 ms: fresh until 11000 ms.
        c.observe(
            "f",
            v("a", 100),
            c.epoch(),
            fresh_until(Some("max-age=10"), None, 1000.0),
        );
        c.begin_call();
        assert!(matches!(c.lookup("f", &(0..10), 10_999.0), Lookup::Hit(..)));
        assert_eq!(c.lookup("f", &(0..10), 11_000.0), Lookup::Unconfirmed);
        // The server's latest answer counts: no-cache ends the lifetime at once.
        c.observe(
            "f",
            v("a", 100),
            c.epoch(),
            fresh_until(Some("no-cache"), None, 2000.0),
        );
        c.begin_call();
        assert_eq!(c.lookup("f", &(0..10), 3000.0), Lookup::Unconfirmed);
        // A new version's lifetime is its own, and the old bytes are gone.
        c.observe("f", v("b", 100), c.epoch(), 50_000.0);
        assert_eq!(c.lookup("f", &(0..10), 3000.0), Lookup::Miss);
    }

    #[test]
    fn lifetimes_are_max_age_less_age_and_nothing_else() {
        let f = |cc: Option<&str>, age: Option<&str>| fresh_until(cc, age, 1000.0);
        assert_eq!(f(Some("max-age=60"), None), 61_000.0);
        assert_eq!(
            f(Some("public, MAX-AGE=\"60\", immutable"), Some("20")),
            41_000.0
        );
        assert_eq!(f(Some("max-age=60"), Some("60")), 0.0);
        assert_eq!(f(Some("max-age=60, no-cache"), None), 0.0);
        assert_eq!(f(Some("no-store, max-age=60"), None), 0.0);
        assert_eq!(f(Some("max-age=60, max-age=70"), None), 0.0);
        assert_eq!(f(Some("max-age=-1"), None), 0.0);
        assert_eq!(f(Some("max-age"), None), 0.0);
        assert_eq!(f(Some("immutable"), None), 0.0);
        assert_eq!(f(None, None), 0.0);
        // A malformed Age is ignored, not taken as zero freshness.
        assert_eq!(f(Some("max-age=5"), Some("soon")), 6000.0);
    }
}
