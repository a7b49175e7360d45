//! Open-loop device traffic: a schedule of requests of several classes, sent
//! on time whether or not earlier ones were answered, and what came back.
//!
//! A schedule is either evenly spaced with the classes interleaved in exact
//! proportions (for tests that count), or Poisson arrivals with classes and
//! devices drawn at random from a seed (for benchmarks). Latency is measured
//! from each request's scheduled time, so a client that falls behind shows
//! up as latency instead of hiding it.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::backend::BACKEND_HEADER;

/// One kind of device request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    /// The priority class it should be classified as.
    pub name: &'static str,
    /// The request's path (its class is told by the path).
    pub path: &'static str,
    /// Its weight in the mix.
    pub weight: u32,
    /// Its body's size in bytes.
    pub body: RangeInclusive<usize>,
}

/// A device fleet's mix, by requests: 2 % alarms, 8 % commands, 60 %
/// telemetry, 30 % heartbeats, on the example policy's paths. Bodies as the
/// devices send them: heartbeats tiny, telemetry 128–512 B, commands and
/// alarms 64–256 B. (Per device, heartbeats come at 1 Hz, telemetry at
/// 5–20 Hz, commands at 0.1–2 Hz and alarms rarely; this is their sum over a
/// fleet in which a fifth of the devices stream telemetry.)
pub fn device_mix() -> Vec<Class> {
    vec![
        Class {
            name: "alarm",
            path: "/v1/alarms",
            weight: 2,
            body: 64..=256,
        },
        Class {
            name: "command",
            path: "/v1/commands",
            weight: 8,
            body: 64..=256,
        },
        Class {
            name: "telemetry",
            path: "/v1/telemetry",
            weight: 60,
            body: 128..=512,
        },
        Class {
            name: "heartbeat",
            path: "/v1/heartbeat",
            weight: 30,
            body: 8..=16,
        },
    ]
}

/// A policy for [`device_mix`] traffic: one service on one backend named
/// `backend`, the classes told by the mix's paths, the example policy's waits
/// (alarm 2 s, command 1 s, telemetry 500 ms, heartbeat 100 ms) and
/// `admission.concurrency_limit` at `limit`.
pub fn device_policy(limit: u32) -> anyhow::Result<weir_policy::Policy> {
    let yaml = format!(
        r#"
device_types: [sensor]
regions: {{ rtt_ms: {{ eu-west: {{ eu-west: 1 }} }} }}
clusters:
  - {{ name: backend, region: eu-west, endpoints: ["127.0.0.1:9"] }}
services:
  - name: ingest
    match: {{ path_prefix: / }}
    placements: [{{ cluster: backend }}]
priority:
  classes: [alarm, command, telemetry, heartbeat]
  default: telemetry
  rules:
    - {{ class: alarm, match: {{ path_prefix: /v1/alarms }} }}
    - {{ class: command, match: {{ path_prefix: /v1/commands }} }}
    - {{ class: heartbeat, match: {{ path_prefix: /v1/heartbeat }} }}
admission:
  concurrency_limit: {limit}
  retry_after: 2s
  classes:
    alarm:     {{ max_wait: 2s }}
    command:   {{ max_wait: 1s }}
    telemetry: {{ max_wait: 500ms }}
    heartbeat: {{ max_wait: 100ms }}
"#
    );
    crate::fleet::policy_from_yaml("device-traffic.yaml", &yaml)
}

/// How requests are spaced in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    /// Evenly, the classes interleaved in exact proportion to their weights
    /// (every run the same).
    Even,
    /// Poisson arrivals; class, body size and device drawn at random from
    /// this seed.
    Poisson { seed: u64 },
}

/// One request of a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// When it leaves, from the start of the run.
    pub at: Duration,
    /// Its class, an index into the mix.
    pub class: usize,
    /// Its body's size.
    pub body: usize,
    /// The device sending it.
    pub device: u32,
}

