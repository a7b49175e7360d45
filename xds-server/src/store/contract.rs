//! What every store must do, as tests that each engine's module runs against
//! a real instance of it (`store_contract_tests!`): the embedded redb file and
//! a real etcd.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use weir_policy::Feed;

use super::{Checkpoint, MAX_STORED_DECISIONS, Saved, Store};
use crate::controller::{
    Decision, Evidence, LimitStatus, Phase, RolloutState, Scores, SlaStatus, VariantStats, Verdict,
};
use crate::timeline::Point;

/// Generates one `#[test]` per contract check. `$setup` is called once per
/// test and returns a guard (the engine's instance, kept for the test) and an
/// opener: each call opens the same store again, as a restarted `weir` would.
macro_rules! store_contract_tests {
    ($setup:expr) => {
        $crate::store::contract::store_contract_tests!(@each $setup;
            an_empty_store_holds_nothing,
            states_are_replaced_and_decisions_appended_across_reopening,
            pins_are_kept_until_cleared_across_reopening,
            timeline_points_are_kept_until_forgotten,
            keeps_a_bounded_number_of_decisions);
    };
    (@each $setup:expr; $($check:ident),*) => {
        $(
            #[test]
            fn $check() {
                let (_instance, open) = ($setup)();
                $crate::store::contract::$check(&open);
            }
        )*
    };
}
pub(crate) use store_contract_tests;

type Open<'a> = &'a dyn Fn() -> Box<dyn Store>;

pub(crate) fn an_empty_store_holds_nothing(open: Open<'_>) {
    assert_eq!(open().load().unwrap(), Saved::default());
}

pub(crate) fn states_are_replaced_and_decisions_appended_across_reopening(open: Open<'_>) {
    {
        let store = open();
        store
            .save(&checkpoint(
                &[state("a", 0, 100), state("b", 1, 500)],
                &[decision(1)],
                &Scores::default(),
            ))
            .unwrap();
        // No decision: the states still move.
        store
            .save(&checkpoint(&[state("a", 1, 500)], &[], &Scores::default()))
            .unwrap();
        store
            .save(&Checkpoint {
                rollouts: &[state("a", 2, 10_000)],
                new_decisions: &[decision(2), decision(3)],
                scores: &scores(0.42),
                feed: &FEED_LATER,
            })
            .unwrap();
    }
    let saved = open().load().unwrap();
    // States and scores are replaced (b is gone), decisions appended.
    assert_eq!(saved.rollouts, vec![state("a", 2, 10_000)]);
    assert_eq!(saved.decisions, vec![decision(1), decision(2), decision(3)]);
    assert_eq!(saved.scores, scores(0.42));
    assert_eq!(saved.feed.as_ref(), Some(&*FEED_LATER));
    assert_eq!(saved.pins, None);
}

pub(crate) fn pins_are_kept_until_cleared_across_reopening(open: Open<'_>) {
    open().save_pins(Some(&pins())).unwrap();
    // A checkpoint leaves the pins alone.
    open()
        .save(&checkpoint(&[state("a", 0, 100)], &[], &Scores::default()))
        .unwrap();
    assert_eq!(open().load().unwrap().pins, Some(pins()));
    open().save_pins(None).unwrap();
    let saved = open().load().unwrap();
    assert_eq!(saved.pins, None);
    assert_eq!(saved.rollouts, vec![state("a", 0, 100)]);
}

pub(crate) fn timeline_points_are_kept_until_forgotten(open: Open<'_>) {
    {
        let store = open();
        store
            .save_timeline(&[point(1_000), point(2_000)], 0)
            .unwrap();
        store
            .save_timeline(&[point(3_000), point(4_000)], 1_000)
            .unwrap();
        // Durable with the next checkpoint at the latest.
        store
            .save(&checkpoint(&[], &[], &Scores::default()))
            .unwrap();
    }
    assert_eq!(
        open().load().unwrap().timeline,
        vec![point(2_000), point(3_000), point(4_000)]
    );
}

