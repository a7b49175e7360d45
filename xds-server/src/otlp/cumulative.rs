//! Cumulative streams turned into deltas.
//!
//! A source is a resource (its attributes); a stream is one metric of one
//! source: its name, its data point's attributes and its resource's
//! attributes. The first value of a stream counts in full if its source
//! already reported in an earlier request (the stream began since: Envoy
//! reports a counter once it is used, SDKs a series once it is recorded);
//! from a source weir has not heard from yet — after weir starts, say — it is
//! only remembered, so that a source that has run for days does not look like
//! one burst. Each later value counts what it added since the previous one,
//! and a value that went down (in any bucket) means the source started over,
//! so it counts in full.

use std::collections::HashMap;

use super::exponential::Buckets;

/// Streams remembered at most; beyond, streams not seen for
/// [`IDLE_MS`] are forgotten, and if none is, new streams are refused.
pub(crate) const MAX_STREAMS: usize = 20_000;

/// A stream not seen for this long is forgotten when room is needed.
pub(crate) const IDLE_MS: u64 = 10 * 60 * 1000;

/// The last value of every cumulative stream.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    streams: HashMap<String, Stream>,
    /// Sources with cumulative streams: the request they were first seen
    /// in, and when they were last seen.
    sources: HashMap<String, (u64, u64)>,
    /// The current request's number.
    request: u64,
}

#[derive(Debug)]
struct Stream {
    seen_ms: u64,
    last: Last,
}

#[derive(Debug)]
enum Last {
    Sum(u64),
    Explicit {
        bounds: Vec<f64>,
        counts: Vec<u64>,
        count: u64,
    },
    Exponential(Buckets),
}

/// What a cumulative value adds.
#[derive(Debug, PartialEq)]
pub(crate) enum Delta<T> {
    /// The first value of the stream (or the first since its layout
    /// changed): remembered, nothing counted.
    Baseline,
    /// What was added since the previous value (all of it after a restart).
    Added(T),
}

/// No room for one more stream.
#[derive(Debug, PartialEq)]
pub(crate) struct Full;

impl Streams {
    /// Streams remembered.
    pub(crate) fn len(&self) -> usize {
        self.streams.len()
    }

    /// Starts a new export request.
    pub(crate) fn begin_request(&mut self) {
        self.request += 1;
    }

    /// Whether `source` reported in an earlier request; remembers it (as
    /// many sources as streams at most).
    pub(crate) fn known_source(&mut self, source: &str, now_ms: u64) -> bool {
        if let Some((first, seen_ms)) = self.sources.get_mut(source) {
            *seen_ms = now_ms;
            return *first < self.request;
        }
        if self.sources.len() >= MAX_STREAMS {
            self.sources
                .retain(|_, (_, seen_ms)| now_ms.saturating_sub(*seen_ms) < IDLE_MS);
        }
        if self.sources.len() < MAX_STREAMS {
            self.sources
                .insert(source.to_owned(), (self.request, now_ms));
        }
        false
    }

    /// Forgets a stream (its source reported a gap).
    pub(crate) fn forget(&mut self, key: &str) {
        self.streams.remove(key);
    }

    /// The stream `key`, marked seen; `None` if new.
    fn existing(&mut self, key: &str, now_ms: u64) -> Option<&mut Stream> {
        let stream = self.streams.get_mut(key)?;
        stream.seen_ms = now_ms;
        Some(stream)
    }

    /// Remembers a new stream, if there is room.
    fn insert(&mut self, key: &str, now_ms: u64, last: Last) -> Result<(), Full> {
        if self.streams.len() >= MAX_STREAMS {
            self.streams
                .retain(|_, s| now_ms.saturating_sub(s.seen_ms) < IDLE_MS);
            if self.streams.len() >= MAX_STREAMS {
                return Err(Full);
            }
        }
        self.streams.insert(
            key.to_owned(),
            Stream {
                seen_ms: now_ms,
                last,
            },
        );
        Ok(())
    }

    /// A cumulative sum's new value; `counts_first`: whether a first value
    /// counts in full (else it is a baseline).
    pub(crate) fn sum(
        &mut self,
        key: &str,
        now_ms: u64,
        value: u64,
        counts_first: bool,
    ) -> Result<Delta<u64>, Full> {
        if let Some(stream) = self.existing(key, now_ms) {
            let delta = match stream.last {
                Last::Sum(before) if value >= before => Delta::Added(value - before),
                Last::Sum(_) => Delta::Added(value),
                _ => Delta::Baseline,
            };
            stream.last = Last::Sum(value);
            return Ok(delta);
        }
        self.insert(key, now_ms, Last::Sum(value))?;
        Ok(if counts_first {
            Delta::Added(value)
        } else {
            Delta::Baseline
        })
    }

