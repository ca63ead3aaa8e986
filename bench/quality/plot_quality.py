#!/usr/bin/python3
"""Table and plots of quality_eval reports (run with /usr/bin/python3: numpy, matplotlib).

usage: plot_quality.py OUT_DIR MAIN.json [--compare OTHER.json] [--variant NAME=FILE.json ...]

Writes into OUT_DIR:
  table.md            every point of MAIN, per workload, and the targets checked;
  quality_<w>.png     per workload: output error and recall vs density, one curve per estimator
                      (line style = stride), the oracle's frontier in black;
  quality_overview.png  error vs density for every workload side by side;
  summary.json        the numbers table.md's target section quotes.
--compare: another run of the same sweep (e.g. 4 ranks against 1): the largest differences
go into table.md. --variant: extra runs (e.g. a diffuse head, another concentration) whose
S=8 round-robin and oracle points get their own short table.
"""
import argparse
import json
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ESTIMATORS = ["rr", "rr_unrotated", "antidiagonal", "oracle", "static_window"]
LABEL = {"rr": "round robin (RR)", "rr_unrotated": "RR unrotated (offset 0)",
         "antidiagonal": "antidiagonal (XAttention)", "oracle": "oracle top-tau",
         "static_window": "static sink + window"}
COLOR = {"rr": "tab:blue", "rr_unrotated": "tab:orange", "antidiagonal": "tab:green",
         "oracle": "black", "static_window": "tab:gray"}
STYLE = {4: ":", 8: "-", 16: "--", 0: "-"}
DENSITY_TARGET, ERROR_TARGET, ORACLE_GAP_TARGET = 0.5, 0.01, 0.05


def load(path):
    with open(path) as f:
        return json.load(f)


def points(w, estimator, stride=None, with_output=None):
    out = [p for p in w["points"] if p["estimator"] == estimator
           and (stride is None or p["stride"] == stride)
           and (with_output is None or p["has_output"] == with_output)]
    return sorted(out, key=lambda p: p["density"])


def interp(x, xs, ys):
    """Linear interpolation of y at x on a curve sorted by xs; None outside its range."""
    if len(xs) == 0 or x < xs[0] - 1e-12 or x > xs[-1] + 1e-12:
        return None
    return float(np.interp(x, xs, ys))


def oracle_frontier(w):
    """(recall_mean, density) of every oracle point, by recall, made monotone."""
    pts = sorted(points(w, "oracle"), key=lambda p: p["recall_mean"])
    rec = [p["recall_mean"] for p in pts]
    den = [p["density"] for p in pts]
    den = list(np.maximum.accumulate(den))
    return rec, den


def fmt(x, spec=".3f"):
    return "-" if x is None or (isinstance(x, float) and x < 0) else format(x, spec)


def point_row(p):
    setting = (f"S={p['stride']} tau={p['tau']:g}" if p["estimator"] != "static_window"
               else f"W={p['window']}")
    if p["estimator"] == "oracle":
        setting = f"tau={p['tau']:g}"
    return ("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
        p["estimator"], setting, fmt(p["density"]), fmt(p.get("rel_l2_err"), ".2e"),
        fmt(p.get("max_abs_err"), ".2e"), fmt(p["recall_mean"], ".4f"), fmt(p["recall_p1"], ".4f"),
        fmt(p.get("needle_recall"), ".2f"), fmt(p["estimate_seconds"], ".3f"),
        fmt(p["estimate_flops_fraction"], ".4f")))


