//! The code under test: [`Variant`].

use std::fmt;
use std::str::FromStr;

use crate::UnknownName;

/// The code under test: the shipped code, or the shipped code with one planted bug, each
/// planted through a part the composition root injects (never compiled into idem-http,
/// idem-core or idem-server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Variant {
    /// The shipped code.
    #[default]
    Correct,
    /// Check-then-act: the store host answers "execute" without writing the claim.
    NoClaim,
    /// The store host runs completions, releases and renewals with the record's current
    /// fence instead of the one presented.
    NoFenceCheck,
    /// The replicas' principal extractor ignores the caller, so keys are shared by everyone.
    UnscopedKeys,
    /// An execution whose claim was taken over answers its own response (the HTTP layer's
    /// rule, planted around the real layer by a handler wrap).
    StaleAnswersOwn,
    /// A volatile store host that lost its state starts its fence counter at f1 again, so
    /// it can issue a fence an execution from before the loss still holds (run it with the
    /// `volatile-store` scenario; a durable host never loses its counter).
    FenceReset,
    /// The ledger writes the payment row alone, then again with the completion.
    DoubleWrite,
    /// The ledger commits the payment row alone, then the fenced completion alone: atomic
    /// mode's promise broken in the glue (a stale execution's row stays).
    RowOutsideTransaction,
    /// The layer's caller is the token folded to lower case, so `alice` and `Alice` share keys.
    TokenCaseFolded,
    /// A layer in front of the API refuses a payment posted with a query string (400).
    RejectsQuery,
    /// A layer in front of the API keeps only the first `Link` of a replayed response (run
    /// it with `--scenario separate`, whose responses carry two).
    ReplayDropsHeader,
    /// The ledger records a payment's response whole even past the recording limit, as
    /// `ClaimContext::stored_response` did before it kept the limit (run it with
    /// `--scenario oversized-responses`).
    KeepsOversized,
    /// idem-redis's `store.lua` without its fence check (`transition::check_fence` takes
    /// any fence as the current claim's), planted by string replacement as idem-redis's
    /// own planted-bug tests do (run it with `--scenario redis-lua-atomic` or `redis-lua`).
    LuaDropsFenceCheck,
    /// The consumer's handler acks its own delivery before it returns, so before the
    /// completion commits (run it with `--scenario consumer` or `consumer-channel-close`;
    /// in separate mode the effect row precedes the early ack, which no check then sees).
    AckBeforeCompletion,
    /// A hand-rolled inbox: the consumer's handler writes its effect row at once and
    /// returns a commit with no writes, so the row and the idempotency record are two
    /// commits (run it with `--scenario consumer`).
    DedupOutsideTransaction,
    /// The store host's purge deletes a completed record at the end of its retention
    /// instead of shrinking it to its tombstone (`op::Forget` where `op::Expire` belongs), so
    /// a late retry of the key runs again (run it with `--scenario tombstones`).
    PurgeDropsTombstones,
}