/// `count` requests of `mix` at `rate` per second from `devices` devices.
pub fn schedule(
    mix: &[Class],
    rate: f64,
    count: usize,
    devices: u32,
    spacing: Spacing,
) -> Vec<Arrival> {
    let devices = devices.max(1);
    match spacing {
        Spacing::Even => {
            let mut classes = Interleave::new(mix);
            (0..count)
                .map(|i| {
                    let class = classes.next_class();
                    let body = &mix[class].body;
                    let span = body.end() - body.start() + 1;
                    Arrival {
                        at: Duration::from_secs_f64(i as f64 / rate),
                        class,
                        body: body.start() + i % span,
                        device: (i % devices as usize) as u32,
                    }
                })
                .collect()
        }
        Spacing::Poisson { seed } => {
            let mut rng = SmallRng::seed_from_u64(seed);
            let total: u32 = mix.iter().map(|c| c.weight).sum();
            let mut at = 0.0_f64;
            (0..count)
                .map(|_| {
                    // Exponential gaps: 1 - u is in (0, 1], so ln never sees 0.
                    let u: f64 = rng.random();
                    at += -(1.0 - u).ln() / rate;
                    let mut pick = rng.random_range(0..total.max(1));
                    let class = mix
                        .iter()
                        .position(|c| {
                            let hit = pick < c.weight;
                            pick = pick.saturating_sub(c.weight);
                            hit
                        })
                        .unwrap_or(0);
                    Arrival {
                        at: Duration::from_secs_f64(at),
                        class,
                        body: rng.random_range(mix[class].body.clone()),
                        device: rng.random_range(0..devices),
                    }
                })
                .collect()
        }
    }
}

/// Smooth weighted round robin: over every `Σ weights` picks each class
/// comes up exactly its weight's times, spread out rather than in runs.
struct Interleave {
    weights: Vec<i64>,
    current: Vec<i64>,
    total: i64,
}

impl Interleave {
    fn new(mix: &[Class]) -> Self {
        let weights: Vec<i64> = mix.iter().map(|c| i64::from(c.weight)).collect();
        Self {
            current: vec![0; weights.len()],
            total: weights.iter().sum(),
            weights,
        }
    }

    fn next_class(&mut self) -> usize {
        for (current, weight) in self.current.iter_mut().zip(&self.weights) {
            *current += weight;
        }
        let best = (0..self.current.len())
            .max_by_key(|&i| (self.current[i], std::cmp::Reverse(i)))
            .unwrap_or(0);
        if let Some(current) = self.current.get_mut(best) {
            *current -= self.total;
        }
        best
    }
}

/// What became of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The backend answered 200.
    Served,
    /// The proxy turned it away (a 503 or 429 of its own, not the
    /// backend's); `weir_class` is the class Weir's `x-weir-shed` names.
    Shed { weir_class: Option<String> },
    /// No answer in time: the proxy's route timeout (504) or the client's.
    TimedOut,
    /// Anything else: this status (0: the connection failed).
    Failed(u16),
}

/// One request's class, answer and latency (from its scheduled time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Its class, an index into the mix.
    pub class: usize,
    /// What came back.
    pub answer: Answer,
    /// From its scheduled time to the end of its answer.
    pub latency: Duration,
}

/// Where and how to send a schedule.
#[derive(Clone, Debug)]
pub struct Target {
    /// The base URL (scheme, host and port) requests go to.
    pub base: String,
    /// Connections to spread requests over, HTTP/2 each (Envoy hands each
    /// connection to one worker).
    pub connections: usize,
    /// The client gives up on a request after this long.
    pub timeout: Duration,
    /// Headers every request carries.
    pub headers: Vec<(String, String)>,
}

/// Sends `schedule` to `target` on time and returns every request's outcome,
/// in schedule order, once all are answered or timed out.
pub async fn send(target: &Target, mix: &[Class], schedule: &[Arrival]) -> Vec<Outcome> {
    let clients: Vec<reqwest::Client> = (0..target.connections.max(1))
        .map(|_| {
            reqwest::Client::builder()
                .no_proxy()
                .http2_prior_knowledge()
                .build()
                .expect("build HTTP/2 client")
        })
        .collect();
    let headers = Arc::new(target.headers.clone());
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = JoinSet::new();
    for (i, arrival) in schedule.iter().copied().enumerate() {
        let due = start + arrival.at;
        tokio::time::sleep_until(due).await;
        let class = &mix[arrival.class];
        let mut request = clients[i % clients.len()]
            .post(format!("{}{}", target.base, class.path))
            .header("x-device-id", format!("device-{}", arrival.device))
            .body(vec![b'x'; arrival.body])
            .timeout(target.timeout);
        for (name, value) in headers.iter() {
            request = request.header(name, value);
        }
        tasks.spawn(async move {
            let answer = match request.send().await {
                Ok(response) => {
                    let answer = answer_of(&response);
                    // The answer ends with its body.
                    match response.bytes().await {
                        Ok(_) => answer,
                        Err(err) if err.is_timeout() => Answer::TimedOut,
                        Err(_) => Answer::Failed(0),
                    }
                }
                Err(err) if err.is_timeout() => Answer::TimedOut,
                Err(_) => Answer::Failed(0),
            };
            (
                i,
                Outcome {
                    class: arrival.class,
                    answer,
                    latency: due.elapsed(),
                },
            )
        });
    }
    let mut outcomes: Vec<Option<Outcome>> = vec![None; schedule.len()];
    while let Some(done) = tasks.join_next().await {
        let (i, outcome) = done.expect("a request task panicked");
        outcomes[i] = Some(outcome);
    }
    outcomes.into_iter().flatten().collect()
}