def check_targets(w):
    """The issue's targets on one workload; returns a dict of findings."""
    res = {"workload": w["name"]}
    # 1. At density <= 0.5: rel L2 <= 1% and needle recall 100% (round robin, any stride/tau).
    ok = [p for p in points(w, "rr") if p["density"] <= DENSITY_TARGET]
    best = min(ok, key=lambda p: p["rel_l2_err"]) if ok else None
    res["rr_best_under_half"] = best and {k: best[k] for k in ("stride", "tau", "density", "rel_l2_err")}
    res["rr_meets_error_target"] = bool(best and best["rel_l2_err"] <= ERROR_TARGET)
    needle = [p.get("needle_recall") for p in ok if p.get("needle_recall") is not None]
    res["rr_needle_recall_min_under_half"] = min(needle) if needle else None
    default = [p for p in points(w, "rr", 8) if abs(p["tau"] - 0.95) < 1e-9]
    if default:
        d = default[0]
        res["rr_default"] = {"density": d["density"], "rel_l2_err": d["rel_l2_err"],
                             "needle_recall": d.get("needle_recall")}
    # 2. RR within 5 points of the oracle's density at equal recall.
    rec, den = oracle_frontier(w)
    gaps = []
    for p in points(w, "rr"):
        o = interp(p["recall_mean"], rec, den)
        if o is not None:
            gaps.append({"stride": p["stride"], "tau": p["tau"], "rr_density": p["density"],
                         "oracle_density": o, "gap": p["density"] - o})
    res["oracle_gaps"] = gaps
    res["oracle_gap_max"] = max((g["gap"] for g in gaps), default=None)
    res["oracle_gap_max_s8"] = max((g["gap"] for g in gaps if g["stride"] == 8), default=None)
    # 3. Ahead of the unrotated and antidiagonal baselines: recall and error at RR's density,
    # interpolated on the baseline's curve of the same stride.
    duels = {}
    for base in ("rr_unrotated", "antidiagonal"):
        rows = []
        for p in points(w, "rr"):
            curve = points(w, base, p["stride"])
            xs = [q["density"] for q in curve]
            r = interp(p["density"], xs, [q["recall_mean"] for q in curve])
            e = interp(p["density"], xs, [math.log(max(q["rel_l2_err"], 1e-12)) for q in curve])
            if r is None:
                continue
            rows.append({"stride": p["stride"], "tau": p["tau"], "recall_delta": p["recall_mean"] - r,
                         "error_ratio": p["rel_l2_err"] / math.exp(e)})
        duels[base] = {
            "compared": len(rows),
            "rr_recall_higher": sum(r["recall_delta"] > 0 for r in rows),
            "rr_error_lower": sum(r["error_ratio"] < 1 for r in rows),
            "mean_recall_delta": float(np.mean([r["recall_delta"] for r in rows])) if rows else None,
            "median_error_ratio": float(np.median([r["error_ratio"] for r in rows])) if rows else None,
        }
    res["vs_baselines"] = duels
    return res


def right_edge(w):
    return min(1.02, max(p["density"] for p in w["points"]) * 1.1 + 0.03)


def key_numbers(run, strides=(8,), taus=(0.95, 0.99, 0.999)):
    """Markdown: every estimator at the same settings, side by side."""
    lines = ["## Key numbers: each estimator at S=8 (oracle: same tau; static window: RR's density)", "",
             "| workload | tau | RR density / rel L2 / p1 recall | unrotated | antidiagonal | oracle | static window |",
             "|---|---|---|---|---|---|---|"]

    def cell(p):
        return "-" if p is None else f"{p['density']:.3f} / {p['rel_l2_err']:.1e} / {p['recall_p1']:.3f}"

    for w in run["workloads"]:
        statics = points(w, "static_window")
        for s in strides:
            for tau in taus:
                pick = {}
                for est in ("rr", "rr_unrotated", "antidiagonal"):
                    m = [p for p in points(w, est, s) if abs(p["tau"] - tau) < 1e-9]
                    pick[est] = m[0] if m else None
                m = [p for p in points(w, "oracle", None, True) if abs(p["tau"] - tau) < 1e-9]
                pick["oracle"] = m[0] if m else None
                rr = pick["rr"]
                st = None
                if rr is not None and statics:
                    above = [p for p in statics if p["density"] >= rr["density"] - 1e-12]
                    st = min(above, key=lambda p: p["density"]) if above else None
                if rr is None:
                    continue
                window = f" (W={st['window']})" if st else ""
                lines.append(f"| {w['name']} | {tau:g} | {cell(rr)} | {cell(pick['rr_unrotated'])} | "
                             f"{cell(pick['antidiagonal'])} | {cell(pick['oracle'])} | {cell(st)}{window} |")
    return lines + [""]


def plot_workload(ax_err, ax_rec, w, legend=True):
    for est in ESTIMATORS:
        strides = sorted({p["stride"] for p in points(w, est)})
        for s in strides:
            pts = points(w, est, s)
            if est == "oracle":
                out = [p for p in pts if p["has_output"]]
                ax_err.plot([p["density"] for p in out], [p["rel_l2_err"] for p in out], "o-",
                            color=COLOR[est], label=LABEL[est], ms=4)
                ax_rec.plot([p["density"] for p in pts], [p["recall_mean"] for p in pts], "-",
                            color=COLOR[est], label=LABEL[est] + " frontier")
                continue
            label = LABEL[est] + (f" S={s}" if s else "")
            style = STYLE.get(s, "-")
            alpha = 1.0 if s in (0, 8) else 0.45
            ax_err.plot([p["density"] for p in pts], [p["rel_l2_err"] for p in pts], style, marker=".",
                        color=COLOR[est], alpha=alpha, label=label)
            ax_rec.plot([p["density"] for p in pts], [p["recall_mean"] for p in pts], style, marker=".",
                        color=COLOR[est], alpha=alpha, label=label)
    ax_err.set_yscale("log")
    ax_err.axhline(ERROR_TARGET, color="red", lw=0.8, ls=":")
    if right_edge(w) > DENSITY_TARGET:
        ax_err.axvline(DENSITY_TARGET, color="red", lw=0.8, ls=":")
    ax_err.set_xlabel("density (selected / causally visible blocks)")
    ax_err.set_ylabel("relative L2 error vs fp64 dense")
    ax_err.set_title(f"{w['name']}: output error")
    ax_rec.set_xlabel("density")
    ax_rec.set_ylabel("mean recall of true attention mass")
    ax_rec.set_title(f"{w['name']}: recall")
    ax_rec.set_ylim(bottom=max(0.5, min(p["recall_mean"] for p in w["points"]) - 0.02), top=1.002)
    right = right_edge(w)
    for ax in (ax_err, ax_rec):
        ax.set_xlim(0, right)
        ax.grid(alpha=0.3)
    if legend:
        ax_rec.legend(fontsize=6, loc="lower right")


