"""End-to-end tests of the KV handoff over UCX (docs/kv-handoff.md) on loopback.

  kvhandoff_test.py SCENARIO PREFILL KV_RECEIVER MPIRUN_ARGS... : SCENARIO is one of
    files_equal     : 4 ranks `prefill model --kv-target --kv-out` to one kv-receiver: the
                      received cache equals the file output byte for byte, and the float64
                      numpy reference (tests/runtime/tiny_model.py).
    receiver_killed : `prefill run` of 4 requests; the receiver dies (--die-after-bytes) in the
                      middle of the second: that request is recorded failed with a clear error
                      and was never acknowledged (the receiver published nothing of it), the
                      job goes on (the later ones fail to connect); a rerun with a live receiver
                      completes the rest: exactly one ok result per request, each received cache
                      equal to its file.
    serve           : `prefill serve` on 4 ranks takes 3 requests with a kv_target and a kv_out;
                      each is done only once acknowledged, and each received cache equals its
                      file output byte for byte.
    receiver_down   : nothing listens at --kv-target: `prefill model` fails with one clear line;
                      `prefill run` records every request failed and exits 0. Then kv-receiver
                      ends on SIGTERM with exit 0.
The UCX transports come from the environment (the CMake file sets UCX_TLS=tcp and
UCX_NET_DEVICES=lo: loopback TCP works in any container).
"""
import filecmp
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "..", "runtime", "tiny_model.py")
sys.path.insert(0, os.path.join(HERE, "..", "runtime"))
import tiny_model  # noqa: E402

TOKENS = 500  # not a multiple of 4 ranks x 2 zigzag chunks x 64: padded, so ranges are uneven


class Receiver:
    """A kv-receiver on 127.0.0.1 with a port the OS picked (no race over free ports)."""

    def __init__(self, binary, work, name, *extra):
        self.port_file = os.path.join(work, f"{name}.port")
        self.log = open(os.path.join(work, f"{name}.log"), "w+")
        self.proc = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--port-file", self.port_file, *extra],
                                     stdout=self.log, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 30
        while not os.path.exists(self.port_file):
            assert self.proc.poll() is None, f"kv-receiver exited early:\n{self.output()}"
            assert time.time() < deadline, "kv-receiver did not start listening within 30 s"
            time.sleep(0.02)
        self.address = f"127.0.0.1:{open(self.port_file).read().strip()}"

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def wait(self, timeout=60):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"kv-receiver did not exit within {timeout} s:\n{self.output()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.wait(30)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def same_tree(a, b):
    names_a, names_b = sorted(os.listdir(a)), sorted(os.listdir(b))
    assert names_a == names_b, (a, names_a, b, names_b)
    for n in names_a:
        assert filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False), f"{a}/{n} differs from {b}/{n}"
    return names_a


