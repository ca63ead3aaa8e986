"""A rank killed mid-run ends the whole job within 10 s with a message naming it, leaves no
process behind, and the rerun of the batch completes with exactly one result per request.

  rank_failure_test.py PREFILL MPIRUN_ARGS...
"""
import os
import signal
import subprocess
import sys
import tempfile
import time
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scheduler"))
import batch_test  # noqa: E402


def rank_of(pid):
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    for kv in env:
        if kv.startswith(b"OMPI_COMM_WORLD_RANK="):
            return int(kv.split(b"=", 1)[1])
    return None


def main():
    prefill, mpirun = sys.argv[1], sys.argv[2:]
    work = tempfile.mkdtemp(prefix="rank_failure_")
    try:
        lengths = [500 + 41 * i for i in range(24)]
        model = batch_test.make_batch(work, lengths)
        job = batch_test.run(prefill, mpirun, work, model, background=True)
        records = os.path.join(work, "out", "records")
        deadline = time.time() + 120
        while time.time() < deadline and (not os.path.isdir(records) or len(os.listdir(records)) < 2):
            time.sleep(0.05)
        ranks = {rank_of(int(p)): int(p) for p in subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True,
                                                                text=True).stdout.split()}
        assert 1 in ranks, f"rank 1 not found among mpirun's children: {ranks}"
        killed_at = time.time()
        os.kill(ranks[1], signal.SIGKILL)
        out, _ = job.communicate(timeout=30)
        elapsed = time.time() - killed_at
        print(out)
        print(f"job ended {elapsed:.2f} s after rank 1 was killed, exit code {job.returncode}")
        assert elapsed < 10, "the other ranks must exit within 10 s"
        assert job.returncode != 0, "a lost rank must fail the job"
        assert "rank 1" in out and ("signal 9" in out or "Killed" in out), "the message must name the lost rank"
        time.sleep(0.2)
        orphans = [p for p in ranks.values() if os.path.exists(f"/proc/{p}") and
                   open(f"/proc/{p}/stat").read().split()[2] != "Z"]
        assert not orphans, f"processes left behind: {orphans}"
        assert len(os.listdir(records)) < len(lengths), "the job finished before the kill: test too short"
        rerun = batch_test.run(prefill, mpirun, work, model)
        print(rerun.stdout + rerun.stderr)
        assert rerun.returncode == 0
        batch_test.check_results(work, model, len(lengths))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