impl Variant {
    /// Every variant's name, in [`Variant::ALL`] order.
    pub const NAMES: [&'static str; 16] = [
        "correct",
        "no-claim",
        "no-fence-check",
        "unscoped-keys",
        "stale-answers-own",
        "fence-reset",
        "double-write",
        "row-outside-transaction",
        "token-case-folded",
        "rejects-query",
        "replay-drops-header",
        "keeps-oversized",
        "lua-drops-fence-check",
        "ack-before-completion",
        "dedup-outside-transaction",
        "purge-drops-tombstones",
    ];
    /// Every variant.
    pub const ALL: [Variant; 16] = [
        Variant::Correct,
        Variant::NoClaim,
        Variant::NoFenceCheck,
        Variant::UnscopedKeys,
        Variant::StaleAnswersOwn,
        Variant::FenceReset,
        Variant::DoubleWrite,
        Variant::RowOutsideTransaction,
        Variant::TokenCaseFolded,
        Variant::RejectsQuery,
        Variant::ReplayDropsHeader,
        Variant::KeepsOversized,
        Variant::LuaDropsFenceCheck,
        Variant::AckBeforeCompletion,
        Variant::DedupOutsideTransaction,
        Variant::PurgeDropsTombstones,
    ];
    /// The planted bugs.
    pub const BUGS: [Variant; 15] = [
        Variant::NoClaim,
        Variant::NoFenceCheck,
        Variant::UnscopedKeys,
        Variant::StaleAnswersOwn,
        Variant::FenceReset,
        Variant::DoubleWrite,
        Variant::RowOutsideTransaction,
        Variant::TokenCaseFolded,
        Variant::RejectsQuery,
        Variant::ReplayDropsHeader,
        Variant::KeepsOversized,
        Variant::LuaDropsFenceCheck,
        Variant::AckBeforeCompletion,
        Variant::DedupOutsideTransaction,
        Variant::PurgeDropsTombstones,
    ];

    /// The name used on the command line.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Variant::Correct => "correct",
            Variant::NoClaim => "no-claim",
            Variant::NoFenceCheck => "no-fence-check",
            Variant::UnscopedKeys => "unscoped-keys",
            Variant::StaleAnswersOwn => "stale-answers-own",
            Variant::FenceReset => "fence-reset",
            Variant::DoubleWrite => "double-write",
            Variant::RowOutsideTransaction => "row-outside-transaction",
            Variant::TokenCaseFolded => "token-case-folded",
            Variant::RejectsQuery => "rejects-query",
            Variant::ReplayDropsHeader => "replay-drops-header",
            Variant::KeepsOversized => "keeps-oversized",
            Variant::LuaDropsFenceCheck => "lua-drops-fence-check",
            Variant::AckBeforeCompletion => "ack-before-completion",
            Variant::DedupOutsideTransaction => "dedup-outside-transaction",
            Variant::PurgeDropsTombstones => "purge-drops-tombstones",
        }
    }

    /// One line saying what is planted.
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            Variant::Correct => "the shipped code",
            Variant::NoClaim => "check-then-act: the store answers execute without writing the claim",
            Variant::NoFenceCheck => {
                "the store completes, releases and renews with the current fence, not the one presented"
            }
            Variant::UnscopedKeys => "keys are not scoped by principal",
            Variant::StaleAnswersOwn => "an execution whose claim was taken over answers its own response",
            Variant::FenceReset => "a volatile store that lost its state issues fences from f1 again",
            Variant::DoubleWrite => "the ledger writes the payment row alone, then again with the completion",
            Variant::RowOutsideTransaction => "the ledger commits the row, then the completion, each alone",
            Variant::TokenCaseFolded => "the layer folds the bearer token to lower case: alice and Alice share keys",
            Variant::RejectsQuery => "a payment posted with a query string is refused with 400",
            Variant::ReplayDropsHeader => "a replay keeps only the first of its repeated Link headers",
            Variant::KeepsOversized => "the ledger records a response past the recording limit whole",
            Variant::LuaDropsFenceCheck => "idem-redis's store.lua without its fence check (redis-lua scenarios)",
            Variant::AckBeforeCompletion => {
                "a consumer's handler acks its delivery before the completion (atomic consumer scenarios)"
            }
            Variant::DedupOutsideTransaction => {
                "a consumer's handler writes its effect at once, outside the completion's transaction (consumer)"
            }
            Variant::PurgeDropsTombstones => {
                "the store's purge deletes a completed record at its retention's end instead of leaving a tombstone"
            }
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = UnknownName;

    fn from_str(given: &str) -> Result<Variant, UnknownName> {
        Variant::ALL.into_iter().find(|variant| variant.name() == given).ok_or_else(|| UnknownName {
            what: "variant",
            given: given.to_owned(),
            expected: Variant::NAMES.join(", "),
        })
    }
}
