#!/usr/bin/env bash
# Planted bugs (issue 19, item 8): each patch in scripts/planted/ is one plausible bug in
# shipped code. This applies each to a scratch copy of the committed tree, runs the gates
# cheapest first, and reports the first gate that fails (the one that caught the bug).
# scripts/planted/README.md says what each patch breaks.
#
#   scripts/planted.sh                      # every patch
#   scripts/planted.sh 03 07-idem-http-...  # the patches named (a number or a file name)
#   scripts/planted.sh --all-gates [...]    # run every gate on each patch and report each
#   scripts/planted.sh --gates idem-sim 01  # only these gates (comma-separated), in this order
#
# Exits 0 only if every patch was caught. A patch that no longer applies or does not build
# is an error (exit 2): refresh it with `git diff` in the scratch tree.
#
# Scratch space (IDEM_PLANTED_DIR, default /tmp/idem-planted): tree/ (a detached git
# worktree of HEAD, reset before each patch; /work/main is never touched), target/ (one
# CARGO_TARGET_DIR, so only the patched crates rebuild between patches) and logs/.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
patches_dir="$repo/scripts/planted"
scratch="${IDEM_PLANTED_DIR:-/tmp/idem-planted}"
tree="$scratch/tree"
logs="$scratch/logs"
export CARGO_TARGET_DIR="$scratch/target"
export CARGO_TERM_COLOR=never

# ---------------------------------------------------------------------------------------
# The gates, cheapest first (each stops the run for a patch when it fails, unless
# --all-gates). Each runs in the scratch tree with the patched crate as $1. The model and
# the simulation run before the whole workspace's tests: they take about a minute, the
# workspace's tests about 15 (and the patched crate's own tests already ran in gate 1, so
# gate 4 leaves that crate out).
GATES=(crate-tests idem-check idem-sim workspace-tests)
SIM_SEEDS="0..1000"
idem="$CARGO_TARGET_DIR/debug/idem" # built with the test profile (opt-level 2, debug assertions)

gate_crate_tests() { nice -n 10 timeout 2400 cargo test -p "$1"; }
gate_idem_check() { build_idem || return; nice -n 10 timeout 1200 "$idem" check; }
gate_idem_sim() {
  build_idem || return
  local scenarios scenario
  scenarios="$(sim_scenarios)" || return
  for scenario in $scenarios; do
    echo "== idem sim --seeds $SIM_SEEDS --scenario $scenario"
    nice -n 10 timeout 1800 "$idem" sim --seeds "$SIM_SEEDS" --scenario "$scenario" || return
  done
}
gate_workspace_tests() { nice -n 10 timeout 3600 cargo test --workspace --exclude "$1"; }

build_idem() { nice -n 10 timeout 2400 cargo build --profile test -p idem-cli --bin idem; }
# Every scenario the simulation knows, as it says when given an unknown one (Scenario::NAMES),
# so scenarios added later are swept too.
sim_scenarios() {
  local refusal
  refusal="$(timeout 60 "$idem" sim --scenario '?' 2>&1 || true)"
  local names="${refusal##*expected one of: }"
  if [ "$names" = "$refusal" ] || [ -z "$names" ]; then
    echo "cannot read the scenario names from: $refusal" >&2
    return 1
  fi
  echo "$names" | head -n 1 | tr -d ',' | tr -s ' ' '\n'
}
# ---------------------------------------------------------------------------------------

all_gates=false
wanted=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --all-gates) all_gates=true ;;
    --gates)
      [ "$#" -ge 2 ] || { echo "--gates needs a list, e.g. --gates idem-check,idem-sim" >&2; exit 2; }
      IFS=',' read -r -a chosen <<<"$2"
      for gate in "${chosen[@]}"; do
        if ! declare -F "gate_${gate//-/_}" >/dev/null; then
          echo "unknown gate $gate; the gates are: ${GATES[*]}" >&2
          exit 2
        fi
      done
      GATES=("${chosen[@]}")
      shift
      ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) wanted+=("$1") ;;
  esac
  shift
done