def compare_runs(a, b):
    """Largest differences between two runs of the same sweep, per quantity."""
    worst = {"density": 0.0, "recall_mean": 0.0, "recall_p1": 0.0, "rel_l2_err_abs": 0.0,
             "rel_l2_err_rel": 0.0, "needle_recall": 0.0, "points": 0}
    for wa, wb in zip(a["workloads"], b["workloads"]):
        for pa, pb in zip(wa["points"], wb["points"]):
            assert (pa["estimator"], pa["stride"], pa["tau"], pa["window"]) == \
                   (pb["estimator"], pb["stride"], pb["tau"], pb["window"]), "runs differ in their sweep"
            worst["points"] += 1
            for k in ("density", "recall_mean", "recall_p1", "needle_recall"):
                if k in pa:
                    worst[k] = max(worst[k], abs(pa[k] - pb[k]))
            if pa["has_output"]:
                delta = abs(pa["rel_l2_err"] - pb["rel_l2_err"])
                worst["rel_l2_err_abs"] = max(worst["rel_l2_err_abs"], delta)
                if pb["rel_l2_err"] >= 1e-3:  # below, fp32 rounding of the output is the error itself
                    worst["rel_l2_err_rel"] = max(worst["rel_l2_err_rel"], delta / pb["rel_l2_err"])
    return worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("main")
    ap.add_argument("--compare")
    ap.add_argument("--variant", action="append", default=[])
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    run = load(args.main)
    cfg = run["config"]
    lines = [f"# Quality of the sparse path: `{os.path.basename(args.main)}`", "",
             f"L={cfg['seq_len']} H={cfg['heads']} Hkv={cfg['kv_heads']} D={cfg['head_dim']}, "
             f"block {cfg['block']}, {cfg['ranks']} rank(s), {cfg['layout']}, concentration "
             f"{cfg['concentration']}, diffuse head {'on' if cfg['diffuse_head'] else 'off'}; {cfg['cpu']}; "
             f"{cfg['date']}", "", f"Command: `{cfg['command']}`", ""]
    summary = {"config": cfg, "targets": []}
    for w in run["workloads"]:
        summary["targets"].append(check_targets(w))
    # Targets first.
    lines += ["## Targets", "",
              "| workload | RR S=8 tau=0.95: density / rel L2 / needle | best RR at density <= 0.5 "
              "(rel L2) | <= 1%? | needle recall at density <= 0.5 (min) | RR - oracle density at equal "
              "recall (max, S=8 / all) | RR vs unrotated: recall higher, error lower (of n) | RR vs "
              "antidiagonal: recall higher, error lower (of n) |", "|---|---|---|---|---|---|---|---|"]
    for t in summary["targets"]:
        d = t.get("rr_default", {})
        b = t["rr_best_under_half"]
        u, x = t["vs_baselines"]["rr_unrotated"], t["vs_baselines"]["antidiagonal"]
        lines.append("| {} | {} / {} / {} | {} | {} | {} | {} / {} | {}, {} ({}) | {}, {} ({}) |".format(
            t["workload"], fmt(d.get("density")), fmt(d.get("rel_l2_err"), ".2e"), fmt(d.get("needle_recall"), ".2f"),
            f"{b['rel_l2_err']:.2e} (S={b['stride']} tau={b['tau']:g}, density {b['density']:.3f})" if b else "-",
            "yes" if t["rr_meets_error_target"] else "**no**", fmt(t["rr_needle_recall_min_under_half"], ".2f"),
            fmt(t["oracle_gap_max_s8"] and 100 * t["oracle_gap_max_s8"], "+.1f"),
            fmt(t["oracle_gap_max"] and 100 * t["oracle_gap_max"], "+.1f"),
            u["rr_recall_higher"], u["rr_error_lower"], u["compared"],
            x["rr_recall_higher"], x["rr_error_lower"], x["compared"]))
    lines += ["", "Oracle gap in points of density (RR's density minus the oracle's at RR's mean recall, "
              "interpolated on the oracle's frontier); positive: RR needs more blocks. Baseline duels: RR's "
              "points against the baseline's curve of the same stride, interpolated at RR's density.", ""]
    lines += key_numbers(run)
    if args.compare:
        other = load(args.compare)
        diff = compare_runs(run, other)
        summary["compare"] = {"file": os.path.basename(args.compare), "ranks": other["config"]["ranks"], **diff}
        lines += [f"## {other['config']['ranks']} ranks vs {cfg['ranks']} ({os.path.basename(args.compare)})", "",
                  f"{diff['points']} points compared. Largest differences: density {diff['density']:.1e}, "
                  f"mean recall {diff['recall_mean']:.1e}, 1st-percentile recall {diff['recall_p1']:.1e}, "
                  f"needle recall {diff['needle_recall']:.1e}; relative L2 error {diff['rel_l2_err_abs']:.1e} "
                  f"absolute, {diff['rel_l2_err_rel']:.1e} relative where it is >= 1e-3 (round robin's "
                  "remote blocks arrive through a log-sum-exp merge: fp32 rounding). Masks are compared "
                  "row by row, bitwise, by tests/quality/quality_mpi_test.cc.", ""]
    # Where the mass is.
    lines += ["## Workloads: where the true mass lies (per head, mean over rows)", "",
              "| workload | head | role | sink block | diagonal block | oracle density for 90% | for 99% |",
              "|---|---|---|---|---|---|---|"]
    for w in run["workloads"]:
        for h in w["heads_profile"]:
            lines.append(f"| {w['name']} | {h['head']} | {h['role']} | {h['sink_share']:.3f} | "
                         f"{h['diagonal_share']:.3f} | {h['oracle_density_90']:.3f} | {h['oracle_density_99']:.3f} |")
    lines.append("")
    # Every point.
    for w in run["workloads"]:
        lines += [f"## {w['name']} (reference {w['reference_seconds']:.1f} s)", "",
                  "| estimator | setting | density | rel L2 | max abs | recall mean | recall p1 | needle | "
                  "est. s | est. flops / dense |", "|---|---|---|---|---|---|---|---|---|---|"]
        for est in ESTIMATORS:
            for p in sorted(points(w, est), key=lambda p: (p["stride"], p["tau"], p["window"])):
                lines.append(point_row(p))
        lines.append("")
    # Variants.
    for spec in args.variant:
        name, path = spec.split("=", 1)
        v = load(path)
        vc = v["config"]
        summary.setdefault("variants", {})[name] = [check_targets(w) for w in v["workloads"]]
        lines += [f"## Variant: {name} (concentration {vc['concentration']}, diffuse head "
                  f"{'on' if vc['diffuse_head'] else 'off'}, {vc['ranks']} rank(s))", "",
                  f"Command: `{vc['command']}`", "",
                  "| workload | estimator | setting | density | rel L2 | recall mean | recall p1 | needle |",
                  "|---|---|---|---|---|---|---|---|"]
        for w in v["workloads"]:
            for est in ("rr", "antidiagonal", "oracle"):
                for p in points(w, est, 8 if est != "oracle" else 0, True):
                    lines.append(f"| {w['name']} | {est} | tau={p['tau']:g} | {p['density']:.3f} | "
                                 f"{p['rel_l2_err']:.2e} | {p['recall_mean']:.4f} | {p['recall_p1']:.4f} | "
                                 f"{fmt(p.get('needle_recall'), '.2f')} |")
        lines.append("")
    with open(os.path.join(args.out_dir, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)

    for w in run["workloads"]:
        fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.8))
        plot_workload(a, b, w)
        fig.suptitle(f"{w['name']}: L={w['seq_len']} H={w['heads']} Hkv={w['kv_heads']} D={w['head_dim']} "
                     f"B={w['block']} ({w['world_size']} rank(s)); dotted S=4, solid S=8, dashed S=16")
        fig.tight_layout()
        fig.savefig(os.path.join(args.out_dir, f"quality_{os.path.basename(w['name']).split('.')[0]}.png"), dpi=110)
        plt.close(fig)
    n = len(run["workloads"])
    cols = min(3, n + 1)
    rows = (n + 1 + cols - 1) // cols  # one more panel for the legend
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for i, w in enumerate(run["workloads"]):
        dummy = plt.figure()
        plot_workload(flat[i], dummy.add_subplot(), w, legend=False)
        plt.close(dummy)
    handles, labels = flat[0].get_legend_handles_labels()
    for ax in flat[n:]:
        ax.axis("off")
    flat[n].legend(handles, labels, loc="center", fontsize=9)
    fig.suptitle(f"Output error vs density, {cfg['ranks']} rank(s), L={cfg['seq_len']}; dotted S=4, solid S=8, "
                 "dashed S=16; red: the targets (density 0.5, error 1%)")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out_dir, "quality_overview.png"), dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
