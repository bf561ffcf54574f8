#!/usr/bin/env bash
# What the inherited weights are worth, on the shipped package: for three latency budgets, the
# test top-1 of the subnet the search picks as `ofa extract` cuts it (inherited), after
# fine-tuning it for 1, 3 and 10 epochs, and of the same architecture trained from scratch for
# 10 and 30 epochs (the control arm), with the training time of each. Writes
# checkpoints/fashion-mnist/finetune.json and prints the table. Each arm is skipped when its
# result exists and resumes where it stopped, so the script can be run again after an
# interruption (or a piece at a time: ARMS).
#
#   bash scripts/finetune-fmnist.sh
#
# Settings (environment):
#   OFA        the binary                          [target/release/ofa]
#   PKG        the package                         [checkpoints/fashion-mnist]
#   WORK       the arms' run folders               [runs/finetune-fmnist]
#   THREADS    libtorch threads                    [2]
#   HARDWARE   the latency table                   [cpu-xeon-emr-2t, the package's]
#   BUDGETS    latency budgets, ms                 [3 4.5 6.5: 8 %, 35 % and 70 % into the
#                                                  table's range of 2.55 to 8.16 ms]
#   ARMS       which arms to run                   [ft-1 ft-3 ft-10 scratch-10 scratch-30]
# The table holds every budget measured in WORK, not only BUDGETS, so budgets can run as separate
# jobs (two at THREADS=1 use 2 cores better than one at 2). Each arm's record lists the thread
# counts it ran with. Time the arms on a quiet machine: other work on the cores shows in the seconds.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OFA="${OFA:-$root/target/release/ofa}"
PKG="${PKG:-$root/checkpoints/fashion-mnist}"
WORK="${WORK:-$root/runs/finetune-fmnist}"
THREADS="${THREADS:-2}"
HARDWARE="${HARDWARE:-cpu-xeon-emr-2t}"
BUDGETS="${BUDGETS:-3 4.5 6.5}"
ARMS="${ARMS:-ft-1 ft-3 ft-10 scratch-10 scratch-30}"

ofa() { printf '$ ofa %s\n' "$*" >&2; "$OFA" --threads "$THREADS" "$@"; }

# arm DIR ARGS...: one fine-tuning run, its record in DIR/result.json
arm() {
  local dir="$1"
  shift
  [ -f "$dir/result.json" ] && return 0
  echo "$THREADS" >>"$dir.threads"
  if [ -f "$dir/finetune.json" ]; then
    ofa finetune --resume "$dir" --json >"$dir/result.json.tmp"
    rm -f "$dir.result.json.tmp" # the first start's output, cut short
  else
    ofa finetune --package "$PKG" "$@" --out "$dir" --json >"$dir.result.json.tmp"
    mv "$dir.result.json.tmp" "$dir/result.json.tmp"
  fi
  mv "$dir/result.json.tmp" "$dir/result.json"
}

for b in $BUDGETS; do
  base="$WORK/$b/base"
  if [ ! -f "$base/subnet.safetensors" ]; then
    ofa extract --package "$PKG" --hardware "$HARDWARE" --max-latency-ms "$b" --out "$base"
  fi
  if [ ! -f "$base/test.json" ]; then
    ofa eval --model "$base/subnet.safetensors" --json >"$base/test.json.tmp"
    mv "$base/test.json.tmp" "$base/test.json"
  fi
  for a in $ARMS; do
    epochs="${a#*-}"
    case "$a" in
    ft-*) arm "$WORK/$b/$a" --subnet "$base/subnet.safetensors" --epochs "$epochs" ;;
    scratch-*) arm "$WORK/$b/$a" --subnet "$base/subnet.safetensors" --epochs "$epochs" --from-scratch ;;
    *) echo "unknown arm $a (ft-N or scratch-N)" >&2; exit 1 ;;
    esac
  done
done

python3 - "$WORK" "$PKG/finetune.json" "$HARDWARE" $BUDGETS <<'EOF'
import json, os, platform, sys

work, out, hardware = sys.argv[1], sys.argv[2], sys.argv[3]
# every budget measured in WORK (a folder with a scored base), and those asked for
measured = [b for b in os.listdir(work) if os.path.isfile(os.path.join(work, b, "base", "test.json"))]
budgets = sorted(set(sys.argv[4:]) | set(measured), key=float)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
rows = []
for b in budgets:
    d = os.path.join(work, b)
    base = json.load(open(os.path.join(d, "base", "report.json")))
    test = json.load(open(os.path.join(d, "base", "test.json")))
    row = {"budget_ms": float(b), "arch": base["arch"],
           "inherited": {"test_top1": test["top1"]}, "arms": {}}
    for name in sorted(os.listdir(d)):
        f = os.path.join(d, name, "result.json")
        if not os.path.isfile(f):
            continue
        r = json.load(open(f))
        t = os.path.join(d, name + ".threads")
        threads = sorted({int(x) for x in open(t).read().split()}) if os.path.isfile(t) else None
        row["inherited"]["heldout_top1"] = r["history"][0]["heldout_top1"] if r["init"] == "inherited" else row["inherited"].get("heldout_top1")
        row["arms"][name] = {
            "init": r["init"], "epochs": r["epochs"], "test_top1": r.get("test_top1"),
            "heldout_top1": r["chosen"]["heldout_top1"], "best_epoch": r["chosen"]["epoch"],
            "train_s": round(r["train_s"], 1), "threads": threads,
            "gain_points": None if r.get("test_top1") is None else round(r["test_top1"] - test["top1"], 2),
        }
    rows.append(row)
doc = {"package": "fashion-mnist", "hardware": hardware, "machine": cpu, "rows": rows}
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
os.replace(tmp, out)
arms = sorted({a for r in rows for a in r["arms"]}, key=lambda a: (a.split("-")[0] != "ft", int(a.split("-")[1])))
print("| budget ms | inherited | " + " | ".join(arms) + " |")
print("|---|---|" + "---|" * len(arms))
for r in rows:
    cells = []
    for a in arms:
        x = r["arms"].get(a)
        cells.append("–" if x is None else f'{x["test_top1"]:.2f} ({x["gain_points"]:+.2f}, {x["train_s"] / 60:.0f} min)')
    print(f'| {r["budget_ms"]} | {r["inherited"]["test_top1"]:.2f} | ' + " | ".join(cells) + " |")
print(f"wrote {out}", file=sys.stderr)
EOF
