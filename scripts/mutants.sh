#!/usr/bin/env bash
# Mutation testing of idem-core (issue 8): every mutant cargo-mutants makes of the core's
# decision code must be caught by idem-core's tests or the model's tests, or be explained
# in docs/verification.md. Too slow for .ci/run (hours on 2 cores); this is how to rerun it.
#
#   scripts/mutants.sh            # idem-core's tests, then the model's on what they missed
#   scripts/mutants.sh --list     # list the mutants only
#
# Output: mutants.out/ (idem-core's tests) and mutants-model.out/ (the model's tests, run
# on the mutants idem-core's own tests missed), each with caught.txt, missed.txt,
# timeout.txt and unviable.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

version=25.3.1
if ! cargo mutants --version 2>/dev/null | grep -qx "cargo-mutants $version"; then
  cargo install cargo-mutants --locked --version "$version"
fi

# The core's decision code. Left out: conformance.rs (the test suite itself; its cases are
# the tests of the stores), clock.rs (the caller's clocks, never read by the core) and the
# test-only module conformance_tests.rs.
files=(step.rs transition.rs reply.rs usage.rs memory.rs record.rs key.rs fingerprint.rs time.rs store.rs)
file_args=()
for file in "${files[@]}"; do file_args+=(--file "crates/idem-core/src/$file"); done

common=(--package idem-core "${file_args[@]}" --profile mutants --timeout 300 --build-timeout 900 --jobs 1)

if [ "${1:-}" = "--list" ]; then
  exec cargo mutants "${common[@]}" --list
fi

# Pass 1: idem-core's own tests (unit, decision table, interleavings, step, reply).
cargo mutants "${common[@]}" --test-package idem-core --output mutants.out || true

# Pass 2: the mutants pass 1 missed, against the model's tests too (they drive the same
# MemoryState and step through the checker).
missed=mutants.out/mutants.out/missed.txt
if [ -s "$missed" ]; then
  regex=$(sed -e 's/[][\.*^$(){}?+|/]/\\&/g' "$missed" | paste -sd'|')
  cargo mutants "${common[@]}" --test-package idem-core --test-package idem-model --re "$regex" \
    --output mutants-model.out || true
fi

for out in mutants.out mutants-model.out; do
  dir="$out/mutants.out"
  [ -d "$dir" ] || continue
  printf '%s: caught %s, missed %s, timeout %s, unviable %s\n' "$out" \
    "$(wc -l < "$dir/caught.txt")" "$(wc -l < "$dir/missed.txt")" \
    "$(wc -l < "$dir/timeout.txt")" "$(wc -l < "$dir/unviable.txt")"
done
