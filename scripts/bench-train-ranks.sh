#!/usr/bin/env bash
# Data-parallel training steps, ofa against the reference on PyTorch, measured in one run:
#   ofa bench train                      one process (all cores)
#   ofa bench train --nproc-per-node N   N ranks (Gloo), the global batch sharded
#   scripts/bench-train-ddp.py           MIT's ofa OFAMobileNetV3 step, one process
#   torchrun --nproc-per-node N …        the same under PyTorch DDP (Gloo, 25 MB buckets)
# Every configuration: ofa-mbv3-w1.0, global batch 32 at r=128, one subnet per step, KD + label
# smoothing, SGD; the median of 20 steps after 5 warm-up steps. The peer runs from .torchrun-venv
# (made by `make test-torchrun`; MIT's `ofa` package, numpy, pillow and torchvision are added here).
# Usage: bash scripts/bench-train-ranks.sh [N]   (default 2)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-2}
ofa=${OFA:-$root/target/release/ofa}
venv=$root/.torchrun-venv
if [ ! -x "$venv/bin/torchrun" ]; then
  echo "no $venv/bin/torchrun: run make test-torchrun first" >&2
  exit 1
fi
if ! "$venv/bin/python" -c "import ofa.imagenet_classification" 2>/dev/null; then
  "$venv/bin/pip" install --quiet numpy pillow
  "$venv/bin/pip" install --quiet --no-deps "ofa==0.1.0.post202307202001" "torchvision==0.26.0"
fi
out=$(mktemp -d)
"$ofa" bench train --json > "$out/ofa-1.json"
"$ofa" bench train --json --nproc-per-node "$n" > "$out/ofa-n.json"
"$venv/bin/python" "$root/scripts/bench-train-ddp.py" 2>/dev/null > "$out/ref-1.json"
"$venv/bin/torchrun" --nproc-per-node "$n" "$root/scripts/bench-train-ddp.py" 2>/dev/null > "$out/ref-n.json"
python3 - "$out" "$n" <<'PY'
import json, sys
d, n = sys.argv[1], sys.argv[2]
r = {k: json.load(open(f"{d}/{k}.json")) for k in ["ofa-1", "ofa-n", "ref-1", "ref-n"]}
print(f"{'':26} {'ranks':>5} {'threads':>7} {'images/s':>9} {'step ms':>8} {'all-reduce':>10} {'MiB/step':>8}")
for k, name in [("ofa-1", "ofa"), ("ofa-n", "ofa"), ("ref-1", "reference (PyTorch)"), ("ref-n", "reference (PyTorch DDP)")]:
    v = r[k]
    share = v.get("allreduce_share")
    mib = v.get("reduced_bytes_per_step")
    print(f"{name:26} {v['world_size']:>5} {v['threads']:>7} {v['images_per_s']:>9.1f} {v['step_ms']['median_ms']:>8.0f} "
          + (f"{share * 100:>9.1f}%" if share is not None else f"{'':>10}")
          + (f" {mib / 2**20:>8.1f}" if mib else ""))
for w in ["1", n]:
    k = "1" if w == "1" else "n"
    print(f"ofa / reference at {w} rank(s): {r['ofa-' + k]['images_per_s'] / r['ref-' + k]['images_per_s']:.2f}x")
PY
