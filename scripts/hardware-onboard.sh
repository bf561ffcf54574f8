#!/usr/bin/env bash
# The few-shot onboarding figures (ARCHITECTURE.md, "Latency on new hardware"): N = 10, 20 and 40
# spread probes and 50 held-out random subnets of the package, timed here in ONNX Runtime (1 thread,
# the timing script) and in libtorch (`ofa hardware time`, 1 thread); tables fitted from each probe
# set (auto model, one global scale, scale + overhead) and checked on the held-out subnets, next to
# the package's base table alone. Each step is skipped when its output exists.
#
#   bash scripts/hardware-onboard.sh            (after `make build`)
#   WORK=DIR PACKAGE=DIR bash scripts/hardware-onboard.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OFA=${OFA:-target/release/ofa}
SRC=${PACKAGE:-checkpoints/fashion-mnist}
W=${WORK:-target/hardware-onboard}
PY=(env PYTHONPATH="$PWD/.onnxruntime/site" python3)
mkdir -p "$W"
pkg="$W/pkg"
if [ ! -d "$pkg" ]; then
  mkdir -p "$pkg/latency"
  cp "$SRC"/{supernet.safetensors,calibration.safetensors,card.json,accuracy.safetensors} "$pkg/"
  cp "$SRC"/latency/*.json "$pkg/latency/"
fi
base=$(basename "$(ls "$SRC"/latency/*.json | head -1)" .json)

probe_set() { # name, then the probes arguments
  local dir="$W/$1"; shift
  [ -f "$dir/manifest.json" ] || "$OFA" hardware probes --package "$pkg" --out "$dir" "$@" >/dev/null
  [ -f "$dir/measurements.csv" ] || "${PY[@]}" "$dir/time_probes.py" --threads 1 2>/dev/null
}

probe_set heldout --count 50 --seed 99 --random
for n in 10 20 40; do probe_set "probes-$n" --count "$n" --seed 0; done
# libtorch: every set in one interleaved timing (rounds in rotated orders), so the machine's drift
# over minutes (±7 % here between runs) reaches probes and held-out subnets alike
if [ ! -f "$W/heldout/measurements-libtorch.csv" ]; then
  "$OFA" --threads 1 hardware time --package "$pkg" --rounds 5 \
    --dir "$W/heldout" --dir "$W/probes-10" --dir "$W/probes-20" --dir "$W/probes-40" >/dev/null
fi
# ONNX Runtime timed by ofa itself (the same library, loaded at run time), interleaved the same way
if [ ! -f "$W/heldout/measurements-onnxruntime.csv" ]; then
  "$OFA" --threads 1 hardware time --runtime onnxruntime --package "$pkg" --rounds 5 --repeats 200 \
    --warmup 20 --dir "$W/heldout" --dir "$W/probes-10" --dir "$W/probes-20" --dir "$W/probes-40" >/dev/null
fi

results="$W/results.jsonl"
: > "$results"
check() { # label, n, runtime, table, held-out csv
  "$OFA" hardware check --package "$pkg" --hardware "$4" --measurements "$5" --json \
    | python3 -c "import json,sys; d=json.load(sys.stdin); d.update(label='$1', n=$2, runtime='$3'); print(json.dumps(d))" >> "$results"
}
for rt in onnxruntime onnxruntime-ofa libtorch; do
  case "$rt" in
    onnxruntime) csv_name=measurements.csv ;;            # the probes' Python script
    onnxruntime-ofa) csv_name=measurements-onnxruntime.csv ;;  # ofa hardware time --runtime onnxruntime
    libtorch) csv_name=measurements-libtorch.csv ;;
  esac
  held="$W/heldout/$csv_name"
  check "base table alone" 0 "$rt" "$base" "$held"
  for n in 10 20 40; do
    for model in auto scale linear; do
      name="$rt-$n-$model"
      "$OFA" hardware fit --package "$pkg" --measurements "$W/probes-$n/$csv_name" \
        --manifest "$W/probes-$n/manifest.json" --name "$name" --model "$model" --replace --json \
        > "$W/fit-$name.json"
      chosen=$(python3 -c "import json; print(json.load(open('$W/fit-$name.json'))['model']['name'])")
      check "$model ($chosen)" "$n" "$rt" "$name" "$held"
    done
  done
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| runtime | probes | model | held-out MAPE | within ±10 % | Spearman ρ |")
print("|---|---|---|---|---|---|")
for r in rows:
    n = r["n"] or "–"
    print(f"| {r['runtime']} | {n} | {r['label']} | {r['heldout_mape_pct']:.1f} % | "
          f"{r['within_10pct']:.0f} % | {r['spearman']:.3f} |")
PY

# Searches on the fitted ONNX Runtime hardware (20 probes) at three budgets across its range: each
# pick exported (`ofa extract --onnx`) and timed in ONNX Runtime as the probes were.
hw=onnxruntime-20-auto
picks="$W/picks"
rm -rf "$picks"; mkdir -p "$picks"
range=$("$OFA" search --package "$pkg" --hardware "$hw" --pareto latency_ms --json \
  | python3 -c "import json,sys; f=json.load(sys.stdin); l=[p['metrics']['latency_ms'] for p in f['points']]; print(min(l), max(l))")
read -r lo hi <<<"$range"
i=0
for f in 0.25 0.5 0.75; do
  b=$(python3 -c "print(round($lo + $f * ($hi - $lo), 4))")
  "$OFA" extract --package "$pkg" --hardware "$hw" --max-latency-ms "$b" --out "$picks/pick-$i" --onnx --json \
    > "$picks/pick-$i.json"
  echo "$b" > "$picks/pick-$i/budget"
  i=$((i + 1))
done
python3 - "$picks" <<'PY'
import json, os, sys
d = sys.argv[1]
probes = []
for i in range(3):
    rep = json.load(open(f"{d}/pick-{i}.json"))
    a = rep["arch"]
    probes.append({"id": f"pick-{i}", "file": f"pick-{i}/model.onnx", "arch": a,
                   "input_shape": [1, 1, a["r"], a["r"]], "macs_m": rep["predicted"]["macs_m"],
                   "params_m": rep["predicted"]["params_m"], "base_latency_ms": None})
json.dump({"format": "ofa-probes/1", "package": "pkg", "supernet_sha256": "", "space": "",
           "base": None, "selection": "picks", "seed": 0, "probes": probes},
          open(f"{d}/manifest.json", "w"))
PY
"${PY[@]}" "$W/probes-20/time_probes.py" --dir "$picks" --threads 1 2>/dev/null
python3 - "$picks" <<'PY'
import csv, json, sys
d = sys.argv[1]
meas = {r["id"]: float(r["latency_ms"]) for r in csv.DictReader(open(f"{d}/measurements.csv"))}
print("\n| budget ms | predicted ms | measured in ONNX Runtime | measured / budget |")
print("|---|---|---|---|")
for i in range(3):
    rep = json.load(open(f"{d}/pick-{i}.json"))
    b = float(open(f"{d}/pick-{i}/budget").read())
    m = meas[f"pick-{i}"]
    print(f"| {b:.3f} | {rep['predicted']['latency_ms']:.3f} | {m:.3f} | {100 * m / b:.0f} % |")
PY