fn answer_of(response: &reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let from_backend = response.headers().contains_key(BACKEND_HEADER);
    match status {
        200 if from_backend => Answer::Served,
        503 | 429 if !from_backend => Answer::Shed {
            weir_class: response
                .headers()
                .get(weir_policy::headers::SHED)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        },
        504 => Answer::TimedOut,
        other => Answer::Failed(other),
    }
}

/// Per class: how many were sent, served, shed, timed out and failed, and
/// the latencies of those served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests sent.
    pub sent: u64,
    /// Answered 200 by the backend.
    pub served: u64,
    /// Turned away by the proxy.
    pub shed: u64,
    /// Not answered in time.
    pub timed_out: u64,
    /// Any other answer.
    pub failed: u64,
    /// The latencies of the served requests.
    pub served_latencies: Vec<Duration>,
}

impl Tally {
    /// The share of the sent requests that were shed (0 when none were sent).
    pub fn shed_share(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.shed as f64 / self.sent as f64
        }
    }
}

/// `outcomes` (of one run or several) tallied per class of a mix of
/// `classes` classes.
pub fn tally<'a>(classes: usize, outcomes: impl IntoIterator<Item = &'a Outcome>) -> Vec<Tally> {
    let mut tallies = vec![Tally::default(); classes];
    for outcome in outcomes {
        let Some(tally) = tallies.get_mut(outcome.class) else {
            continue;
        };
        tally.sent += 1;
        match outcome.answer {
            Answer::Served => {
                tally.served += 1;
                tally.served_latencies.push(outcome.latency);
            }
            Answer::Shed { .. } => tally.shed += 1,
            Answer::TimedOut => tally.timed_out += 1,
            Answer::Failed(_) => tally.failed += 1,
        }
    }
    tallies
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_even_schedule_holds_each_class_in_exact_proportion() {
        let mix = device_mix();
        let arrivals = schedule(&mix, 100.0, 1_000, 50, Spacing::Even);
        for (i, class) in mix.iter().enumerate() {
            let n = arrivals.iter().filter(|a| a.class == i).count();
            assert_eq!(n, 10 * class.weight as usize, "{}", class.name);
        }
        // Spread out: no class comes twice in a row more than its weight allows.
        let alarms: Vec<usize> = (0..arrivals.len())
            .filter(|&i| arrivals[i].class == 0)
            .collect();
        assert!(alarms.windows(2).all(|w| w[1] - w[0] >= 40), "{alarms:?}");
        assert_eq!(arrivals[100].at, Duration::from_secs(1));
        assert!(
            arrivals
                .iter()
                .all(|a| mix[a.class].body.contains(&a.body) && a.device < 50)
        );
    }

    #[test]
    fn poisson_arrivals_have_the_rate_and_mix_asked_for() {
        let mix = device_mix();
        let n = 20_000;
        let arrivals = schedule(&mix, 500.0, n, 1_000, Spacing::Poisson { seed: 7 });
        // The mean gap is 1/rate; its standard error is (1/rate)/√n, so the
        // whole run's length is within 5 standard errors of n/rate.
        let length = arrivals.last().map(|a| a.at.as_secs_f64()).unwrap_or(0.0);
        let expected = n as f64 / 500.0;
        assert!(
            (length - expected).abs() < 5.0 * expected / (n as f64).sqrt(),
            "{length} s for {expected} s"
        );
        for (i, class) in mix.iter().enumerate() {
            let p = f64::from(class.weight) / 100.0;
            let count = arrivals.iter().filter(|a| a.class == i).count() as f64;
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (count - n as f64 * p).abs() < 5.0 * sd,
                "{}: {count} of {n}",
                class.name
            );
        }
        assert!(arrivals.windows(2).all(|w| w[0].at <= w[1].at));
        assert_eq!(
            arrivals,
            schedule(&mix, 500.0, n, 1_000, Spacing::Poisson { seed: 7 })
        );
    }
}
