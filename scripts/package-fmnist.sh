#!/usr/bin/env bash
# Every file of the shipped package checkpoints/fashion-mnist, from nothing: train the supernet,
# profile this CPU, measure the accuracy dataset, fit the predictor, score the search, draw the
# curves, and train the progressive-shrinking ablation arm from the same full network. Each step
# is skipped when its file exists, and training resumes where it stopped, so the script can be
# run again after an interruption. With RECIPE set, the same steps but the ablation make a package
# of another recipe (the other families' `fmnist-proxyless-short` and `fmnist-resnet-short`).
#
#   bash scripts/package-fmnist.sh [STEP...]      steps: train profile dataset fit quality
#                                                 curves ablation (default: all, in that order)
#
# Settings (environment):
#   OFA       the binary                         [target/release/ofa]
#   RECIPE    the recipe                         [fmnist-short; the ablation step needs it]
#   RUN       the run folder (becomes the package) [runs/fashion-mnist]
#   ABLATION  the no-progressive-shrinking arm   [runs/fashion-mnist-no-ps]
#   THREADS   libtorch threads                    [2]
#   HARDWARE  the latency table's name            [cpu-<model>-<THREADS>t, from /proc/cpuinfo;
#                                                 the package's: cpu-xeon-emr-2t, an Emerald Rapids VM]
#   SAMPLES   measured subnets in the dataset     [1000; measured as 600 along seed 0 and
#                                                 420 along seed 1, SAMPLES_0 sets the first]
#   BUDGETS   search-quality budgets, ms          [20, 50 and 80 % into the front's range]
# Profile and score latency on a quiet machine: other work on the cores shows in the table.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OFA="${OFA:-$root/target/release/ofa}"
RUN="${RUN:-$root/runs/fashion-mnist}"
ABLATION="${ABLATION:-$root/runs/fashion-mnist-no-ps}"
THREADS="${THREADS:-2}"
SAMPLES="${SAMPLES:-1000}"
RECIPE="${RECIPE:-fmnist-short}"
FULL_STEPS=1170 # fmnist-short's first phase (the full network) ends here
if [ -z "${HARDWARE:-}" ]; then
  model="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1 | tr 'A-Z' 'a-z' |
    sed -E 's/\(r\)|\(tm\)|intel|amd|processor|cpu|@.*|[0-9.]+ ?ghz//g; s/[^a-z0-9]+/-/g; s/^-+|-+$//g')"
  HARDWARE="cpu-${model:-unknown}-${THREADS}t"