pub(crate) fn keeps_a_bounded_number_of_decisions(open: Open<'_>) {
    let total = MAX_STORED_DECISIONS + 5;
    let all: Vec<Decision> = (0..total).map(decision).collect();
    {
        let store = open();
        // A hundred saves, as a busy controller makes them.
        for batch in all.chunks(101) {
            store
                .save(&checkpoint(&[], batch, &Scores::default()))
                .unwrap();
        }
    }
    let decisions = open().load().unwrap().decisions;
    assert_eq!(decisions.len() as u64, MAX_STORED_DECISIONS);
    assert_eq!(decisions.first().map(|d| d.at_ms), Some(5));
    assert_eq!(decisions.last().map(|d| d.at_ms), Some(total - 1));
}

static FEED: LazyLock<Feed> = LazyLock::new(|| feed(100, None));
static FEED_LATER: LazyLock<Feed> = LazyLock::new(|| feed(10_000, Some(90)));

fn feed(weight_bp: u32, concurrency_limit: Option<u32>) -> Feed {
    Feed {
        canary_mirrors: Default::default(),
        rtt_ms: Default::default(),
        canary_weights: BTreeMap::from([("a".to_owned(), weight_bp)]),
        sla_scores: BTreeMap::from([("stable".to_owned(), 0.75)]),
        concurrency_limit,
    }
}

/// A checkpoint serving a fixed feed.
pub(crate) fn checkpoint<'a>(
    rollouts: &'a [RolloutState],
    new_decisions: &'a [Decision],
    scores: &'a Scores,
) -> Checkpoint<'a> {
    Checkpoint {
        rollouts,
        new_decisions,
        scores,
        feed: &FEED,
    }
}

pub(crate) fn pins() -> Feed {
    Feed {
        canary_mirrors: Default::default(),
        rtt_ms: Default::default(),
        canary_weights: BTreeMap::from([("a".to_owned(), 0)]),
        sla_scores: BTreeMap::new(),
        concurrency_limit: Some(50),
    }
}

pub(crate) fn state(canary: &str, step: usize, weight_bp: u32) -> RolloutState {
    RolloutState {
        mirror_bp: 0,
        canary: canary.into(),
        stable: "stable".into(),
        salt: canary.into(),
        steps_bp: vec![100, 500, 10_000],
        phase: Phase::Progressing,
        step,
        weight_bp,
        started_ms: 1,
        step_since_ms: 2,
        healthy_ms: 3,
        healthy_since_ms: Some(4),
        evaluated_ms: Some(5),
        baseline: None,
    }
}

pub(crate) fn scores(smoothed: f64) -> Scores {
    Scores {
        sla: vec![SlaStatus {
            cluster: "c".into(),
            target_p99_ms: Some(250.0),
            p99_ms: Some(400.0),
            raw: Some(0.4),
            smoothed,
            published: 0.45,
        }],
        limit: Some(LimitStatus {
            adaptive: true,
            min: 10,
            max: 200,
            pressure: Some(1.6),
            ratio: 1.4,
            computed: 88.5,
            published: 90,
            adjusted_at_ms: 7,
            by: weir_policy::model::LimitSignal::Throughput,
            current_rps: Some(412.5),
            baseline_rps: Some(180.0),
        }),
        // The latest evidence travels with the scores (a follower shows it).
        evidence: std::collections::BTreeMap::from([("c".to_owned(), decision(1).evidence)]),
    }
}

pub(crate) fn decision(at_ms: u64) -> Decision {
    Decision {
        at_ms,
        canary: "c".into(),
        from: Phase::Progressing,
        to: Phase::RolledBack,
        step: 1,
        from_weight_bp: 500,
        weight_bp: 0,
        reason: "bad".into(),
        evidence: Evidence {
            window_ms: 10_000,
            canary: VariantStats {
                requests: 200,
                errors: 40,
                error_rate: 0.2,
                latency_observations: 0,
                p95_ms: None,
                p99_ms: Some(12.5),
            },
            stable: VariantStats::default(),
            stable_baseline_at_ms: None,
            error_test: None,
            latency_ratio: None,
            latency_unresolved: Vec::new(),
            segments: Vec::new(),
            verdict: Verdict::Bad,
            findings: vec!["errors: bad".into()],
        },
        policy: String::new(),
    }
}

fn point(at_ms: u64) -> Point {
    Point {
        at_ms,
        rollouts: Default::default(),
        classes: Default::default(),
        in_flight: at_ms % 7,
        queue_depth: 0,
        concurrency_limit: Some(200),
        clusters: Default::default(),
    }
}
