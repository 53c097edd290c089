//! The cache's eviction policy against a plain sequential S3-FIFO.
//!
//! A cache of 200 entries has one shard, so its decisions are S3-FIFO's
//! as the `ttl::order` module documents them: a small queue of a twentieth
//! of the capacity that new keys enter, a main queue, a ghost record of as
//! many keys as the main queue holds, two-bit access counts, at most 32
//! heads considered per eviction. The reference below is that description
//! written the obvious way (queues of keys, a map of counts); one thread
//! replays a seeded trace into both, and every hit and every eviction must
//! be the same, in the same order, with and without a TTL.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latchfree::cache::TtlCache;
use latchfree::clock::ManualClock;
use latchfree::ttl::{EvictionCause, Sweep};

#[path = "model/xorshift.rs"]
mod xorshift;

const CAPACITY: usize = 200;
const SMALL: usize = CAPACITY / 20;
const GHOST: usize = CAPACITY - CAPACITY / 20;
const SCAN: usize = 32;

#[derive(Default)]
struct Reference {
    small: VecDeque<u64>,
    main: VecDeque<u64>,
    counts: HashMap<u64, u8>,
    /// Recorded keys, oldest first; `None` once taken back.
    ghost: VecDeque<Option<u64>>,
}

impl Reference {
    fn len(&self) -> usize {
        self.small.len() + self.main.len()
    }

    fn get(&mut self, key: u64) -> bool {
        match self.counts.get_mut(&key) {
            Some(count) => {
                *count = (*count + 1).min(3);
                true
            }
            None => false,
        }
    }

    /// Inserts `key` (absent); returns the key evicted to make room.
    fn insert(&mut self, key: u64) -> Option<u64> {
        let evicted = (self.len() == CAPACITY).then(|| self.evict());
        let recorded = self.ghost.iter().position(|k| *k == Some(key));
        if let Some(i) = recorded {
            self.ghost[i] = None;
            self.main.push_back(key);
        } else {
            self.small.push_back(key);
        }
        self.counts.insert(key, 0);
        evicted
    }

    fn evict(&mut self) -> u64 {
        let mut considered = 0;
        loop {
            let from_small =
                !self.small.is_empty() && (self.small.len() >= SMALL || self.main.is_empty());
            let key = if from_small {
                self.small.pop_front()
            } else {
                self.main.pop_front()
            }
            .expect("a full cache has entries");
            considered += 1;
            let last_chance = considered >= SCAN;
            let count = self.counts[&key];
            if from_small {
                if count > 0 && !last_chance {
                    self.main.push_back(key);
                    continue;
                }
                if !self.ghost.contains(&Some(key)) {
                    self.ghost.push_back(Some(key));
                    while self.ghost.len() > GHOST {
                        self.ghost.pop_front();
                    }
                }
            } else if count > 0 && !last_chance {
                *self.counts.get_mut(&key).expect("counted") -= 1;
                self.main.push_back(key);
                continue;
            }
            self.counts.remove(&key);
            return key;
        }
    }
}

/// A skewed trace over 2,000 keys: mostly a hot set, some scans.
fn trace(seed: u64, len: usize) -> Vec<(u64, bool)> {
    let mut rng = xorshift::XorShift::new(seed);
    (0..len)
        .map(|i| {
            let r = rng.next();
            let key = match r % 10 {
                // A hot set of 150 keys, skewed within itself.
                0..=5 => (r >> 8) % (1 + (r >> 40) % 150),
                // A scan through the cold keys.
                6 => 1_000 + (i as u64 % 1_000),
                _ => (r >> 8) % 2_000,
            };
            // One request in eight that hits also writes the key anew.
            (key, (r >> 60).is_multiple_of(8))
        })
        .collect()
}

fn check(ttl: bool, seed: u64) {
    let clock = ManualClock::new(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1));
    let evicted = Arc::new(Mutex::new(Vec::new()));
    let mut builder = TtlCache::<u64, u64>::builder()
        .max_entries(CAPACITY)
        .clock(clock)
        .sweep(Sweep::Manual)
        .eviction_listener({
            let evicted = evicted.clone();
            move |key, _, cause| {
                if cause == EvictionCause::Capacity {
                    evicted.lock().unwrap().push(*key);
                }
            }
        });
    if ttl {
        builder = builder.time_to_live(Duration::from_secs(3_600));
    }
    let cache = builder.build().unwrap();
    let mut reference = Reference::default();
    let mut want_evicted = Vec::new();
    for (i, (key, rewrite)) in trace(seed, 60_000).into_iter().enumerate() {
        let hit = cache.get(&key).is_some();
        assert_eq!(hit, reference.get(key), "request {i}: key {key}");
        if !hit {
            cache.insert(key, key).unwrap();
            want_evicted.extend(reference.insert(key));
        } else if rewrite {
            // A replacement with the same lifetime keeps the key's place in
            // its queue and its count: the reference does not change.
            cache.insert(key, key + 1).unwrap();
        }
        let got = evicted.lock().unwrap();
        assert_eq!(
            got.len(),
            want_evicted.len(),
            "request {i}: evictions so far differ"
        );
        assert_eq!(got.last(), want_evicted.last(), "request {i}");
    }
    assert_eq!(cache.len(), CAPACITY);
}

#[test]
fn hits_and_evictions_match_a_sequential_s3_fifo() {
    for seed in [1, 2, 3] {
        check(false, seed);
    }
}

#[test]
fn a_ttl_changes_no_decision() {
    for seed in [1, 4] {
        check(true, seed);
    }
}
