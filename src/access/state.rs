//! The application state machine. Only the transitions listed here exist;
//! every other is refused with the reason, whatever the caller's role.
//!
//! ```text
//! draft ─submit─► submitted ─start review─► under_review ─request changes─► changes_requested
//!                     │                        │    ▲                             │
//!                     │ (rule: auto-eligible)  │    └────────── resubmit ─────────┘
//!                     ▼                        ▼
//!                  approved ◄─(quorum)─────────┤
//!                     │                        └─(quorum)─► rejected
//!                     └─accept DUA, fee settled─► active
//! draft | submitted | under_review | changes_requested ─withdraw─► withdrawn
//! ```

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where an application is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum State {
    Draft,
    Submitted,
    UnderReview,
    ChangesRequested,
    Approved,
    Active,
    Rejected,
    Withdrawn,
}

impl State {
    pub const ALL: [State; 8] = [
        Self::Draft,
        Self::Submitted,
        Self::UnderReview,
        Self::ChangesRequested,
        Self::Approved,
        Self::Active,
        Self::Rejected,
        Self::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Submitted => "submitted",
            Self::UnderReview => "under_review",
            Self::ChangesRequested => "changes_requested",
            Self::Approved => "approved",
            Self::Active => "active",
            Self::Rejected => "rejected",
            Self::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the committee still has to decide.
    pub fn pending(self) -> bool {
        matches!(self, Self::Submitted | Self::UnderReview | Self::ChangesRequested)
    }

    /// Whether the applicant may still change the content.
    pub fn editable(self) -> bool {
        matches!(self, Self::Draft | Self::ChangesRequested)
    }
}

/// What happens to an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ApplicationAction)]
pub enum Action {
    Submit,
    StartReview,
    RequestChanges,
    Resubmit,
    Approve,
    Reject,
    Activate,
    Withdraw,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Self::Submit,
        Self::StartReview,
        Self::RequestChanges,
        Self::Resubmit,
        Self::Approve,
        Self::Reject,
        Self::Activate,
        Self::Withdraw,
    ];
}

/// Who acts: the project's PI, a steward, or a rule (a vote reaching its
/// quorum, a cohort's auto-eligibility).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Actor {
    Applicant,
    Steward,
    Rule,
}

/// The state after `action` by `actor` in `state`, or why it cannot happen.
pub fn next(state: State, action: Action, actor: Actor) -> Result<State, String> {
    if let Some(to) = target(state, action, actor) {
        return Ok(to);
    }
    let who = match actor {
        Actor::Applicant => "the applicant",
        Actor::Steward => "a steward",
        Actor::Rule => "a rule",
    };
    let allowed: std::collections::BTreeSet<&str> = Action::ALL
        .into_iter()
        .filter(|a| [Actor::Applicant, Actor::Steward, Actor::Rule].into_iter().any(|w| target(state, *a, w).is_some()))
        .map(action_name)
        .collect();
    let options = if allowed.is_empty() {
        "nothing; it is final".to_owned()
    } else {
        allowed.into_iter().collect::<Vec<_>>().join(", ")
    };
    let here = state.as_str().replace('_', " ");
    Err(format!(
        "{who} cannot {} an application that is {here}; from {here} the possible actions are: {options}",
        action_words(action)
    ))
}

fn target(state: State, action: Action, actor: Actor) -> Option<State> {
    use {Action as A, Actor as W, State as S};
    Some(match (state, action, actor) {
        (S::Draft, A::Submit, W::Applicant) => S::Submitted,
        (S::Submitted, A::StartReview, W::Steward) | (S::ChangesRequested, A::Resubmit, W::Applicant) => S::UnderReview,
        (S::UnderReview, A::RequestChanges, W::Steward | W::Rule) => S::ChangesRequested,
        (S::Submitted | S::UnderReview, A::Approve, W::Rule) => S::Approved,
        (S::UnderReview, A::Reject, W::Rule) => S::Rejected,
        (S::Approved, A::Activate, W::Applicant) => S::Active,
        (S::Draft | S::Submitted | S::UnderReview | S::ChangesRequested, A::Withdraw, W::Applicant) => S::Withdrawn,
        _ => return None,
    })
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Submit => "submit",
        Action::StartReview => "start_review",
        Action::RequestChanges => "request_changes",
        Action::Resubmit => "resubmit",
        Action::Approve => "approve",
        Action::Reject => "reject",
        Action::Activate => "activate",
        Action::Withdraw => "withdraw",
    }
}

