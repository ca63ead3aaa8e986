#!/usr/bin/env python3
"""Load test of a running `prefill serve` (standard library only), after vLLM's serving benchmark.

Submits --requests requests of a fixed mix of prompt lengths (inline random token ids), at most
--concurrency in flight (each client submits, then polls its request until it ends), and reports
requests/s, tokens/s and the p50/p90/p99 of end-to-end latency (submission to done), queue time
and server-side prefill time. Writes the figures as JSON with --out.

  bench/serve_load.py --url http://127.0.0.1:8000 --requests 64 --concurrency 8 \
      --lengths 2048,8192,32768 --vocab 128256 --out serve_load.json
"""
import argparse
import json
import random
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request


def call(url, method, path, key, body=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return r.status, json.loads(r.read() or b"null"), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), e.headers


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--lengths", default="1024,4096", help="prompt lengths, used in turn")
    ap.add_argument("--vocab", type=int, required=True, help="token ids are drawn from [0, vocab)")
    ap.add_argument("--mode", choices=["sparse", "dense"], help="the server's default when absent")
    ap.add_argument("--tau", type=float)
    ap.add_argument("--api-key-file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="JSON results")
    a = ap.parse_args()
    key = open(a.api_key_file).readline().strip() if a.api_key_file else ""
    lengths = [int(x) for x in a.lengths.split(",")]
    rng = random.Random(a.seed)
    prompts = [[rng.randrange(a.vocab) for _ in range(lengths[i % len(lengths)])] for i in range(a.requests)]
    run_id = f"load-{int(time.time() * 1000)}"
    results, lock, next_index = [], threading.Lock(), [0]

    def client():
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= a.requests:
                return
            body = {"id": f"{run_id}-{i}", "tokens": prompts[i]}
            if a.mode:
                body["mode"] = a.mode
            if a.tau:
                body["tau"] = a.tau
            start = time.perf_counter()
            status, answer, headers = call(a.url, "POST", "/v1/prefill", key, body)
            while status == 429:  # the queue is full: wait as the server asks
                time.sleep(float(headers.get("Retry-After", "1")))
                status, answer, headers = call(a.url, "POST", "/v1/prefill", key, body)
            if status != 202:
                with lock:
                    results.append({"tokens": len(prompts[i]), "ok": False, "error": answer})
                continue
            while True:
                status, state, _ = call(a.url, "GET", f"/v1/requests/{body['id']}", key)
                if status != 200 or state["state"] not in ("queued", "running"):
                    break
                time.sleep(0.01)
            latency = time.perf_counter() - start
            ok = status == 200 and state["state"] == "done"
            record = (state.get("result") or {}) if status == 200 else {}
            with lock:
                results.append({"tokens": len(prompts[i]), "ok": ok, "latency": latency,
                                "queue": state.get("queue_seconds") if status == 200 else None,
                                "prefill": record.get("prefill_seconds"), "error": None if ok else state})

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r["ok"]]

    def spread(key):
        values = [r[key] for r in ok if r.get(key) is not None]
        return {"p50": percentile(values, 0.5), "p90": percentile(values, 0.9), "p99": percentile(values, 0.99),
                "mean": statistics.fmean(values) if values else None}

    report = {"url": a.url, "requests": a.requests, "concurrency": a.concurrency, "lengths": lengths,
              "mode": a.mode, "tau": a.tau, "ok": len(ok), "failed": len(results) - len(ok), "wall_seconds": wall,
              "requests_per_second": len(ok) / wall, "tokens_per_second": sum(r["tokens"] for r in ok) / wall,
              "latency_seconds": spread("latency"), "queue_seconds": spread("queue"),
              "prefill_seconds": spread("prefill"),
              "errors": [r["error"] for r in results if not r["ok"]][:5]}
    lat = report["latency_seconds"]
    print(f"serve_load: {len(ok)}/{a.requests} ok in {wall:.2f} s: {report['requests_per_second']:.2f} req/s, "
          f"{report['tokens_per_second']:.0f} tokens/s; latency p50 {lat['p50']:.3f} s, p99 {lat['p99']:.3f} s")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if len(ok) == a.requests else 1


if __name__ == "__main__":
    sys.exit(main())
