"""check_report.py REPORT.json KEY<=VALUE|KEY==VALUE ... : asserts fields of a `prefill attention
--json` report, e.g. density<=0.5 rel_l2_err<=0.02 kv_bytes_sent_total<=0.6*kv_bytes_dense_ring;
== holds to 1e-9 relative. A bound is a Python expression over the report's fields and, for
each field F of the per-rank entries, ranks_F: the list of its values over the ranks.
An argument @NAME=OTHER.json makes another report a name of the expressions, e.g.
@off=off.json 'kv_bytes_sent_total<=1.1*off["kv_bytes_sent_total"]'."""
import json
import sys


def main():
    report = json.load(open(sys.argv[1]))
    names = dict(report)
    for entry in report.get("ranks", [])[:1]:
        for field in entry:
            names[f"ranks_{field}"] = [r[field] for r in report["ranks"]]
    failed = False
    conds = []
    for arg in sys.argv[2:]:
        if arg.startswith("@"):
            name, path = arg[1:].split("=", 1)
            names[name] = json.load(open(path))
        else:
            conds.append(arg)
    for cond in conds:
        op = "==" if "==" in cond else "<="
        key, bound = cond.split(op)
        value = report[key]
        limit = eval(bound, {"max": max, "sum": sum, "len": len}, names)
        ok = value <= limit if op == "<=" else abs(value - limit) <= 1e-9 * max(abs(limit), 1e-300)
        print(f"{'ok  ' if ok else 'FAIL'} {key} = {value} {op} {bound} = {limit}")
        failed |= not ok
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