patches=()
if [ "${#wanted[@]}" -eq 0 ]; then
  patches=("$patches_dir"/*.patch)
else
  for name in "${wanted[@]}"; do
    match=("$patches_dir/${name%.patch}"*.patch)
    if [ ! -f "${match[0]}" ]; then echo "no patch named $name in $patches_dir" >&2; exit 2; fi
    patches+=("${match[0]}")
  done
fi

head="$(git -C "$repo" rev-parse HEAD)"
mkdir -p "$scratch" "$logs"
if [ ! -e "$tree/.git" ]; then
  git -C "$repo" worktree add --detach "$tree" "$head" >/dev/null
fi

# Brings the scratch tree back to the committed HEAD, then applies $1.
fresh_tree_with() {
  git -C "$tree" reset -q --hard
  git -C "$tree" clean -fdq
  git -C "$tree" checkout -q --detach "$head"
  if ! git -C "$tree" apply --check "$1" 2>"$logs/apply.err"; then
    echo "ERROR: $(basename "$1") no longer applies to $head:" >&2
    cat "$logs/apply.err" >&2
    exit 2
  fi
  git -C "$tree" apply "$1"
}

# The crate a patch touches: the first crates/<name>/ in its diff.
patched_crate() {
  local crate
  crate="$(sed -n 's|^+++ b/crates/\([^/]*\)/.*|\1|p' "$1" | head -n 1)"
  if [ -z "$crate" ]; then echo "ERROR: $(basename "$1") touches no crate" >&2; exit 2; fi
  echo "$crate"
}

# One line saying why a gate failed: the simulation's first failing seed and violation, a
# violated property of the model, a failing test, else the first error.
evidence() {
  local log="$1" line=""
  if grep -q 'violated for' "$log"; then
    line="$( (grep -m 1 -E '^seed [0-9]+ .*FAILED' "$log" || true) | cut -d ')' -f 1)): "
    line+="$(grep -m 1 'violated for' "$log" || true)"
  else
    line="$(grep -m 1 -E '^test .* FAILED$|VIOLATED|the faults did not reach' "$log" || true)"
  fi
  [ -n "$line" ] || line="$(grep -m 1 -E 'panicked at|^error' "$log" || true)"
  [ -n "$line" ] || line="$(tail -n 1 "$log")"
  echo "$line" | tr -s ' ' | cut -c 1-200
}

declare -A verdict gate_of proof
failures=0
for patch in "${patches[@]}"; do
  name="$(basename "$patch" .patch)"
  crate="$(patched_crate "$patch")"
  mkdir -p "$logs/$name"
  echo "== $name (crate $crate)"
  fresh_tree_with "$patch"
  if ! (cd "$tree" && nice -n 10 timeout 2400 cargo test -p "$crate" --no-run) >"$logs/$name/build.log" 2>&1; then
    echo "ERROR: $name does not build; see $logs/$name/build.log" >&2
    evidence "$logs/$name/build.log" >&2
    exit 2
  fi
  verdict[$name]="NOT CAUGHT"
  gate_of[$name]="-"
  proof[$name]="-"
  for gate in "${GATES[@]}"; do
    log="$logs/$name/$gate.log"
    started=$SECONDS
    status=0
    (cd "$tree" && "gate_${gate//-/_}" "$crate") >"$log" 2>&1 || status=$?
    took=$((SECONDS - started))
    if [ "$status" -eq 0 ]; then
      echo "   $gate: passed (${took}s)"
      continue
    fi
    if [ "$status" -eq 124 ]; then
      line="timed out after ${took}s"
      echo "   $gate: TIMEOUT ($line; $log)"
      [ "${verdict[$name]}" = "NOT CAUGHT" ] && { verdict[$name]="TIMEOUT"; gate_of[$name]="$gate"; proof[$name]="$line"; }
    else
      line="$(evidence "$log")"
      echo "   $gate: FAILED (${took}s): $line"
      if [ "${verdict[$name]}" != "caught" ]; then verdict[$name]="caught"; gate_of[$name]="$gate"; proof[$name]="$line"; fi
    fi
    $all_gates || break
  done
  if [ "${verdict[$name]}" = "caught" ]; then
    echo "   caught by ${gate_of[$name]} (${proof[$name]})"
  else
    echo "   ${verdict[$name]}"
    failures=$((failures + 1))
  fi
done

# Leave the scratch tree as committed, so it builds as HEAD next time.
git -C "$tree" reset -q --hard && git -C "$tree" clean -fdq

echo
printf '%-58s %-11s %-16s %s\n' "patch" "verdict" "gate" "evidence"
for patch in "${patches[@]}"; do
  name="$(basename "$patch" .patch)"
  printf '%-58s %-11s %-16s %s\n' "$name" "${verdict[$name]}" "${gate_of[$name]}" "${proof[$name]}"
done
echo
echo "$((${#patches[@]} - failures)) of ${#patches[@]} patches caught; logs in $logs"
[ "$failures" -eq 0 ]
