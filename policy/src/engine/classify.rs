//! Stage 1: the priority class, from the first rule that matches.

use serde::Serialize;

use super::Request;
use crate::model::Priority;

/// A request's class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Classified {
    /// The class name.
    pub name: String,
    /// Its rank: 0 is the highest class.
    pub rank: usize,
    /// The index of the rule that matched, or `None` for the default class.
    pub rule: Option<usize>,
}

#[derive(Clone, Debug)]
pub(super) struct Classifier {
    classes: Vec<String>,
    default_rank: usize,
    rules: Vec<(usize, crate::model::RuleMatch)>,
}

impl Classifier {
    pub(super) fn new(priority: &Priority) -> Self {
        let rank_of = |name: &str| priority.classes.iter().position(|c| c == name);
        Self {
            classes: priority.classes.clone(),
            default_rank: rank_of(&priority.default)
                .unwrap_or(priority.classes.len().saturating_sub(1)),
            // Validation guarantees every rule's class exists; a rule that
            // somehow names none is dropped rather than trusted.
            rules: priority
                .rules
                .iter()
                .filter_map(|rule| Some((rank_of(&rule.class)?, rule.matches.clone())))
                .collect(),
        }
    }

    pub(super) fn classes(&self) -> &[String] {
        &self.classes
    }

    pub(super) fn classify(&self, request: &Request<'_>) -> Classified {
        let (rank, rule) = self.rank_and_rule(request);
        Classified {
            name: self.classes.get(rank).cloned().unwrap_or_default(),
            rank,
            rule,
        }
    }

    /// The class's rank and the index of the rule that matched, without
    /// naming the class (the filter's per-request path allocates nothing).
    pub(super) fn rank_and_rule(&self, request: &Request<'_>) -> (usize, Option<usize>) {
        let matched = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, (_, conditions))| {
                conditions
                    .path_prefix
                    .as_deref()
                    .is_none_or(|p| request.path.starts_with(p))
                    && conditions
                        .method
                        .as_deref()
                        .is_none_or(|m| request.method.eq_ignore_ascii_case(m))
                    && super::all_hold(&conditions.headers, request)
            })
            .map(|(index, (rank, _))| (*rank, Some(index)));
        matched.unwrap_or((self.default_rank, None))
    }
}
