"""check_report.py REPORT.json KEY<=VALUE ... : asserts fields of a `prefill attention --json`
report, e.g. density<=0.5 rel_l2_err<=0.02 kv_bytes_sent_total<=0.6*kv_bytes_dense_ring."""
import json
import sys


def main():
    report = json.load(open(sys.argv[1]))
    failed = False
    for cond in sys.argv[2:]:
        key, bound = cond.split("<=")
        value = report[key]
        limit = eval(bound, {}, dict(report))  # bounds may name other fields of the report
        ok = value <= limit
        print(f"{'ok  ' if ok else 'FAIL'} {key} = {value} <= {bound} = {limit}")
        failed |= not ok
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