    /// A cumulative explicit-bucket histogram's new value: the observations
    /// added, with the counts added per bucket in `added`. A change of bounds
    /// starts the stream again.
    pub(crate) fn explicit(
        &mut self,
        key: &str,
        now_ms: u64,
        (bounds, counts, count): (&[f64], &[u64], u64),
        counts_first: bool,
        added: &mut Vec<u64>,
    ) -> Result<Delta<u64>, Full> {
        added.clear();
        let Some(stream) = self.existing(key, now_ms) else {
            let last = Last::Explicit {
                bounds: bounds.to_vec(),
                counts: counts.to_vec(),
                count,
            };
            self.insert(key, now_ms, last)?;
            if !counts_first {
                return Ok(Delta::Baseline);
            }
            added.extend_from_slice(counts);
            return Ok(Delta::Added(count));
        };
        let same_layout = matches!(
            &stream.last,
            Last::Explicit { bounds: b, counts: c, .. } if b[..] == *bounds && c.len() == counts.len()
        );
        if !same_layout {
            stream.last = Last::Explicit {
                bounds: bounds.to_vec(),
                counts: counts.to_vec(),
                count,
            };
            return Ok(Delta::Baseline);
        }
        let Last::Explicit {
            counts: counts_before,
            count: count_before,
            ..
        } = &mut stream.last
        else {
            return Ok(Delta::Baseline);
        };
        let went_down = count < *count_before
            || counts
                .iter()
                .zip(counts_before.iter())
                .any(|(now, was)| now < was);
        let delta = if went_down {
            added.extend_from_slice(counts);
            count
        } else {
            added.extend(
                counts
                    .iter()
                    .zip(counts_before.iter())
                    .map(|(now, was)| now - was),
            );
            count - *count_before
        };
        counts_before.copy_from_slice(counts);
        *count_before = count;
        Ok(Delta::Added(delta))
    }

    /// A cumulative exponential histogram's new value.
    pub(crate) fn exponential(
        &mut self,
        key: &str,
        now_ms: u64,
        buckets: &Buckets,
        counts_first: bool,
    ) -> Result<Delta<Buckets>, Full> {
        if let Some(stream) = self.existing(key, now_ms) {
            let delta = match &stream.last {
                Last::Exponential(before) => {
                    Delta::Added(buckets.minus(before).unwrap_or_else(|| buckets.clone()))
                }
                _ => Delta::Baseline,
            };
            stream.last = Last::Exponential(buckets.clone());
            return Ok(delta);
        }
        self.insert(key, now_ms, Last::Exponential(buckets.clone()))?;
        Ok(if counts_first {
            Delta::Added(buckets.clone())
        } else {
            Delta::Baseline
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_become_deltas_and_a_drop_is_a_restart() {
        let mut s = Streams::default();
        let key = || "k";
        assert_eq!(s.sum(key(), 0, 100, false), Ok(Delta::Baseline));
        assert_eq!(s.sum(key(), 1, 130, true), Ok(Delta::Added(30)));
        assert_eq!(s.sum(key(), 2, 130, true), Ok(Delta::Added(0)));
        assert_eq!(s.sum(key(), 3, 7, true), Ok(Delta::Added(7)));
        assert_eq!(s.sum(key(), 4, 10, true), Ok(Delta::Added(3)));
        assert_eq!(s.sum("new", 4, 10, false), Ok(Delta::Baseline));
        assert_eq!(s.sum("newer", 4, 10, true), Ok(Delta::Added(10)));
        s.forget("k");
        assert_eq!(s.sum(key(), 5, 50, false), Ok(Delta::Baseline));
    }

    #[test]
    fn histograms_become_deltas() {
        let mut s = Streams::default();
        let b = [1.0, 2.0];
        let mut added = Vec::new();
        let mut explicit = |key, at, counts: &[u64], count, counts_first| {
            let delta = s.explicit(key, at, (&b, counts, count), counts_first, &mut added);
            (delta, added.clone())
        };
        assert_eq!(
            explicit("h", 0, &[1, 1, 1], 3, false),
            (Ok(Delta::Baseline), vec![])
        );
        assert_eq!(
            explicit("h", 1, &[1, 4, 2], 7, true),
            (Ok(Delta::Added(4)), vec![0, 3, 1])
        );
        assert_eq!(
            explicit("h", 2, &[0, 1, 0], 1, true),
            (Ok(Delta::Added(1)), vec![0, 1, 0])
        );
        assert_eq!(
            explicit("new", 2, &[0, 1, 0], 1, true),
            (Ok(Delta::Added(1)), vec![0, 1, 0])
        );
        assert_eq!(
            s.explicit("h", 3, (&[5.0, 9.0], &[1, 1, 1], 3), true, &mut added),
            Ok(Delta::Baseline)
        );
    }

    #[test]
    fn sources_are_known_from_the_next_request_on() {
        let mut s = Streams::default();
        s.begin_request();
        assert!(!s.known_source("a", 0));
        assert!(!s.known_source("a", 0), "not within the same request");
        s.begin_request();
        assert!(s.known_source("a", 1));
        assert!(!s.known_source("b", 1));
    }

    #[test]
    fn the_number_of_streams_is_bounded() {
        let mut s = Streams::default();
        for i in 0..MAX_STREAMS {
            assert_eq!(s.sum(&i.to_string(), 0, 1, false), Ok(Delta::Baseline));
        }
        assert_eq!(s.sum("one more", 1, 1, false), Err(Full));
        assert_eq!(s.sum("0", 2, 2, false), Ok(Delta::Added(1)));
        assert_eq!(
            s.sum("one more", IDLE_MS + 1, 1, false),
            Ok(Delta::Baseline)
        );
        assert_eq!(s.len(), 2);
    }
}
