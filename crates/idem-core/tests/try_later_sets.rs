//! The "try again later" statuses a configuration names (SPEC "HTTP behaviour"): a set built
//! from any list of 4xx statuses, whatever the order and however often each is named.

use idem_core::{Disposition, StatusRules, TryLaterStatuses};

#[test]
fn a_status_named_twice_stays_in_the_try_later_set() {
    // Goal: a configuration that names a status twice (two merged lists, a typo) still
    // releases the claim on it. A set that toggled a status's bit instead of setting it
    // would drop every status named an even number of times, and record its 429s.
    let twice = TryLaterStatuses::of([429, 408, 429]).expect("4xx statuses make a set");
    assert!(twice.contains(429), "429 was named twice");
    assert!(twice.contains(408));
    assert!(!twice.contains(425), "425 was not named");
    assert_eq!(twice, TryLaterStatuses::of([408, 429]).expect("4xx statuses make a set"));

    let rules = StatusRules { try_later: twice, ..StatusRules::default() };
    assert_eq!(rules.disposition(429), Disposition::Release);
    assert_eq!(rules.disposition(425), Disposition::Record);
}
