#!/usr/bin/python3
"""Issue 20's table from quality_eval JSONs (run_heavy_quality.sh): per workload and rank
count, rr against rr+heavy at matched density, with the oracle and the antidiagonal baseline
at the same density, and the estimation cost of both.

Matched density: every estimator's (density, error) points form a curve; at each rr point the
other curves are read at rr's density (linear interpolation of log error in density; points
outside a curve's range are left out). The ratio column is rr+heavy's error over rr's there.
Usage: heavy_table.py quality_heavy_np1.json [quality_heavy_np4.json ...] > table.md
"""
import json
import math
import statistics
import sys

ESTIMATORS = ("rr", "rr+heavy", "oracle", "antidiagonal")


def curve(points, name, field):
    pts = sorted((p["density"], p[field]) for p in points
                 if p["estimator"] == name and p.get("has_output", True) and p[field] > 0)
    return pts


def at(pts, density):
    """log-linear interpolation of the curve at density; None outside its range."""
    for (d0, e0), (d1, e1) in zip(pts, pts[1:]):
        if d0 <= density <= d1:
            if d1 == d0:
                return min(e0, e1)
            w = (density - d0) / (d1 - d0)
            return math.exp((1 - w) * math.log(e0) + w * math.log(e1))
    return None


def fmt(x, spec=".2e"):
    return "-" if x is None else format(x, spec)


def main():
    print("# rr+heavy against rr at matched density (issue 20)\n")
    print("Command: `bench/quality/run_heavy_quality.sh BUILD` (quality_eval, L = 8192, H = 8, Hkv = 2, D = 64, "
          "block 128, S = 8, causal, zigzag; taus 0.7 .. 0.999). Error: relative L2 of the output vs fp64 dense "
          "attention; recall: mean true mass inside a row's mask. Other estimators read at rr's density.\n")
    summary = []
    for path in sys.argv[1:]:
        data = json.load(open(path))
        for w in data["workloads"]:
            pts = w["points"]
            ranks = w["world_size"]
            err = {e: curve(pts, e, "rel_l2_err") for e in ESTIMATORS}
            rec = {e: curve(pts, e, "recall_mean") for e in ESTIMATORS}
            print(f"## {w['name']}, {ranks} rank(s)\n")
            print("| tau | rr density | rr err | rr+heavy err | ratio | oracle err | antidiagonal err | rr recall | rr+heavy recall |")
            print("|---|---|---|---|---|---|---|---|---|")
            ratios = []
            for p in sorted((p for p in pts if p["estimator"] == "rr"), key=lambda p: p["tau"]):
                d = p["density"]
                h = at(err["rr+heavy"], d)
                ratio = h / p["rel_l2_err"] if h is not None and p["rel_l2_err"] > 0 else None
                if ratio is not None and d <= 0.5:
                    ratios.append(ratio)
                print(f"| {p['tau']} | {d:.3f} | {p['rel_l2_err']:.2e} | {fmt(h)} | {fmt(ratio, '.2f')} | "
                      f"{fmt(at(err['oracle'], d))} | {fmt(at(err['antidiagonal'], d))} | {p['recall_mean']:.4f} | "
                      f"{fmt(at(rec['rr+heavy'], d), '.4f')} |")
            cost = {}
            for e in ("rr", "rr+heavy", "antidiagonal"):
                sel = [p for p in pts if p["estimator"] == e]
                cost[e] = (statistics.median(p["estimate_seconds"] for p in sel),
                           statistics.median(p["estimate_flops_fraction"] for p in sel))
            print(f"\nEstimation cost (median over taus; flops as a fraction of dense attention): rr {cost['rr'][0]:.3f} s, "
                  f"{cost['rr'][1]:.4f}; rr+heavy {cost['rr+heavy'][0]:.3f} s, {cost['rr+heavy'][1]:.4f} "
                  f"({cost['rr+heavy'][1] / cost['rr'][1]:.3f}x flops, {cost['rr+heavy'][0] / cost['rr'][0]:.2f}x time); "
                  f"antidiagonal {cost['antidiagonal'][0]:.3f} s, {cost['antidiagonal'][1]:.4f}.\n")
            summary.append((w["name"], ranks, statistics.median(ratios) if ratios else None,
                            max(ratios) if ratios else None, cost["rr+heavy"][0] / cost["rr"][0],
                            cost["rr+heavy"][1] / cost["rr"][1]))
    print("## Summary: rr+heavy error / rr error at matched density (rr points at density <= 0.5)\n")
    print("| workload | ranks | median ratio | worst ratio | time ratio | flops ratio |")
    print("|---|---|---|---|---|---|")
    for name, ranks, med, worst, t, f in summary:
        print(f"| {name} | {ranks} | {fmt(med, '.2f')} | {fmt(worst, '.2f')} | {t:.2f} | {f:.3f} |")


if __name__ == "__main__":
    main()