fi
steps=("$@")
if [ "$RECIPE" = fmnist-short ]; then
  [ ${#steps[@]} -gt 0 ] || steps=(train profile dataset fit quality curves ablation)
else
  [ ${#steps[@]} -gt 0 ] || steps=(train profile dataset fit quality curves)
  for step in "${steps[@]}"; do
    [ "$step" != ablation ] || { echo "the ablation arm is fmnist-short's (RECIPE=$RECIPE)" >&2; exit 2; }
  done
fi

ofa() { printf '$ ofa %s\n' "$*" >&2; "$OFA" --threads "$THREADS" "$@"; }
done_phase() { # done_phase RUN: the finished run's package exists
  [ -f "$1/supernet.safetensors" ] && [ -f "$1/card.json" ]
}

for step in "${steps[@]}"; do
  case "$step" in
  train)
    if [ "$RECIPE" != fmnist-short ]; then
      if done_phase "$RUN"; then :
      elif [ -f "$RUN/checkpoint.safetensors" ]; then ofa train --resume "$RUN"
      else ofa train --recipe "$RECIPE" --out "$RUN"; fi
    elif ! done_phase "$RUN"; then
      if [ ! -f "$RUN/full-network.safetensors" ]; then
        if [ -f "$RUN/checkpoint.safetensors" ]; then ofa train --resume "$RUN" --stop-after "$FULL_STEPS"
        else ofa train --recipe "$RECIPE" --out "$RUN" --stop-after "$FULL_STEPS"; fi
        # The phase-boundary checkpoint the ablation arm branches from (not shipped).
        cp "$RUN/checkpoint.safetensors" "$RUN/full-network.safetensors"
      fi
      ofa train --resume "$RUN"
    fi
    ;;
  profile)
    if [ ! -f "$RUN/latency/$HARDWARE.json" ]; then
      # Batch-1 timings of these small layers vary by about 9 % from run to run at the default
      # 20 repeats: 100 per layer and 200 per whole subnet make the check meaningful.
      ofa profile --package "$RUN" --name "$HARDWARE" --repeats 100
      ofa profile validate --package "$RUN" --table "$RUN/latency/$HARDWARE.json" --repeats 200 --write-correction --json \
        >"$RUN/latency-validation.json"
      # 30 other subnets, not fitted on. `validate` checks the raw layer sum (a stored correction
      # is refitted), so package_tables.py applies the first fit to these pairs: out-of-sample error.
      ofa profile validate --package "$RUN" --table "$RUN/latency/$HARDWARE.json" --repeats 200 --seed 1 --json \
        >"$RUN/latency-heldout.json"
    fi
    ;;
  dataset)
    # Two measuring processes of one libtorch thread each get through about 15 % more subnets a
    # minute on 2 cores than one process of two threads (small convolutions scale poorly across
    # threads). The first extends the dataset along seed 0 to SAMPLES_0 records, the second draws
    # along seed 1 into a shard of SAMPLES - SAMPLES_0 (+ 20 spare); the shard is then merged in,
    # every arch kept once. Both resume after an interruption.
    s0="${SAMPLES_0:-600}"
    shard="$RUN/accuracy-dataset-shard1.jsonl"
    "$OFA" --threads 1 predictor dataset --package "$RUN" --samples "$s0" --eval-images 5000 \
      --out "$RUN/accuracy-dataset.jsonl" --seed 0 &
    "$OFA" --threads 1 predictor dataset --package "$RUN" --samples "$((SAMPLES - s0 + 20))" \
      --eval-images 5000 --out "$shard" --seed 1 &
    wait
    python3 - "$RUN/accuracy-dataset.jsonl" "$shard" <<'PY'
import json, sys
main, shard = sys.argv[1], sys.argv[2]
seen = {json.dumps(json.loads(l)["arch"], sort_keys=True) for l in open(main) if l.strip()}
with open(main, "a") as out:
    for l in open(shard):
        if l.strip() and json.dumps(json.loads(l)["arch"], sort_keys=True) not in seen:
            out.write(l if l.endswith("\n") else l + "\n")
PY
    rm "$shard"
    ;;
  fit)
    ofa predictor fit --package "$RUN" --data "$RUN/accuracy-dataset.jsonl" --json >"$RUN/accuracy-fit.json"
    ;;
  quality)
    # The predicted front (also drawn into the package), and budgets spread over its latency range.
    ofa search --package "$RUN" --hardware "$HARDWARE" --pareto latency_ms --out "$RUN/front" --json >/dev/null
    rm -f "$RUN/front/front.svg" # 2.8 MB of points: the package ships the png
    if [ -z "${BUDGETS:-}" ]; then
      BUDGETS="$(python3 -c '
import json, sys
lat = [p["metrics"]["latency_ms"] for p in json.load(open(sys.argv[1]))["points"]]
lo, hi = min(lat), max(lat)
print(",".join("%.2f" % (lo + f * (hi - lo)) for f in (0.2, 0.5, 0.8)))' "$RUN/front/front.json")"
    fi
    ofa bench quality --package "$RUN" --dataset "$RUN/accuracy-dataset.jsonl" --hardware "$HARDWARE" \
      --budgets "$BUDGETS" --noise-samples 10 --json >"$RUN/search-quality.json"
    ;;
  curves)
    ofa curves "$RUN"
    ;;
  ablation)
    if ! done_phase "$ABLATION"; then
      if [ -f "$ABLATION/checkpoint.safetensors" ]; then ofa train --resume "$ABLATION"
      else
        full="$RUN/full-network.safetensors"
        if [ ! -f "$full" ]; then
          # Training is a pure function of the recipe and seed (any thread count): the full
          # network trained again equals the package's; its card's `full` row shows it.
          again="$ABLATION-full"
          if [ -f "$again/checkpoint.safetensors" ]; then ofa train --resume "$again" --stop-after "$FULL_STEPS"
          else ofa train --recipe "$RECIPE" --out "$again" --stop-after "$FULL_STEPS"; fi
          full="$again/checkpoint.safetensors"
        fi
        ofa train --recipe "$RECIPE-no-ps" --out "$ABLATION" --branch-from "$full"
      fi
    fi
    ofa curves "$ABLATION"
    ;;
  *) echo "unknown step: $step" >&2; exit 2 ;;
  esac
done