fn action_words(action: Action) -> &'static str {
    match action {
        Action::Submit => "submit",
        Action::StartReview => "start reviewing",
        Action::RequestChanges => "request changes to",
        Action::Resubmit => "resubmit",
        Action::Approve => "approve",
        Action::Reject => "reject",
        Action::Activate => "activate",
        Action::Withdraw => "withdraw",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTORS: [Actor; 3] = [Actor::Applicant, Actor::Steward, Actor::Rule];

    /// The transitions of the design, written out independently of `next`.
    fn designed() -> Vec<(State, Action, Actor, State)> {
        use {Action as A, Actor as W, State as S};
        let mut edges = vec![
            (S::Draft, A::Submit, W::Applicant, S::Submitted),
            (S::Submitted, A::StartReview, W::Steward, S::UnderReview),
            (S::UnderReview, A::RequestChanges, W::Steward, S::ChangesRequested),
            (S::UnderReview, A::RequestChanges, W::Rule, S::ChangesRequested),
            (S::ChangesRequested, A::Resubmit, W::Applicant, S::UnderReview),
            (S::Submitted, A::Approve, W::Rule, S::Approved),
            (S::UnderReview, A::Approve, W::Rule, S::Approved),
            (S::UnderReview, A::Reject, W::Rule, S::Rejected),
            (S::Approved, A::Activate, W::Applicant, S::Active),
        ];
        for from in [S::Draft, S::Submitted, S::UnderReview, S::ChangesRequested] {
            edges.push((from, A::Withdraw, W::Applicant, S::Withdrawn));
        }
        edges
    }

    #[test]
    fn exactly_the_designed_transitions_exist_for_every_state_action_and_actor() {
        let edges = designed();
        for state in State::ALL {
            for action in Action::ALL {
                for actor in ACTORS {
                    let want = edges.iter().find(|e| e.0 == state && e.1 == action && e.2 == actor).map(|e| e.3);
                    match (next(state, action, actor), want) {
                        (Ok(got), Some(want)) => assert_eq!(got, want, "{state:?} {action:?} {actor:?}"),
                        (Err(_), None) => {}
                        (got, want) => panic!("{state:?} {action:?} {actor:?}: got {got:?}, designed {want:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn random_sequences_never_leave_a_final_state_and_only_reach_active_through_approval() {
        // A small xorshift generator: reproducible sequences without a dependency.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % n as u64).unwrap()
        };
        for _ in 0..20_000 {
            let mut state = State::Draft;
            let mut path = vec![state];
            for _ in 0..12 {
                let (action, actor) = (Action::ALL[random(8)], ACTORS[random(3)]);
                match next(state, action, actor) {
                    Ok(to) => {
                        assert!(!matches!(state, State::Rejected | State::Withdrawn | State::Active));
                        state = to;
                        path.push(to);
                    }
                    Err(why) => assert!(why.contains(&state.as_str().replace('_', " ")), "{why}"),
                }
            }
            if let Some(i) = path.iter().position(|s| *s == State::Active) {
                assert_eq!(path[i - 1], State::Approved, "{path:?}");
            }
            if path.contains(&State::Approved) {
                assert!(path.contains(&State::Submitted), "approval without submission: {path:?}");
            }
        }
    }

    #[test]
    fn a_refusal_says_what_is_possible_instead() {
        let why = next(State::Rejected, Action::Resubmit, Actor::Applicant).unwrap_err();
        assert_eq!(
            why,
            "the applicant cannot resubmit an application that is rejected; from rejected the possible actions are: \
             nothing; it is final"
        );
        let why = next(State::Draft, Action::Approve, Actor::Steward).unwrap_err();
        assert!(why.ends_with("the possible actions are: submit, withdraw"), "{why}");
    }
}