def make_batch(work, n):
    model = os.path.join(work, "model")
    subprocess.run([sys.executable, TINY, "make", model, "--arch", "llama", "--seq-len", "64"], check=True)
    rng = np.random.default_rng(5)
    lines = []
    for i in range(n):
        np.save(os.path.join(work, f"p{i}.npy"), rng.integers(0, tiny_model.VOCAB, size=TOKENS).astype(np.int32))
        lines.append(json.dumps({"id": f"p{i}", "tokens": f"p{i}.npy"}))
    with open(os.path.join(work, "jobs.jsonl"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return model


def run_batch(prefill, mpirun, work, model, target, extra=()):
    cmd = [*mpirun, "-np", "4", prefill, "run", "--manifest", os.path.join(work, "jobs.jsonl"), "--model", model,
           "--out", os.path.join(work, "out"), "--block", "64", "--min-tokens-per-rank", "64", "--mode", "dense",
           "--kv-dtype", "f32", "--progress", "log", "--kv-target", target, "--kv-timeout", "20", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    print(p.stdout + p.stderr)
    return p


def records(work):
    return [json.loads(l) for l in open(os.path.join(work, "out", "results.jsonl")).read().splitlines()]


def files_equal(prefill, receiver_bin, mpirun, work):
    model = os.path.join(work, "model")
    subprocess.run([sys.executable, TINY, "make", model, "--arch", "llama", "--seq-len", str(TOKENS)], check=True)
    recv = Receiver(receiver_bin, work, "recv", "--out", os.path.join(work, "received"), "--exit-after", "1")
    files = os.path.join(work, "files", "doc1")
    report = os.path.join(work, "report.json")
    p = subprocess.run([*mpirun, "-np", "4", prefill, "model", "--model", model, "--tokens",
                        os.path.join(model, "tokens.npy"), "--block", "64", "--mode", "dense", "--kv-dtype", "f32",
                        "--kv-out", files, "--kv-target", recv.address, "--kv-timeout", "20", "--json", report],
                       capture_output=True, text=True, timeout=240)
    print(p.stdout + p.stderr)
    assert p.returncode == 0, p.returncode
    assert f"KV handoff {recv.address}: acknowledged" in p.stdout
    assert recv.wait() == 0, recv.output()
    out = recv.output()
    print(out)
    assert "doc1 acknowledged: 4 ranks, 2 layers, 500 tokens" in out, out
    received = os.path.join(work, "received", "kv", "doc1")
    names = same_tree(files, received)
    assert names == ["index.json"] + [f"rank{r}.safetensors" for r in range(4)], names
    r = json.load(open(report))
    assert [h["sink"] for h in r["kv_handoff"]] == ["file", "ucx"], r["kv_handoff"]
    subprocess.run([sys.executable, TINY, "compare", model, report, received], check=True)
    print("ok: the received KV cache equals the file output byte for byte, and the numpy reference")


def receiver_killed(prefill, receiver_bin, mpirun, work):
    n = 4
    model = make_batch(work, n)
    # Bytes of one request: 2 layers x (key, value) x 512 padded rows (all ranks) x 2 heads x 64 x f32.
    request_bytes = 2 * 2 * 512 * 2 * 64 * 4
    received = os.path.join(work, "received")
    recv = Receiver(receiver_bin, work, "recv1", "--out", received, "--die-after-bytes", str(request_bytes * 3 // 2))
    p = run_batch(prefill, mpirun, work, model, recv.address)
    assert p.returncode == 0, f"the job must go on after the receiver died, exit {p.returncode}"
    assert recv.wait() == 3, "the receiver should have died by --die-after-bytes"
    print(recv.output())
    recs = records(work)
    assert [r["id"] for r in recs] == [f"p{i}" for i in range(n)], recs
    assert recs[0]["status"] == "ok" and recs[0]["kv_target"] == recv.address, recs[0]
    died = recs[1]
    print(f"p1's record: {died['error']}")
    assert died["status"] == "error", died
    assert "connection lost" in died["error"] and "'p1' was not acknowledged" in died["error"], died["error"]
    for r in recs[2:]:
        assert r["status"] == "error" and "cannot reach the KV receiver" in r["error"], r
    assert sorted(os.listdir(os.path.join(received, "kv"))) == ["p0"], "only the acknowledged request was published"
    assert "p0 acknowledged" in recv.output() and "p1 acknowledged" not in recv.output()

    recv = Receiver(receiver_bin, work, "recv2", "--out", received, "--exit-after", str(n - 1))
    p = run_batch(prefill, mpirun, work, model, recv.address)
    assert p.returncode == 0, p.returncode
    assert "1 already done" in p.stdout, "the acknowledged request must not be resent"
    assert recv.wait() == 0, recv.output()
    print(recv.output())
    recs = records(work)
    assert [r["id"] for r in recs] == [f"p{i}" for i in range(n)], f"one result per request: {recs}"
    assert all(r["status"] == "ok" for r in recs), recs
    for r in recs:
        same_tree(r["kv_cache"], os.path.join(received, "kv", r["id"]))
    print(f"ok: p1 failed unacknowledged when the receiver died, the job went on, the rerun completed all {n}")


def receiver_down(prefill, receiver_bin, mpirun, work):
    target = f"127.0.0.1:{free_port()}"
    model = make_batch(work, 3)
    start = time.time()
    p = subprocess.run([*mpirun, "-np", "4", prefill, "model", "--model", model, "--tokens",
                        os.path.join(work, "p0.npy"), "--block", "64", "--mode", "dense", "--kv-target", target,
                        "--kv-timeout", "20"], capture_output=True, text=True, timeout=240)
    print(p.stdout + p.stderr)
    assert p.returncode == 1, p.returncode
    want = f"prefill: error: cannot reach the KV receiver at {target}"
    assert want in p.stderr and p.stderr.count("prefill: error:") == 1, p.stderr
    p = run_batch(prefill, mpirun, work, model, target)
    assert p.returncode == 0, p.returncode
    assert "0 ok, 3 failed" in p.stdout, p.stdout
    for r in records(work):
        assert r["status"] == "error" and r["error"].startswith(f"cannot reach the KV receiver at {target}"), r
    print(f"ok: no receiver: one clear error, the batch went on and recorded each request failed "
          f"({time.time() - start:.1f} s in all)")
    recv = Receiver(receiver_bin, work, "recv", "--verify-only")
    recv.proc.terminate()
    assert recv.wait(10) == 0, f"SIGTERM must end kv-receiver with exit 0:\n{recv.output()}"
    print("ok: kv-receiver ends on SIGTERM with exit 0")


def serve(prefill, receiver_bin, mpirun, work):
    sys.path.insert(0, os.path.join(HERE, "..", "scheduler"))
    import serve_test  # noqa: E402

    model = make_batch(work, 3)
    received = os.path.join(work, "received")
    recv = Receiver(receiver_bin, work, "recv", "--out", received, "--exit-after", "3")
    server = serve_test.Server(prefill, mpirun, work, model, ["--min-tokens-per-rank", "64", "--kv-timeout", "20"])
    for i in range(3):
        status, body, _ = server.call("POST", "/v1/prefill", {"id": f"p{i}", "tokens_file": f"p{i}.npy",
                                                             "kv_target": recv.address, "kv_out": f"kv/p{i}"})
        assert status == 202 and body["ranks"] == 4, (status, body)
    for i in range(3):
        body = server.wait(f"p{i}")
        assert body["state"] == "done" and body["result"]["kv_target"] == recv.address, body
        same_tree(os.path.join(work, "kv", f"p{i}"), os.path.join(received, "kv", f"p{i}"))
    code, out = server.stop()
    assert code == 0, (code, out)
    assert recv.wait(30) == 0, recv.output()
    print("ok: 3 served requests handed off by all 4 ranks, each received cache equal to its file output")


def main():
    scenario, prefill, receiver_bin, mpirun = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    work = tempfile.mkdtemp(prefix=f"kvhandoff_{scenario}_")
    try:
        {"files_equal": files_equal, "receiver_killed": receiver_killed,
         "receiver_down": receiver_down, "serve": serve}[scenario](prefill, receiver_bin, mpirun, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
