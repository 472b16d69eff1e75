#!/usr/bin/env bash
# Mutation testing of the shipped crates (issues 8 and 19): every mutant cargo-mutants makes
# of a crate's code must be caught by the tests named for it below, or be explained in
# docs/verification.md. Too slow for .ci/run (hours on 2 cores); this is how to run it,
# one crate at a time, whole or in shards.
#
#   scripts/mutants.sh idem-core                 # the whole crate in one go
#   scripts/mutants.sh idem-http --shard 0/10    # shard 0 of 10 (k counts from 0, as cargo-mutants does)
#   scripts/mutants.sh idem-server --list        # list the mutants only (with --shard: that shard's)
#
# Each run mutates the committed tree at HEAD (exported with `git archive`, so uncommitted
# edits in the working tree are neither mutated nor tested), in two passes:
#   pass 1: every mutant against the crate's own tests;
#   pass 2: the mutants pass 1 missed, against the second net too (where the crate has one).
# Results land in verification/mutants/<crate>/shard-<k>-of-<n>/ (committed): caught.txt,
# missed.txt, timeout.txt and unviable.txt for the two passes together, caught-by-pass-2.txt,
# and summary.txt (one line: counts, date, commit). The full logs stay in
# target/mutants-runs/ (not committed).
#
# Every cargo-mutants run is under `nice -n 19`: the machine is shared.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

usage() {
  echo "usage: scripts/mutants.sh <idem-core|idem-http|idem-client|idem-server|idem-sqlite> [--shard k/n] [--list]" >&2
  exit 2
}

crate=${1:-}
[ -n "$crate" ] || usage
shift
shard="" list=""
while [ $# -gt 0 ]; do
  case "$1" in
    --shard) shard=${2:?--shard needs k/n}; shift 2 ;;
    --list) list=1; shift ;;
    *) usage ;;
  esac
done

# Per crate: the files to mutate, the tests of pass 1, the extra tests of pass 2 (empty:
# no second pass), the test timeout of each pass in seconds (pass 2 runs slower suites),
# and the number of shards its runs are cut into.
case "$crate" in
  idem-core)
    # The core's decision code, its value types and the SQL stores' record codec (sql_row.rs,
    # caught by its own tests in sql_row/tests.rs). Left out: conformance.rs, conformance/
    # and differential.rs (feature `testing`: test suites and fixtures whose assertions are
    # the stores' tests), conformance_tests.rs (tests), clock.rs (the callers' clocks, never
    # read by the core) and lib.rs (re-exports).
    files=(step.rs transition.rs reply.rs usage.rs memory.rs record.rs key.rs fingerprint.rs time.rs store.rs atomic.rs
      sql_row.rs)
    pass1=(idem-core) pass2=(idem-model) timeout1=120 timeout2=900 shards=1 ;;
  idem-http)
    # All of the layer: the replay path, claims, bodies, headers, problems, purge, config.
    # Left out: problem_docs.rs (the text of the problem pages) and catalogue.rs (data).
    files=(lib.rs answer.rs atomic.rs body.rs builder.rs claim.rs config.rs error.rs execute.rs future.rs headers.rs
      keyed.rs layer.rs observe.rs outcome.rs principal.rs problem.rs purge.rs route.rs semantic.rs service.rs
      settle.rs wait.rs)
    pass1=(idem-http) pass2=() timeout1=180 timeout2=0 shards=10 ;;
  idem-client)
    files=(lib.rs backoff.rs body.rs config.rs error.rs future.rs keys.rs layer.rs report.rs service.rs)
    pass1=(idem-client) pass2=() timeout1=300 timeout2=0 shards=4 ;;
  idem-server)
    # The handlers, extractors and bodies, the ledgers' writes that a payment is, and the
    # composition root the simulations build. Left out: serve.rs and http_server.rs (the
    # TCP listener, signals and the connection driver: I/O, covered by the CLI's tests),
    # postgres_ledger.rs and separate_ledger.rs (need PostgreSQL or Redis; covered by the
    # stores' own runs), metrics.rs (Prometheus text), lib.rs (re-exports).
    # (handlers.rs, answers.rs, health.rs, page.rs, state.rs and the SQLite and memory
    # ledgers came out of app.rs and ledger.rs in the 8 Dec split and are mutated as before.)
    files=(app.rs answers.rs bodies.rs handlers.rs health.rs page.rs state.rs principal.rs domain.rs ledger.rs
      memory_ledger.rs sqlite_ledger.rs rows.rs compose.rs fairness.rs ids.rs time.rs)
    pass1=(idem-server) pass2=(idem-sim) timeout1=600 timeout2=1800 shards=16 ;;
  idem-sqlite)
    # The store's I/O is also covered by the stores' fault tests (issue 19, item 8).
    files=(admin.rs batch.rs batch_decision.rs codec.rs error.rs open.rs options.rs purge.rs replay_cache.rs rows.rs
      store.rs writer.rs)
    pass1=(idem-sqlite) pass2=() timeout1=600 timeout2=0 shards=8 ;;
  *) usage ;;
esac

version=25.3.1
if ! cargo mutants --version 2>/dev/null | grep -qx "cargo-mutants $version"; then
  nice -n 19 cargo install cargo-mutants --locked --version "$version"
fi

file_args=()
for file in "${files[@]}"; do file_args+=(--file "crates/$crate/src/$file"); done
shard_args=() k=0 n=1
if [ -n "$shard" ]; then
  shard_args=(--shard "$shard")
  k=${shard%/*} n=${shard#*/}
