//! A listing's parameters as text (a query string, or `idem keys list`'s flags) and the
//! [`ListQuery`] they make: every filter parsed once, here, for both.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idem_core::{ListQuery, Principal, StateFilter, Timestamp};
use serde::Deserialize;

use crate::cursor::{self, CursorError};

/// A page's size when the request names none (Stripe's default).
pub const LIMIT_DEFAULT: usize = 10;

/// A listing's parameters, as `GET /keys?…` takes them. Each is optional; unknown ones are
/// refused (a misspelt filter must not silently list everything).
///
/// | parameter | meaning |
/// |---|---|
/// | `caller` | only this principal's records; empty (`caller=`) for the anonymous caller |
/// | `state` | `in_flight`, `completed` or `tombstone` |
/// | `created_before`, `created_after` | RFC 3339 (`2026-12-07T21:00:00Z`) or Unix milliseconds; before is exclusive, after inclusive |
/// | `older_than`, `newer_than` | an age (`90s`, `2h`, `1day`): created before / at or after `now` minus it |
/// | `limit` | 1 to 100 records, default [`LIMIT_DEFAULT`] |
/// | `starting_after` | the `next_cursor` of the page before |
///
/// An age and an absolute time for the same bound (`older_than` with `created_before`)
/// are refused together.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// `caller`.
    pub caller: Option<String>,
    /// `state`.
    pub state: Option<String>,
    /// `created_before`.
    pub created_before: Option<String>,
    /// `created_after`.
    pub created_after: Option<String>,
    /// `older_than`.
    pub older_than: Option<String>,
    /// `newer_than`.
    pub newer_than: Option<String>,
    /// `limit`.
    pub limit: Option<String>,
    /// `starting_after`.
    pub starting_after: Option<String>,
}

/// Why a listing's parameters are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// `starting_after` is not a record id.
    #[error("starting_after is not a cursor this API gave: {0}")]
    Cursor(#[from] CursorError),
    /// `limit` is not a whole number from 1 to 100.
    #[error("limit must be a whole number from 1 to {max}, not {given:?}", max = idem_core::LIST_LIMIT_MAX)]
    Limit {
        /// What was given.
        given: String,
    },
    /// `caller` is not a principal.
    #[error("caller is not a principal: {0}")]
    Caller(String),
    /// `state` names no state.
    #[error("state must be in_flight, completed or tombstone, not {0:?}")]
    State(String),
    /// A time or an age that does not parse.
    #[error("{param} {given:?} is not {expected}")]
    Time {
        /// The parameter.
        param: &'static str,
        /// What was given.
        given: String,
        /// What it should be.
        expected: &'static str,
    },
    /// Two parameters for the same bound.
    #[error("give {0} or {1}, not both")]
    Both(&'static str, &'static str),
}

impl ListParams {
    /// The query these parameters make at `now` (ages count back from it).
    ///
    /// # Errors
    /// A [`ParamError`] naming the parameter that is wrong.
    pub fn to_query(&self, now: Timestamp) -> Result<ListQuery, ParamError> {
        let mut query = ListQuery::new(self.limit()?).map_err(|_| self.limit_error())?;
        query.principal = self.caller.as_deref().map(principal).transpose()?;
        query.state = self
            .state
            .as_deref()
            .map(|name| StateFilter::parse(name).ok_or_else(|| ParamError::State(name.to_owned())))
            .transpose()?;
        query.created_before = bound(now, ("created_before", &self.created_before), ("older_than", &self.older_than))?;
        query.created_after = bound(now, ("created_after", &self.created_after), ("newer_than", &self.newer_than))?;
        query.starting_after = self.starting_after.as_deref().map(cursor::decode).transpose()?;
        Ok(query)
    }

    fn limit(&self) -> Result<usize, ParamError> {
        match &self.limit {
            None => Ok(LIMIT_DEFAULT),
            Some(text) => text.parse().map_err(|_| self.limit_error()),
        }
    }

    fn limit_error(&self) -> ParamError {
        ParamError::Limit { given: self.limit.clone().unwrap_or_default() }
    }
}

/// A caller's name, the empty name being the anonymous caller.
fn principal(name: &str) -> Result<Principal, ParamError> {
    if name.is_empty() {
        return Ok(Principal::anonymous());
    }
    Principal::new(name).map_err(|error| ParamError::Caller(error.to_string()))
}

