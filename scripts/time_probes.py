#!/usr/bin/env python3
"""Time the probe subnets in this folder with ONNX Runtime, on the device that will run them.

Written by `ofa hardware probes` beside the probes' ONNX files and manifest.json. It needs only
Python 3 and ONNX Runtime (`pip install onnxruntime`), not ofa:

    python3 time_probes.py [--threads 1] [--repeats 200] [--warmup 20] [--rounds 5]

Each probe runs at batch 1 on the CPU execution provider with the given intra-op threads,
sequential execution and every graph optimisation on (as a deployment would). A probe's latency is
the median of its timed runs, the lowest over the rounds (the probes are taken in a different
order each round, so a noisy moment of the machine reaches no probe in every round: on a shared
VM one whole pass once ran 1.5x slow). Writes `measurements.csv` (`id,latency_ms`)
and `environment.json` (runtime, version, threads, CPU) beside the manifest; then, where ofa is:

    ofa hardware fit --package PACKAGE --measurements measurements.csv --name NAME
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=here, help="the probe folder (default: this script's)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--repeats", type=int, default=200, help="timed runs per probe and round")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs per probe and round")
    p.add_argument("--rounds", type=int, default=5, help="passes over all probes")
    p.add_argument("--out", default=None, help="CSV to write (default DIR/measurements.csv)")
    a = p.parse_args()
    if a.threads < 1 or a.repeats < 1 or a.warmup < 0 or a.rounds < 1:
        sys.exit("error: --threads, --repeats and --rounds must be positive, --warmup not negative")
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        sys.exit(f"error: {e}: install ONNX Runtime first (pip install onnxruntime)")

    with open(os.path.join(a.dir, "manifest.json")) as f:
        manifest = json.load(f)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    rng = np.random.default_rng(0)
    probes = []
    for probe in manifest["probes"]:
        path = os.path.join(a.dir, probe["file"])
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        x = rng.standard_normal(probe["input_shape"]).astype(np.float32)
        probes.append((probe["id"], sess, {name: x}))

    best = {}
    n = len(probes)
    for r in range(a.rounds):
        # round r starts at a different probe and runs backwards on odd rounds
        order = [probes[(i + r * max(1, n // a.rounds)) % n] for i in range(n)]
        if r % 2:
            order.reverse()
        for pid, sess, feed in order:
            for _ in range(a.warmup):
                sess.run(None, feed)
            times = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                sess.run(None, feed)
                times.append((time.perf_counter() - t0) * 1000.0)
            best[pid] = min(best.get(pid, float("inf")), statistics.median(times))
        print(f"round {r + 1}/{a.rounds}: {n} probes timed", file=sys.stderr)

    out = a.out or os.path.join(a.dir, "measurements.csv")
    with open(out, "w") as f:
        f.write("id,latency_ms\n")
        for pid, _, _ in probes:
            f.write(f"{pid},{best[pid]:.6f}\n")
    env = {
        "runtime": "onnxruntime",
        "version": ort.__version__,
        "threads": a.threads,
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "repeats": a.repeats,
        "rounds": a.rounds,
    }
    with open(os.path.join(os.path.dirname(os.path.abspath(out)), "environment.json"), "w") as f:
        json.dump(env, f, indent=2)
        f.write("\n")
    print(f"wrote {out} ({n} probes, onnxruntime {ort.__version__}, {a.threads} thread(s))",
          file=sys.stderr)


if __name__ == "__main__":
    main()
