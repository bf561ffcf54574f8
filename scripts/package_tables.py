#!/usr/bin/env python3
"""The package README's tables, as Markdown, from the package's own files.

    python3 scripts/package_tables.py checkpoints/fashion-mnist [ABLATION_RUN]

Reads card.json (phase tables), accuracy-fit.json (`ofa predictor fit --json`),
latency-validation.json and latency-heldout.json (`ofa profile validate --json`),
search-quality.json (`ofa bench quality --json`) and, when given, the ablation run's card.json.
Every number printed is one of those files' own; nothing is measured here.
"""
import json
import os
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def arch_summary(a):
    """As `make demo` prints it: resolution, depths, mean kernel and expand ratio of the active blocks."""
    per = len(a["ks"]) // len(a["d"])
    active = [s * per + i for s, d in enumerate(a["d"]) for i in range(d)]
    mean = lambda xs: sum(xs[i] for i in active) / len(active)
    return "r%d d%s k%.1f e%.1f" % (a["r"], "-".join(map(str, a["d"])), mean(a["ks"]), mean(a["e"]))


def phases(card):
    """One row per phase: held-out top-1 of its smallest, middle and largest subnet at both ends
    of the resolution range (and test top-1 for the last phase, which is also scored on it)."""
    steps = {p["name"]: f"{p['steps']} steps" if p.get("steps") else f"{p.get('epochs'):g} epochs"
             for p in card["recipe"].get("phase", [])}
    cols = sorted({(r["subnet"], r["resolution"]) for t in card["validation"] for r in t["rows"]},
                  key=lambda k: (["min", "mid", "max"].index(k[0]), k[1]))
    print("| phase | length | " + " | ".join(f"{s} {r} px" for s, r in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for i, t in enumerate(card["validation"]):
        got = {(r["subnet"], r["resolution"]): r for r in t["rows"]}
        print(f"| {t['phase']} | {steps.get(t['phase'], '')} | " +
              " | ".join(f"{got[c]['val_top1']:.2f}" if c in got else "" for c in cols) + " |")
        if i + 1 == len(card["validation"]) and all("test_top1" in got.get(c, {}) for c in cols):
            print("| (test split) | | " + " | ".join(f"{got[c]['test_top1']:.2f}" for c in cols) + " |")


def predictor(fit):
    print("| split | subnets | RMSE (points) | MAE (points) | Kendall τ | Spearman ρ |")
    print("|---|---|---|---|---|---|")
    for name in ("train", "test"):
        q = fit[name]
        print(f"| {name} | {q['n']} | {q['rmse']:.3f} | {q['mae']:.3f} | "
              f"{q['kendall_tau']:.3f} | {q['spearman_rho']:.3f} |")


def latency(val, held):
    print("| subnets timed | MAPE of the layer sum | Spearman ρ | correction a · Σ + b | MAPE after it |")
    print("|---|---|---|---|---|")
    print(f"| {val['n']} (seed 0, fitted on) | {val['mape']:.1f} % | {val['spearman_rho']:.3f} | "
          f"{val['fit_a']:.3f} · Σ + {val['fit_b']:.3f} ms | {val['mape_corrected']:.1f} % |")
    if held:
        # `ofa profile validate` checks the raw sum (a stored correction is refitted): apply the
        # correction fitted on the first set to the other subnets' pairs.
        a, b = val["fit_a"], val["fit_b"]
        pairs = held["pairs"]
        out = 100 * sum(abs(a * p + b - m) / m for p, m in pairs) / len(pairs)
        print(f"| {held['n']} others (seed 1), not fitted on | {held['mape']:.1f} % | "
              f"{held['spearman_rho']:.3f} | the same | {out:.1f} % |")


def quality(q):
    print("| budget ms | search pick | MACs M | predicted top-1 | held-out top-1 | test top-1 | "
          "predicted ms | measured ms | dataset best (of n fitting) | its held-out | its test | "
          "gap held-out | gap test |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in q["rows"]:
        s, b = r["search"], r["dataset_best"]
        best = (f"{arch_summary(b['arch'])} ({r['dataset_fitting']}) | {b['val_top1']:.2f} | "
                f"{b['test_top1']:.2f} | {r['val_gap']:+.2f} | {r['test_gap']:+.2f}") if b else \
            f"none of {r['dataset_fitting']} | | | | "
        print(f"| {r['budget_ms']:.2f} | {arch_summary(s['arch'])} | {s['macs_m']:.1f} | "
              f"{s['predicted_top1']:.2f} | {s['val_top1']:.2f} | {s['test_top1']:.2f} | "
              f"{s['predicted_latency_ms']:.2f} | {s['measured_latency_ms']:.2f} | {best} |")
    n = q.get("noise")
    if n:
        print(f"\nNoise: {n['samples']} dataset subnets recalibrated twice (two augmentation seeds) "
              f"and scored on {n['images']} images: sd of one measurement {n['sd_points']:.3f} points, "
              f"largest difference {n['max_diff_points']:.3f}; binomial standard error at that size "
              f"{n['binomial_se_points']:.3f} points.")


def ablation(ps, nops):
    def final(card):
        rows = card["validation"][-1]["rows"]
        return {(r["subnet"], r["resolution"]): r for r in rows}
    a, b = final(ps), final(nops)
    print(f"| subnet | px | {ps['name']} test top-1 % | {nops['name']} test top-1 % | PS gain (points) |")
    print("|---|---|---|---|---|")
    for key in sorted(a, key=lambda k: (["min", "mid", "max"].index(k[0]), k[1])):
        if key in b and "test_top1" in a[key] and "test_top1" in b[key]:
            x, y = a[key]["test_top1"], b[key]["test_top1"]
            print(f"| {key[0]} | {key[1]} | {x:.2f} | {y:.2f} | {x - y:+.2f} |")


def main():
    run = sys.argv[1]
    card = load(os.path.join(run, "card.json"))
    print(f"## {card['name']}: {card['steps']} steps in {card['train_seconds'] / 60:.0f} min\n")
    phases(card)
    p = os.path.join(run, "accuracy-fit.json")
    if os.path.exists(p):
        print("\n## Accuracy predictor\n")
        predictor(load(p))
    p = os.path.join(run, "latency-validation.json")
    if os.path.exists(p):
        print("\n## Latency table\n")
        h = os.path.join(run, "latency-heldout.json")
        latency(load(p), load(h) if os.path.exists(h) else None)
    p = os.path.join(run, "search-quality.json")
    if os.path.exists(p):
        print("\n## Search quality\n")
        quality(load(p))
    if len(sys.argv) > 2:
        nops = load(os.path.join(sys.argv[2], "card.json"))
        print(f"\n## Progressive shrinking ({nops['name']}: "
              f"{nops['train_seconds'] / 60:.0f} min)\n")
        ablation(card, nops)


if __name__ == "__main__":
    main()
