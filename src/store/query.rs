//! What the API and the jobs ask of the store besides one record: pages of
//! a filtered queue, counts, the oldest open request, the requests that
//! need an operator, the open ones by deadline. Each backend answers them
//! from indexes and counters it keeps in the same transaction as the
//! change, so no answer reads every record (a million of them would take
//! seconds).
//!
//! The selector is plain data, evaluated the same way by both backends
//! ([`Selector::matches`]); a backend narrows the walk by the index that
//! fits (state, case, attention) and seeks by filing time, and only the
//! fields no index serves are checked record by record.

use super::{RequestRecord, State};

/// Which requests: every field set narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub state: Option<State>,
    pub registry: Option<String>,
    pub service: Option<String>,
    pub case: Option<String>,
    pub client: Option<String>,
    /// Text the last error contains, compared in lower case.
    pub error: Option<String>,
    /// Only requests filed before this time (ms since the epoch).
    pub created_before: Option<u64>,
    /// Only requests that need an operator ([`RequestRecord::needs_attention`]).
    pub attention: bool,
}

impl Selector {
    pub fn state(state: State) -> Selector {
        Selector {
            state: Some(state),
            ..Selector::default()
        }
    }

    pub fn matches(&self, r: &RequestRecord) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        self.state.is_none_or(|s| s == r.state)
            && eq(&self.registry, &r.registry)
            && eq(&self.service, &r.service)
            && eq(&self.case, &r.case)
            && eq(&self.client, &r.client)
            && self.created_before.is_none_or(|b| r.created_ms < b)
            && (!self.attention || r.needs_attention())
            && self.error.as_deref().is_none_or(|w| {
                r.error
                    .as_deref()
                    .is_some_and(|e| e.to_lowercase().contains(&w.to_lowercase()))
            })
    }

    /// Is the count of this selector one of the kept counters (state and
    /// registry only)?
    pub fn counted(&self) -> bool {
        self.service.is_none()
            && self.case.is_none()
            && self.client.is_none()
            && self.error.is_none()
            && self.created_before.is_none()
            && !self.attention
    }
}

/// Filing order, newest or oldest first. Ids are ULIDs, so id order is
/// filing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Newest,
    Oldest,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub selector: Selector,
    pub order: Order,
    /// The last id of the previous page.
    pub after: Option<String>,
    pub limit: usize,
}

/// The kept counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests by registry and state (zero counts may be absent).
    pub by_registry: std::collections::BTreeMap<(String, State), u64>,
    /// Open requests flagged near their deadline.
    pub at_risk: u64,
    /// Filing time of the oldest request not yet fetched.
    pub oldest_open_ms: Option<u64>,
}

impl Tally {
    pub fn state(&self, s: State) -> u64 {
        self.of(&Selector::state(s))
    }

    pub fn of(&self, sel: &Selector) -> u64 {
        self.by_registry
            .iter()
            .filter(|((reg, s), _)| {
                sel.state.is_none_or(|x| x == *s)
                    && sel.registry.as_deref().is_none_or(|x| x == reg)
            })
            .map(|(_, n)| n)
            .sum()
    }
}

/// The smallest ULID text of millisecond `ms`: every id filed before `ms`
/// sorts below it. Lets a walk in filing order seek to a time.
pub fn id_floor(ms: u64) -> String {
    let t = ms.min((1u64 << 48) - 1);
    ulid::Ulid::from_parts(t, 0).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_floor_orders_with_ids_of_that_time() {
        let t = 1_795_643_792_420u64;
        let before = ulid::Ulid::from_parts(t - 1, u128::MAX >> 48).to_string();
        let at = ulid::Ulid::from_parts(t, 0).to_string();
        let later = ulid::Ulid::from_parts(t, 1).to_string();
        assert!(before < id_floor(t));
        assert_eq!(at, id_floor(t));
        assert!(later > id_floor(t));
    }

    #[test]
    fn counted_only_for_state_and_registry() {
        let mut s = Selector::state(State::Dead);
        s.registry = Some("cadastre".into());
        assert!(s.counted());
        s.case = Some("x".into());
        assert!(!s.counted());
        let a = Selector {
            attention: true,
            ..Selector::default()
        };
        assert!(!a.counted());
    }
}
