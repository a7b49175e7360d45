//! The decision engine: classify → admit → route → split, as pure functions
//! of the policy, the live feed and the request.
//!
//! [`Engine::new`] prepares a validated policy once (per `on_configure` in the
//! filter); each stage is then a cheap lookup. The filter calls the stages one
//! by one, and drives admission's state machine ([`crate::admission::Gate`])
//! itself, because admission depends on the requests around this one;
//! [`Engine::decide`] runs them all for one request, for `weir explain` and
//! for tests.

mod classify;
mod route;
mod rtt;

use serde::Serialize;

pub use classify::Classified;
pub use route::{Candidate, Routed, Scored, Split, Steered, Targeted, geo_score};
pub use rtt::RttTable;

use crate::admission::{self, Arrival, Gate, LocalSlots};
use crate::feed::Feed;
use crate::model::{HeaderMatch, Policy};

/// What the engine needs of a request (and what `weir explain --json` shows of it).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Request<'a> {
    /// The method, e.g. `POST`.
    pub method: &'a str,
    /// The host (`:authority`), possibly with a port.
    pub host: &'a str,
    /// The path, possibly with a query.
    pub path: &'a str,
    /// The request headers (names in any case), borrowed: the filter reads
    /// them in place from the host's buffer.
    pub headers: &'a [(&'a str, &'a str)],
}

impl<'a> Request<'a> {
    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, v)| v)
    }
}

/// Whether `request` satisfies every one of `conditions` (all of none: yes).
fn all_hold(conditions: &[HeaderMatch], request: &Request<'_>) -> bool {
    conditions.iter().all(|condition| {
        let value = request.header(&condition.name);
        if let Some(present) = condition.present {
            return value.is_some() == present;
        }
        match (value, &condition.equals, &condition.prefix) {
            (Some(v), Some(equals), _) => v == equals,
            (Some(v), None, Some(prefix)) => v.starts_with(prefix.as_str()),
            _ => false,
        }
    })
}

/// An admission decision with its evidence, for one request arriving when
/// `in_flight` slots are taken and nothing is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Admission {
    /// The decision.
    #[serde(flatten)]
    pub verdict: Arrival,
    /// Requests in flight when it was taken.
    pub in_flight: u64,
    /// The concurrency limit in force.
    pub limit: u64,
}

/// Everything the engine decided about one request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// The priority class.
    pub class: Classified,
    /// Admit, queue or shed.
    pub admission: Admission,
    /// The cluster chosen and why; `None` when no service matches the request.
    pub route: Option<Routed>,
    /// The upstream cluster the request goes to.
    pub cluster: Option<String>,
}

/// A policy and its live feed, prepared for per-request decisions.
#[derive(Clone, Debug)]
pub struct Engine {
    classifier: classify::Classifier,
    admission: admission::Settings,
    router: route::Router,
}

impl Engine {
    /// Prepares a policy that passed [`crate::validate()`], with its feed.
    pub fn new(policy: &Policy, feed: &Feed) -> Self {
        Self {
            classifier: classify::Classifier::new(&policy.priority),
            admission: admission::Settings::new(policy, feed),
            router: route::Router::new(policy, feed),
        }
    }

    /// Stage 1: the request's priority class.
    pub fn classify(&self, request: &Request<'_>) -> Classified {
        self.classifier.classify(request)
    }

    /// Stage 1 as the filter needs it: the class's rank alone (its name is
    /// `classes()[rank]`).
    pub fn class_rank(&self, request: &Request<'_>) -> usize {
        self.classifier.rank_and_rule(request).0
    }

    /// Stage 2: what becomes of a request of `class` arriving with
    /// `in_flight` requests already in flight and none held — the answer of
    /// the filter's own state machine in that state.
    pub fn admit(&self, class: &Classified, in_flight: u64) -> Admission {
        let mut gate = Gate::new(self.admission.clone());
        let mut slots = LocalSlots::taken(in_flight);
        let verdict = gate.arrive(0, class.rank, || 0, &mut slots, &mut Vec::new());
        Admission {
            verdict,
            in_flight,
            limit: self.admission.limit(),
        }
    }

    /// The class names, highest first.
    pub fn classes(&self) -> &[String] {
        self.classifier.classes()
    }

    /// The admission settings, for the filter's gate.
    pub fn admission(&self) -> &admission::Settings {
        &self.admission
    }

    /// Stages 3 and 4: the best cluster for the request and, if it has a canary,
    /// the variant. `spread_key` picks among near-equal candidates, and buckets
    /// requests that carry no device id; the filter passes a hash of the device
    /// id when there is one.
    pub fn route(&self, request: &Request<'_>, spread_key: u64) -> Option<Routed> {
        self.router.route(request, spread_key)
    }

    /// Stages 3 and 4 without the evidence: the cluster and the canary split,
    /// borrowed from the engine, with nothing allocated once `scores` (kept
    /// by the caller between requests) has room. The same choice as
    /// [`Engine::route`].
    pub fn steer<'e>(
        &'e self,
        request: &Request<'_>,
        spread_key: u64,
        scores: &mut Vec<Scored>,
    ) -> Option<Steered<'e>> {
        self.router.steer(request, spread_key, scores)
    }

    /// The key that spreads a request across near-equal candidates: the hash of
    /// its device id if it has one, else the hash of `fallback` (e.g. a
    /// request counter).
    pub fn spread_key(&self, request: &Request<'_>, fallback: u64) -> u64 {
        self.router.spread_key(request, fallback)
    }

    /// All stages at once.
    pub fn decide(&self, request: &Request<'_>, in_flight: u64, fallback_key: u64) -> Decision {
        let class = self.classify(request);
        let admission = self.admit(&class, in_flight);
        let route = self.route(request, self.spread_key(request, fallback_key));
        let cluster = route.as_ref().map(|r| r.cluster().to_owned());
        Decision {
            class,
            admission,
            route,
            cluster,
        }
    }
}