/// One bound on `created_at`, from an absolute time or an age before `now`.
fn bound(
    now: Timestamp,
    (at_name, at): (&'static str, &Option<String>),
    (age_name, age): (&'static str, &Option<String>),
) -> Result<Option<Timestamp>, ParamError> {
    match (at, age) {
        (Some(_), Some(_)) => Err(ParamError::Both(at_name, age_name)),
        (Some(at), None) => parse_time(at_name, at).map(Some),
        (None, Some(age)) => {
            let age = parse_age(age_name, age)?;
            let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
            Ok(Some(Timestamp::from_unix_ms(now.unix_ms().saturating_sub(age_ms))))
        }
        (None, None) => Ok(None),
    }
}

/// RFC 3339 (humantime's parser: `Z` or no offset, optional fraction) or Unix milliseconds.
pub fn parse_time(param: &'static str, text: &str) -> Result<Timestamp, ParamError> {
    let refused = || ParamError::Time {
        param,
        given: text.to_owned(),
        expected: "an RFC 3339 time (e.g. 2026-12-07T21:00:00Z) or Unix milliseconds",
    };
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        return text.parse().map(Timestamp::from_unix_ms).map_err(|_| refused());
    }
    let time = humantime::parse_rfc3339_weak(text).map_err(|_| refused())?;
    let since_epoch = time.duration_since(UNIX_EPOCH).map_err(|_| refused())?;
    Ok(Timestamp::from_unix_ms(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)))
}

/// An age as humantime reads it (`90s`, `2h 30m`, `7days`).
fn parse_age(param: &'static str, text: &str) -> Result<Duration, ParamError> {
    humantime::parse_duration(text).map_err(|_| ParamError::Time {
        param,
        given: text.to_owned(),
        expected: "an age such as 90s, 15m, 2h or 7days",
    })
}

/// `now` from the system clock, for callers without a [`idem_core::Clock`] at hand.
#[must_use]
pub fn system_now() -> Timestamp {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp::from_unix_ms(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> ListParams {
        let mut params = ListParams::default();
        for (name, value) in pairs {
            let value = Some((*value).to_owned());
            match *name {
                "caller" => params.caller = value,
                "state" => params.state = value,
                "created_before" => params.created_before = value,
                "created_after" => params.created_after = value,
                "older_than" => params.older_than = value,
                "newer_than" => params.newer_than = value,
                "limit" => params.limit = value,
                "starting_after" => params.starting_after = value,
                other => unreachable!("no parameter {other}"),
            }
        }
        params
    }

    const NOW: Timestamp = Timestamp::from_unix_ms(1_000_000);

    #[test]
    fn no_parameters_make_the_first_page_of_everything() {
        // Goal: the defaults are Stripe's: 10 records, no filter.
        let query = ListParams::default().to_query(NOW).expect("defaults are valid");
        assert_eq!(query, ListQuery::new(LIMIT_DEFAULT).expect("valid"));
    }

    #[test]
    fn each_filter_lands_in_its_field() {
        // Goal: every parameter sets the query field it names, ages counted back from now.
        let query = params(&[
            ("caller", "alice"),
            ("state", "in_flight"),
            ("older_than", "60s"),
            ("newer_than", "2m"),
            ("limit", "100"),
        ])
        .to_query(NOW)
        .expect("valid");
        assert_eq!(query.principal, Some(Principal::new("alice").expect("valid")));
        assert_eq!(query.state, Some(StateFilter::InFlight));
        assert_eq!(query.created_before, Some(Timestamp::from_unix_ms(940_000)));
        assert_eq!(query.created_after, Some(Timestamp::from_unix_ms(880_000)));
        assert_eq!(query.limit(), 100);
        let query = params(&[("caller", ""), ("created_before", "1970-01-01T00:00:02Z"), ("created_after", "1500")])
            .to_query(NOW)
            .expect("valid");
        assert_eq!(query.principal, Some(Principal::anonymous()));
        assert_eq!(query.created_before, Some(Timestamp::from_unix_ms(2_000)));
        assert_eq!(query.created_after, Some(Timestamp::from_unix_ms(1_500)));
        assert_eq!(
            params(&[("older_than", "1000days")]).to_query(NOW).expect("valid").created_before,
            Some(Timestamp::EPOCH)
        );
    }

    #[test]
    fn bad_parameters_name_what_is_wrong() {
        // Goal: each bad value is its own error, never a panic or a silent default.
        let error = |pairs: &[(&str, &str)]| params(pairs).to_query(NOW).expect_err("refused");
        assert!(matches!(error(&[("limit", "0")]), ParamError::Limit { .. }));
        assert!(matches!(error(&[("limit", "101")]), ParamError::Limit { .. }));
        assert!(matches!(error(&[("limit", "-1")]), ParamError::Limit { .. }));
        assert!(matches!(error(&[("limit", "ten")]), ParamError::Limit { .. }));
        assert!(matches!(error(&[("state", "done")]), ParamError::State(_)));
        assert!(matches!(error(&[("caller", "a\u{7}b")]), ParamError::Caller(_)));
        assert!(matches!(error(&[("older_than", "soon")]), ParamError::Time { param: "older_than", .. }));
        assert!(matches!(error(&[("created_after", "yesterday")]), ParamError::Time { param: "created_after", .. }));
        assert_eq!(
            error(&[("older_than", "1s"), ("created_before", "5")]),
            ParamError::Both("created_before", "older_than")
        );
        assert!(matches!(error(&[("starting_after", "xyz")]), ParamError::Cursor(_)));
    }
}
