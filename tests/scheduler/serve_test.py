"""End-to-end tests of `prefill serve` on the tiny random model (tests/runtime/tiny_model.py),
through a real HTTP client (urllib), on 4 CPU ranks.

  serve_test.py SCENARIO PREFILL MPIRUN_ARGS... : SCENARIO is one of
    mixed   : 20 requests of mixed lengths, inline and file prompts, dense and sparse (tau 1),
              some with kv_out, plus one of input embeddings, submitted concurrently; every
              result equals the float64 numpy forward of its prompt (top logit, KV cache) and
              `prefill run` on the same inputs (top logits, density).
    bad     : the bad-request classes get 400/404/405/409/413/429 with a JSON error while a
              good request runs undisturbed.
    cancel  : a queued request is cancelled (then never runs); a running one cannot be.
    sigterm : SIGTERM to the ranks with work in flight: the running requests finish, queued
              ones are cancelled, the job exits 0.
    apikey  : with --api-key-file, /v1/ needs the bearer token; /healthz does not.
    rankdies: SIGKILL to one rank: the whole job ends within 10 s, naming the rank.
    load    : bench/serve_load.py against the server: every request ok, its figures reported.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import batch_test  # noqa: E402  (the tiny model's files and the numpy checks)

RANKS = 4


class Server:
    def __init__(self, prefill, mpirun, work, model, extra=()):
        cmd = [*mpirun, "-np", str(RANKS), prefill, "serve", "--model", model, "--listen", "127.0.0.1:0",
               "--files-root", work, "--block", batch_test.BLOCK, "--device", batch_test.DEVICE, "--min-tokens-per-rank", "128", "--kv-dtype", "f32",
               "--mode", "dense", "--metrics-port", "0", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines = []
        self.port = None
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        assert self.port, "the server did not start:\n" + "".join(self.lines)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def call(self, method, path, body=None, headers=None):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"null"), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null"), dict(e.headers)

    def wait(self, rid, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, body, _ = self.call("GET", f"/v1/requests/{rid}")
            assert status == 200, (rid, status, body)
            if body["state"] not in ("queued", "running"):
                return body
            time.sleep(0.02)
        raise AssertionError(f"request {rid} did not finish")

    def stop(self):
        for pid in subprocess.run(["pgrep", "-s", str(self.proc.pid), "-x", "prefill"], capture_output=True,
                                  text=True).stdout.split():
            os.kill(int(pid), signal.SIGTERM)
        self.proc.wait(timeout=60)
        time.sleep(0.1)
        return self.proc.returncode, "".join(self.lines)


def make_prompts(work, lengths, seed=3):
    model = batch_test.make_batch(work, [])
    rng = np.random.default_rng(seed)
    prompts = []
    for i, n in enumerate(lengths):
        tokens = rng.integers(0, batch_test.tiny_model.VOCAB, size=n).astype(np.int32)
        np.save(os.path.join(work, f"p{i}.npy"), tokens)
        prompts.append(tokens)
    return model, prompts


def check_result(model, work, body, tokens, kv_out):
    assert body["state"] == "done", body
    r = body["result"]
    assert r["status"] == "ok", r
    cfg, w = batch_test.weights(model)
    logits, kv = batch_test.tiny_model.forward(cfg, w, tokens)
    top = r["top_logits"][0]
    scale = max(1, abs(logits.max()))
    assert logits.max() - logits[top["id"]] <= 2 * batch_test.TOL * scale, (body["id"], top, int(np.argmax(logits)))
    assert abs(top["logit"] - logits.max()) <= batch_test.TOL * scale, (top, logits.max())
    if kv_out:
        index = json.load(open(os.path.join(work, kv_out, "index.json")))
        assert index["seq_len"] == len(tokens)
        for rng in index["ranges"]:
            shard = batch_test.tiny_model.read_safetensors(os.path.join(work, kv_out, rng["file"]))
            got = shard["layers.0.key"][rng["row"]:rng["row"] + rng["length"]]
            want = kv["k0"][rng["start"]:rng["start"] + rng["length"]]
            assert np.abs(got - want).max() <= batch_test.TOL, (body["id"], np.abs(got - want).max())


def scenario_mixed(prefill, mpirun, work):
    lengths = [700, 64, 1500, 5, 300, 900, 130, 256, 77, 512, 1024, 33, 640, 200, 450, 90, 1200, 10, 380, 600]
    model, prompts = make_prompts(work, lengths)
    server = Server(prefill, mpirun, work, model)
    bodies = []
    for i, tokens in enumerate(prompts):
        body = {"id": f"r{i}", "priority": i % 3}
        body.update({"tokens": tokens.tolist()} if i % 2 else {"tokens_file": f"p{i}.npy"})
        if i % 4 == 1:
            body.update({"mode": "sparse", "tau": 1.0})
        if i % 3 == 0:
            body["kv_out"] = f"kv/r{i}"
        bodies.append(body)
    answers = [None] * len(bodies)

    def submit(i):
        answers[i] = server.call("POST", "/v1/prefill", bodies[i])

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (status, body, _) in enumerate(answers):
        assert status == 202 and body["state"] == "queued" and body["tokens"] == lengths[i], (i, status, body)
    status, body, _ = server.call("POST", "/v1/prefill", {"id": "emb", "embeddings_file": "model/embeddings.safetensors"})
    assert status == 202, (status, body)
    served = {}
    for i, tokens in enumerate(prompts):
        served[f"r{i}"] = server.wait(f"r{i}")
        check_result(model, work, served[f"r{i}"], tokens, bodies[i].get("kv_out"))
    served["emb"] = server.wait("emb")
    assert served["emb"]["state"] == "done", served["emb"]
    code, out = server.stop()
    print(out)
    assert code == 0, code
    same_as_batch(prefill, mpirun, work, model, bodies, served)
    print(f"ok: {len(prompts) + 1} concurrent requests, each equal to the numpy forward and to prefill run")


def same_as_batch(prefill, mpirun, work, model, bodies, served):
    """`prefill run` over the same prompts: the same top logits and density, request by request."""
    lines = []
    for i, b in enumerate(bodies):
        line = {"id": b["id"], "tokens": f"p{i}.npy", "priority": b["priority"]}
        line.update({k: b[k] for k in ("mode", "tau") if k in b})
        lines.append(json.dumps(line))
    lines.append(json.dumps({"id": "emb", "embeddings": "model/embeddings.safetensors"}))
    with open(os.path.join(work, "jobs.jsonl"), "w") as f:
        f.write("\n".join(lines) + "\n")
    p = batch_test.run(prefill, mpirun, work, model)
    assert p.returncode == 0, p.stdout + p.stderr
    records = {r["id"]: r for r in map(json.loads, open(os.path.join(work, "out", "results.jsonl")))}
    for rid, body in served.items():
        got, want = body["result"], records[rid]
        assert want["status"] == "ok" and got["ranks"] == want["ranks"], (rid, got["ranks"], want)
        assert got["density"] == want["density"], (rid, got["density"], want["density"])
        assert len(got["top_logits"]) == len(want["top_logits"]) > 0, (rid, got["top_logits"])
        for a, b in zip(got["top_logits"], want["top_logits"]):
            assert a["id"] == b["id"] and abs(a["logit"] - b["logit"]) <= 1e-5 * max(1, abs(b["logit"])), (rid, a, b)


def scenario_bad(prefill, mpirun, work):
    model, prompts = make_prompts(work, [1500, 64])
    server = Server(prefill, mpirun, work, model, ["--max-inline-tokens", "100", "--max-tokens-per-rank", "1024",
                                                   "--max-queued", "2"])
    status, _, _ = server.call("POST", "/v1/prefill", {"id": "good", "tokens_file": "p0.npy"})
    assert status == 202, status
    cases = [
        (b"{not json", 400, "not valid JSON"),
        ({"id": "x", "tokens": [1], "extra": 1}, 400, "unknown field 'extra'"),
        ({"id": "x", "tokens": list(range(101))}, 400, "at most 100"),
        ({"id": "x", "tokens_file": "missing.npy"}, 400, "does not exist"),
        ({"id": "x", "tokens_file": "../p0.npy"}, 400, "leaves the server's files root"),
        ({"id": "x", "tokens_file": "/etc/passwd"}, 400, "relative path"),
        ({"id": "x", "tokens": [1], "kv_target": "nohost"}, 400, "host:port"),
        ({"id": "x", "tokens": [100000]}, 400, "outside the model's vocabulary"),
        ({"id": "bad id!", "tokens": [1]}, 400, "id 'bad id!'"),
        ({"id": "x", "tokens": [1], "tokens_file": "p1.npy"}, 400, "exactly one"),
        ({"id": "x", "tokens": [1], "mode": "fast"}, 400, "'mode'"),
        ({"id": "good", "tokens": [1]}, 409, "exists already"),
    ]
    for body, want_status, want_text in cases:
        status, answer, _ = server.call("POST", "/v1/prefill", body)
        assert status == want_status and want_text in answer["error"], (body, status, answer)
    # 5000 tokens need 5 ranks of 1024: more than the 4 of this server.
    np.save(os.path.join(work, "long.npy"), np.zeros(5000, np.int32))
    status, answer, _ = server.call("POST", "/v1/prefill", {"id": "long", "tokens_file": "long.npy"})
    assert status == 400 and "5000 tokens" in answer["error"], (status, answer)
    status, answer, _ = server.call("POST", "/v1/prefill", b"x" * (100 * 12 + 70000))
    assert status == 413, (status, answer)
    assert server.call("GET", "/v1/prefill")[0] == 405
    assert server.call("GET", "/nope")[0] == 404
    assert server.call("GET", "/v1/requests/nope")[0] == 404
    # A full queue: 429 with Retry-After (the first requests may already run: submit until full).
    full = None
    for i in range(10):
        status, answer, headers = server.call("POST", "/v1/prefill", {"id": f"q{i}", "tokens_file": "p0.npy"})
        if status == 429:
            full = (answer, headers)
            break
        assert status == 202, (status, answer)
    assert full and "queue is full" in full[0]["error"] and full[1].get("Retry-After"), full
    body = server.wait("good")
    check_result(model, work, body, prompts[0], None)
    code, out = server.stop()
    print(out)
    assert code == 0, code
    print("ok: every bad request class answered, the good request undisturbed")


def queue_of_whole_world_requests(prefill, mpirun, work, prefix, n):
    """A server whose requests each need all 4 ranks (1500 tokens, at most 512 a rank), and n
    of them submitted: all but the first wait in the queue."""
    model, prompts = make_prompts(work, [1500])
    server = Server(prefill, mpirun, work, model, ["--max-tokens-per-rank", "512"])
    for i in range(n):
        assert server.call("POST", "/v1/prefill", {"id": f"{prefix}{i}", "tokens_file": "p0.npy"})[0] == 202
    return model, prompts, server


def wait_until_started(server, rid):
    deadline = time.time() + 60
    while server.call("GET", f"/v1/requests/{rid}")[1]["state"] == "queued" and time.time() < deadline:
        time.sleep(0.01)


def scenario_cancel(prefill, mpirun, work):
    model, prompts, server = queue_of_whole_world_requests(prefill, mpirun, work, "c", 8)
    status, answer, _ = server.call("DELETE", "/v1/requests/c7")
    assert status == 200 and answer["state"] == "cancelled", (status, answer)
    assert server.call("DELETE", "/v1/requests/c7")[0] == 409  # no longer queued
    wait_until_started(server, "c0")
    status, answer, _ = server.call("DELETE", "/v1/requests/c0")
    assert status == 409, (status, answer)  # running or done: not cancellable
    for i in range(7):
        check_result(model, work, server.wait(f"c{i}"), prompts[0], None)
    body = server.wait("c7")
    assert body["state"] == "cancelled" and body["result"] is None, body
    code, out = server.stop()
    assert code == 0, (code, out)
    print("ok: a queued request cancelled and never run, a started one refused")


def scenario_sigterm(prefill, mpirun, work):
    _, _, server = queue_of_whole_world_requests(prefill, mpirun, work, "s", 6)
    wait_until_started(server, "s0")
    states = {}
    for i in range(6):
        states[i] = server.call("GET", f"/v1/requests/s{i}")[1]["state"]
    code, out = server.stop()
    print(out)
    assert code == 0, f"SIGTERM must end the service with exit 0, got {code}"
    assert "stopped (drained)" in out, "the service must say it drained"
    assert "queued" in states.values(), f"nothing was queued at the signal: test too short ({states})"
    print(f"ok: drained on SIGTERM with states {states} at the signal, exit 0")


def scenario_apikey(prefill, mpirun, work):
    model, _ = make_prompts(work, [64])
    key = os.path.join(work, "key")
    with open(key, "w") as f:
        f.write("s3cret\n")
    server = Server(prefill, mpirun, work, model, ["--api-key-file", key])
    body = {"id": "k", "tokens": [1, 2, 3]}
    assert server.call("POST", "/v1/prefill", body)[0] == 401
    assert server.call("POST", "/v1/prefill", body, {"Authorization": "Bearer wrong"})[0] == 401
    assert server.call("GET", "/healthz")[0] == 200
    assert server.call("POST", "/v1/prefill", body, {"Authorization": "Bearer s3cret"})[0] == 202
    assert server.call("GET", "/v1/requests/k")[0] == 401
    code, out = server.stop()
    assert code == 0, (code, out)
    print("ok: the API key is required on /v1/ and only there")


def scenario_rankdies(prefill, mpirun, work):
    model, _ = make_prompts(work, [64])
    server = Server(prefill, mpirun, work, model)
    ranks = subprocess.run(["pgrep", "-s", str(server.proc.pid), "-x", "prefill"], capture_output=True,
                           text=True).stdout.split()
    assert len(ranks) == RANKS, ranks
    start = time.time()
    os.kill(int(ranks[-1]), signal.SIGKILL)
    server.proc.wait(timeout=30)
    took = time.time() - start
    time.sleep(0.2)
    out = "".join(server.lines)
    print(out)
    assert took <= 10, f"the job took {took:.1f} s to end after a rank died"
    assert server.proc.returncode != 0, "a dead rank must fail the job"
    assert re.search(r"rank \d+", out) and "signal 9" in out, "the message must name the rank and the cause"
    print(f"ok: a killed rank ended the job in {took:.1f} s, named in the output")


def scenario_load(prefill, mpirun, work):
    model, _ = make_prompts(work, [64])
    server = Server(prefill, mpirun, work, model)
    out = os.path.join(work, "load.json")
    p = subprocess.run([sys.executable, os.path.join(HERE, "..", "..", "bench", "serve_load.py"), "--url",
                        f"http://127.0.0.1:{server.port}", "--requests", "12", "--concurrency", "4", "--lengths",
                        "64,300,1000", "--vocab", str(batch_test.tiny_model.VOCAB), "--out", out],
                       capture_output=True, text=True, timeout=240)
    print(p.stdout + p.stderr)
    assert p.returncode == 0, p.returncode
    report = json.load(open(out))
    assert report["ok"] == 12 and report["requests_per_second"] > 0, report
    assert 0 < report["latency_seconds"]["p50"] <= report["latency_seconds"]["p99"], report
    assert report["prefill_seconds"]["p50"] > 0, report
    code, _ = server.stop()
    assert code == 0, code
    print("ok: serve_load.py reported 12 requests")


def main():
    scenario, prefill, mpirun = sys.argv[1], sys.argv[2], sys.argv[3:]
    work = tempfile.mkdtemp(prefix=f"serve_{scenario}_")
    try:
        globals()[f"scenario_{scenario}"](prefill, mpirun, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