fi
# Each crate has one shard count (docs/verification.md), so that its shards add up to it.
if [ "$n" != "$shards" ] && [ -z "$list" ]; then
  echo "$crate runs in $shards shard(s): --shard k/$shards (k from 0), not $k/$n" >&2
  exit 2
fi

# Mutate the committed tree, not the working tree (other work may be half done there).
commit=$(git rev-parse --short=10 HEAD)
src="$root/target/mutants-src/$commit"
if [ ! -f "$src/Cargo.toml" ]; then
  mkdir -p "$src"
  git archive HEAD | tar -x -C "$src"
fi
# One target directory for every run, apart from the one other cargo commands share: the
# dependencies are built once (profile `mutants`), and no run waits on another's lock.
export CARGO_TARGET_DIR="$root/target/mutants-build"

common=(--dir "$src" --package "$crate" "${file_args[@]}" --profile mutants --build-timeout 3600 --jobs 1 --no-shuffle)

if [ -n "$list" ]; then
  exec cargo mutants "${common[@]}" "${shard_args[@]}" --list
fi

run="$root/target/mutants-runs/$crate/shard-$k-of-$n"
results="$root/verification/mutants/$crate/shard-$k-of-$n"
rm -rf "$run"
mkdir -p "$run"
test_args() { for package in "$@"; do printf -- '--test-package\n%s\n' "$package"; done; }

mapfile -t tests1 < <(test_args "${pass1[@]}")
# cargo-mutants exits 0 (all caught), 2 (some missed) or 3 (some timed out) after a whole
# run; anything else (a failed baseline, an interrupt) is a run that did not finish.
finished() { case "$1" in 0 | 2 | 3) return 0 ;; *) return 1 ;; esac; }

rc=0
nice -n 19 cargo mutants "${common[@]}" "${shard_args[@]}" "${tests1[@]}" --timeout "$timeout1" --output "$run/pass1" || rc=$?
out1="$run/pass1/mutants.out"
finished "$rc" || { echo "pass 1 did not finish (exit $rc): see $out1/debug.log" >&2; exit 1; }
# Only a finished pass 1 writes the committed results (a stopped run leaves none).
rm -rf "$results"
mkdir -p "$results"

cp "$out1/caught.txt" "$out1/timeout.txt" "$out1/unviable.txt" "$results/"
cp "$out1/missed.txt" "$results/missed.txt"
: > "$results/caught-by-pass-2.txt"

# Pass 2: what pass 1 missed, against the crate's tests and the second net. No --shard here:
# cargo-mutants shards the list after --re, which would drop some of the missed.
if [ ${#pass2[@]} -gt 0 ] && [ -s "$out1/missed.txt" ]; then
  regex=$(sed -e 's/[][\.*^$(){}?+|]/\\&/g' -e 's/^/^/' -e 's/$/$/' "$out1/missed.txt" | paste -sd'|')
  mapfile -t tests2 < <(test_args "${pass1[@]}" "${pass2[@]}")
  # cargo-mutants' baseline runs only the mutated crate's tests; a second net that failed
  # unmutated would count every mutant as caught, so it runs unmutated here first.
  mapfile -t net < <(for package in "${pass2[@]}"; do printf -- '--package\n%s\n' "$package"; done)
  # Its own target directory: the export's files carry the commit's mtime, older than the
  # last mutant's build in mutants-build, which cargo would take as up to date.
  if ! CARGO_TARGET_DIR="$root/target/mutants-baseline" nice -n 19 timeout "$timeout2" \
    cargo test --manifest-path "$src/Cargo.toml" --profile mutants "${net[@]}" > "$run/pass2-baseline.log" 2>&1; then
    echo "pass 2's tests fail unmutated: see $run/pass2-baseline.log" >&2
    exit 1
  fi
  rc=0
  nice -n 19 cargo mutants "${common[@]}" "${tests2[@]}" --timeout "$timeout2" --re "$regex" \
    --output "$run/pass2" || rc=$?
  out2="$run/pass2/mutants.out"
  finished "$rc" || { echo "pass 2 did not finish (exit $rc): see $out2/debug.log" >&2; exit 1; }
  cp "$out2/caught.txt" "$results/caught-by-pass-2.txt"
  cat "$out2/caught.txt" >> "$results/caught.txt"
  cat "$out2/timeout.txt" >> "$results/timeout.txt"
  cp "$out2/missed.txt" "$results/missed.txt"
fi

count() { wc -l < "$results/$1" | tr -d ' '; }
caught=$(count caught.txt) missed=$(count missed.txt) timeout=$(count timeout.txt) unviable=$(count unviable.txt)
total=$((caught + missed + timeout + unviable))
rate=$(awk -v c="$caught" -v m="$missed" -v t="$timeout" 'BEGIN { d = c + m + t; printf "%.1f%%", d ? 100 * c / d : 100 }')
printf '%s shard %s/%s: %s mutants, caught %s (pass 2: %s), missed %s, timeout %s, unviable %s, kill rate %s; %s at %s\n' \
  "$crate" "$k" "$n" "$total" "$caught" "$(count caught-by-pass-2.txt)" "$missed" "$timeout" "$unviable" "$rate" \
  "$(date -u +%Y-%m-%d)" "$commit" | tee "$results/summary.txt"
