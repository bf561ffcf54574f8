#!/usr/bin/env bash
# Fuzz every reader of outside files with libFuzzer (cargo-fuzz), each for SECONDS.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]     default: 600 s each, every target
#
# Settings: JOBS (targets run at once, default 2), SANITIZER (address | none, default address).
# Each target starts from its committed seeds (hostile/corpus/TARGET) and grows a working corpus
# in fuzz/corpus/TARGET (git-ignored); crashes land in fuzz/artifacts/TARGET. A crash, once fixed,
# is minimised (`cargo fuzz tmin`) and copied into hostile/corpus/TARGET, which `make test`
# replays. Per-target logs are in fuzz/logs; the summary table ends the run.
#
# cargo-fuzz passes nightly-only flags (-Zsanitizer); RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them for this build only. The main build never sees them (fuzz/ is its own workspace).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
secs="${1:-600}"
shift || true
JOBS="${JOBS:-2}"
SANITIZER="${SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
bash scripts/setup.sh libtorch

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cd fuzz && cargo fuzz list)
# one build of every target before any of them runs
(cd fuzz && cargo fuzz build --sanitizer "$SANITIZER")

mkdir -p fuzz/logs
run_one() {
  local t="$1"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  (cd fuzz && cargo fuzz run --sanitizer "$SANITIZER" "$t" "corpus/$t" "../hostile/corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -malloc_limit_mb=2048 \
    -detect_leaks=0 -print_final_stats=1) >"fuzz/logs/$t.log" 2>&1 || echo "[fuzz] $t stopped with a finding: see fuzz/logs/$t.log" >&2
}
export -f run_one
export secs SANITIZER
printf '%s\n' "${targets[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_one {}'

printf '\n%-22s %12s %8s %8s %8s %s\n' target executions exec/s cov ft findings
for t in "${targets[@]}"; do
  log="fuzz/logs/$t.log"
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
  cov="$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)"
  ft="$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)"
  found="$(find "fuzz/artifacts/$t" -type f | wc -l)"
  printf '%-22s %12s %8s %8s %8s %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$found"
done
