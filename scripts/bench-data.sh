#!/usr/bin/env bash
# The streaming-data benchmark of ARCHITECTURE.md ("Streaming image folders"), on a quiet machine:
#   1. ofa bench data on a generated ImageNet-like folder (1,000 JPEGs, about 500x375), with each
#      JPEG decoder, against torchvision's ImageFolder + DataLoader in the same run;
#   2. peak memory over the same batches for 2,000 and 20,000 images;
#   3. the ofa-mbv3-w1.0 training step at r=224 fed by the loader: the share spent waiting on data.
# Usage: bash scripts/bench-data.sh [WORKDIR]   (default /tmp/ofa-bench-data; images kept there)
# The torchvision peer runs from .bench-venv (created here with pip: torch 2.11.0 and
# torchvision 0.26.0; several GB) unless OFA_BENCH_NO_PEER=1.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-/tmp/ofa-bench-data}"
ofa="$root/target/release/ofa"
R=224; W=2; B=64
[ -x "$ofa" ] || (cd "$root" && make build)
mkdir -p "$work"
for n in 1000 2000 20000; do
  [ -d "$work/f$n" ] || "$ofa" bench data --data "$work/f$n" --generate "$n" --batches 1 --warmup 0 --json >/dev/null
done
echo "== decode + augment throughput (r=$R, batch $B, $W workers, 1,000 images)"
for d in zune full scaled; do
  "$ofa" bench data --data "$work/f1000" --resolution $R --workers $W --batch $B --decoder $d --json | tee "$work/ofa-$d.json"
done
if [ "${OFA_BENCH_NO_PEER:-0}" != 1 ]; then
  py="$root/.bench-venv/bin/python"
  if [ ! -x "$py" ]; then
    python3 -m venv "$root/.bench-venv"
    "$root/.bench-venv/bin/pip" install --quiet "torch==2.11.0" "torchvision==0.26.0"
  fi
  for jitter in "" "--no-jitter"; do
    "$py" "$root/scripts/bench-data-torchvision.py" --data "$work/f1000" --resolution $R --workers $W --batch $B $jitter | tee "$work/tv$jitter.json"
  done
  python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
ofa = json.load(open(f"{w}/ofa-zune.json"))["images_per_s"]
tv = json.load(open(f"{w}/tv.json"))["images_per_s"]
tvn = json.load(open(f"{w}/tv--no-jitter.json"))["images_per_s"]
print(f"ofa {ofa:.0f} images/s; torchvision {tv:.0f} with ColorJitter ({ofa / tv:.2f}x), {tvn:.0f} without ({ofa / tvn:.2f}x)")
PY
fi
echo "== peak memory over the same 20 batches, 2,000 vs 20,000 images"
for n in 2000 20000; do
  "$ofa" bench data --data "$work/f$n" --resolution $R --workers $W --batch $B --json | tee "$work/rss-$n.json"
done
echo "== ofa-mbv3-w1.0 training step at r=$R, fed by the loader"
"$ofa" bench train --space ofa-mbv3-w1.0 --resolution $R --batch 32 --steps 5 --data "$work/f1000" --workers $W --json | tee "$work/step.json"
