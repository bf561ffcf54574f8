#!/usr/bin/env bash
# The main job on a trained package: fit its latency on this machine from 20 probes timed here,
# serve it, ask for the best subnet under several latency budgets over HTTP, download each one's weights, measure each subnet's top-1 and latency here,
# cut one more offline with `ofa extract`, draw the Pareto front, stop the server, and print one
# table of predicted against measured figures.
#
#   bash scripts/demo.sh                 (what `make demo` runs, after building)
#
# Settings (environment):
#   OFA        the binary                      [target/release/ofa]
#   PACKAGE    the package served              [checkpoints/fashion-mnist]
#   DATA       dataset of the measurements     [the package card's, else Fashion-MNIST]
#   OUT        where the files go              [target/demo]
#   THREADS    libtorch threads everywhere     [2]
#   BUDGETS    latency budgets, ms; the last one is cut offline
#                                              [10, 30, 70 and 50 % into the package's range]
#   DEMO_FAST  1: score 500 test images and time 10 runs (the test suite's mode)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OFA="${OFA:-$root/target/release/ofa}"
PACKAGE="${PACKAGE:-$root/checkpoints/fashion-mnist}"
OUT="${OUT:-$root/target/demo}"
THREADS="${THREADS:-2}"
FAST="${DEMO_FAST:-0}"
PYTHON="${PYTHON:-python3}"
if [ "$FAST" = 1 ]; then IMAGES=500; REPEATS=10; CALIB_REPEATS=10; else IMAGES=10000; REPEATS=50; CALIB_REPEATS=50; fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
# json FILE EXPR: evaluate a Python expression over the JSON document `j` in FILE.
json() { "$PYTHON" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

[ -x "$OFA" ] || die "no binary at $OFA (run \`make build\`)"
[ -f "$PACKAGE/supernet.safetensors" ] || die "no package at $PACKAGE"
command -v curl >/dev/null || die "curl is missing (\`make setup\` installs it)"
name="$(basename "$PACKAGE")"
if [ -z "${DATA:-}" ]; then
  DATA="$(json "$PACKAGE/card.json" 'j.get("dataset", "")')"
  [ -d "$DATA" ] || DATA=/usr/share/datasets/fashion-mnist
fi
rm -rf "$OUT"; mkdir -p "$OUT"
ofa() { "$OFA" --threads "$THREADS" "$@"; }

say "calibrate: this machine's latency from 20 probe subnets timed here (libtorch, $THREADS threads)"
# A latency table is right only on the machine and runtime that measured it: the package's shipped
# table was profiled on another machine. The demo serves a copy of the package with a hardware
# `local` fitted to this one (`ofa hardware probes` → `ofa hardware time` → `ofa hardware fit`).
served="$OUT/$name"
mkdir -p "$served/latency"
cp "$PACKAGE"/{supernet.safetensors,calibration.safetensors,card.json,accuracy.safetensors} "$served/"
cp "$PACKAGE"/latency/*.json "$served/latency/" 2>/dev/null || true
show "ofa hardware probes --package $served --count 20 --out $OUT/probes"
ofa hardware probes --package "$served" --count 20 --out "$OUT/probes" >/dev/null
show "ofa hardware time --package $served --dir $OUT/probes"
ofa hardware time --package "$served" --dir "$OUT/probes" --repeats "$CALIB_REPEATS" >/dev/null
show "ofa hardware fit --package $served --measurements $OUT/probes/measurements-libtorch.csv --name local"
ofa hardware fit --package "$served" --measurements "$OUT/probes/measurements-libtorch.csv" \
  --name local --json >"$OUT/fit.json"
json "$OUT/fit.json" '"  model %s; leave-one-out on the 20 probes: MAPE %.1f %%, %.0f %% within ±10 %%, Spearman %.3f" % (j["model"]["name"], j["loo"]["mape_pct"], j["loo"]["within_10pct"], j["loo"]["spearman"])'
# The fit is right to a few per cent, not exactly: each search asks for its budget less the fit's
# worst leave-one-out error on the probes (at least 2 %, at most 10 %), so the pick measured here lands
# under the budget and still uses most of it.
HEADROOM="$(json "$OUT/fit.json" '"%.1f" % min(10.0, max(2.0, j["loo"]["max_ape_pct"]))')"
echo "  headroom under each budget: $HEADROOM % (the fit's worst leave-one-out error, clamped to 2..10 %)"
asked() { "$PYTHON" -c 'import sys; print("%.4g" % (float(sys.argv[1]) * (1 - float(sys.argv[2]) / 100)))' "$1" "$HEADROOM"; }
PACKAGE="$served"

say "serve the package: ofa serve (model threads, search and cut on demand)"
show "ofa serve --package $PACKAGE --addr 127.0.0.1:0"
"$OFA" --threads "$THREADS" serve --package "$PACKAGE" --addr 127.0.0.1:0 >"$OUT/serve.out" 2>"$OUT/serve.log" &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  grep -q '^listening on ' "$OUT/serve.out" 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$OUT/serve.log" >&2; die "the server stopped"; }
  sleep 0.1
done
url="$(sed -n 's/^listening on //p' "$OUT/serve.out")"
[ -n "$url" ] || die "the server did not print its address"
for _ in $(seq 600); do
  curl -sf "$url/readyz" >/dev/null && break
  sleep 0.1
done
curl -sf "$url/readyz" >/dev/null || die "$url/readyz never answered 200"
echo "ready at $url"

say "what the server offers"
show "curl $url/v1/supernets/$name"
curl -sSf "$url/v1/supernets/$name" >"$OUT/supernet.json"
hardware=local
json "$OUT/supernet.json" '"space %s, %d classes; hardware: %s" % (j["space"]["name"], j["space"]["n_classes"], "; ".join("%s %.2f to %.2f ms" % (h["name"], h["latency_ms"]["min"], h["latency_ms"]["max"]) for h in j["hardware"]))'
if [ -z "${BUDGETS:-}" ]; then
  # Spread over what the search can meet once the headroom is taken off: the smallest budget, less
  # its headroom, still lies 1 % above the fastest subnet (rounding to 3 figures moves it < 0.5 %).
  BUDGETS="$(json "$OUT/supernet.json" '" ".join("%.3g" % (lo + f * (r["max"] - lo)) for r in [h["latency_ms"] for h in j["hardware"] if h["name"] == "local"] for lo in [1.01 * r["min"] / (1 - '"$HEADROOM"' / 100)] for f in (0.1, 0.3, 0.7, 0.5))')"
fi
read -r -a budgets <<<"$BUDGETS"
offline="${budgets[-1]}"
unset 'budgets[-1]'
[ "${#budgets[@]}" -ge 1 ] || die "BUDGETS needs at least two budgets (the last is cut offline)"

say "the best subnet per latency budget on $hardware, over HTTP"
i=0
for b in "${budgets[@]}"; do
  i=$((i + 1))
  d="$OUT/http-$i"; mkdir -p "$d"
  a="$(asked "$b")"
  body="{\"supernet\": \"$name\", \"hardware\": \"$hardware\", \"constraints\": {\"latency_ms\": $a}}"
  show "curl -X POST $url/v1/subnets -d '$body'"
  code="$(curl -sS -o "$d/record.json" -w '%{http_code}' -X POST "$url/v1/subnets" \
    -H 'content-type: application/json' -d "$body")"
  [ "$code" = 200 ] || die "POST /v1/subnets answered $code: $(cat "$d/record.json")"
  id="$(json "$d/record.json" 'j["id"]')"
  json "$d/record.json" '"  id %s: predicted %.2f %% top-1, %.2f ms, %.2f M MACs" % (j["id"], j["predicted"]["top1"], j["predicted"]["latency_ms"], j["predicted"]["macs_m"])'
  show "curl -o subnet.safetensors $url/v1/subnets/$id/weights"
  curl -sSf -o "$d/subnet.safetensors" "$url/v1/subnets/$id/weights"
  curl -sSf -o "$d/net.config.json" "$url/v1/subnets/$id/net-config"
  echo "$b" >"$d/budget"
  echo "$a" >"$d/asked"
done

a="$(asked "$offline")"
say "one more, offline: ofa extract (search, cut, BN recalibration) for $offline ms (asked: $a ms)"
show "ofa extract --package $PACKAGE --hardware $hardware --max-latency-ms $a --out $OUT/offline"
ofa extract --package "$PACKAGE" --hardware "$hardware" --max-latency-ms "$a" \
  --out "$OUT/offline" --json >"$OUT/offline.json"
echo "$offline" >"$OUT/offline/budget"
echo "$a" >"$OUT/offline/asked"
json "$OUT/offline.json" '"  predicted %.2f %% top-1, %.2f ms; files: subnet.safetensors, net.config.json, report.json" % (j["predicted"]["top1"], j["predicted"]["latency_ms"])'

say "measure every subnet file here: top-1 on the test split ($IMAGES images) and latency (batch 1, $THREADS threads)"
for d in "$OUT"/http-* "$OUT/offline"; do
  show "ofa eval --model $d/subnet.safetensors --latency-repeats $REPEATS"
  ofa eval --model "$d/subnet.safetensors" --data "$DATA" --images "$IMAGES" \
    --latency-repeats "$REPEATS" --json >"$d/measured.json"
done

say "the Pareto front of predicted top-1 against latency on $hardware"
show "ofa search --package $PACKAGE --hardware $hardware --pareto latency_ms --out $OUT/front"
ofa search --package "$PACKAGE" --hardware "$hardware" --pareto latency_ms --out "$OUT/front" --json >"$OUT/front.json"

say "stop the server (SIGTERM: it drains, then exits)"
kill -TERM "$server"
wait "$server" || die "the server exited with an error: $(tail -n 5 "$OUT/serve.log")"
trap - EXIT
tail -n 1 "$OUT/serve.log"

say "predicted against measured ($hardware; top-1 on $IMAGES test images)"
"$PYTHON" - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = []
for d in sorted(out.glob("http-*")) + [out / "offline"]:
    m = json.loads((d / "measured.json").read_text())
    if d.name == "offline":
        rep = json.loads((out / "offline.json").read_text())
        arch, pred, how = rep["arch"], rep["predicted"], "ofa extract"
    else:
        rec = json.loads((d / "record.json").read_text())
        arch, pred, how = rec["arch"], rec["predicted"], "HTTP"
    per = len(arch["ks"]) // len(arch["d"])
    active = [s * per + i for s, d in enumerate(arch["d"]) for i in range(d)]
    mean = lambda xs: sum(xs[i] for i in active) / len(active)
    summary = "r%d d%s k%.1f e%.1f" % (arch["r"], "-".join(map(str, arch["d"])),
                                       mean(arch["ks"]), mean(arch["e"]))
    rows.append((how, float((d / "budget").read_text()), summary, pred["macs_m"],
                 pred["top1"], m["top1"], pred["latency_ms"], m["latency_ms"]))
head = ("via", "budget ms", "arch (r, depths, mean k, mean e)", "MACs M",
        "top-1 pred", "top-1 meas", "lat pred", "lat meas", "of budget")
w = max(len(r[2]) for r in rows + [head])
print(f"{head[0]:<11} {head[1]:>9}  {head[2]:<{w}}  {head[3]:>6}  {head[4]:>10} {head[5]:>10}  {head[6]:>8} {head[7]:>8}  {head[8]:>9}")
for r in rows:
    print(f"{r[0]:<11} {r[1]:>9.2f}  {r[2]:<{w}}  {r[3]:>6.2f}  {r[4]:>10.2f} {r[5]:>10.2f}  {r[6]:>8.3f} {r[7]:>8.3f}  {100 * r[7] / r[1]:>8.1f}%")
under = sum(r[7] <= r[1] for r in rows)
close = sum(abs(r[7] - r[6]) <= 0.1 * r[7] for r in rows)
print(f"\nmeasured here: {under} of {len(rows)} under their budget; {close} of {len(rows)} within 10 % of their prediction")
PY
echo
echo "files: $OUT (subnets, records, net.config.json, front.svg/png, serve.log)"
