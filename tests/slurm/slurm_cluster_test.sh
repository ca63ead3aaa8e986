#!/usr/bin/env bash
# slurm_cluster_test.sh PREFILL_BIN REPO_ROOT: a real one-node Slurm cluster on localhost runs
# the sbatch templates of launch/slurm/ and the test checks what the jobs wrote.
#
# It starts its own munged (private socket, so a munged already running is left alone),
# slurmctld -D and slurmd -D as root, with a slurm.conf generated in a temporary folder
# (SLURM_CONF points every Slurm command at it; free ports; CPU only, 4 CPUs, and 4 fake
# GPUs: /dev/null device nodes as GRES, so the GPU template's allocation is exercised too).
# Then, all jobs at once (the node is shared, OverSubscribe=FORCE):
#   srun        prefill-cpu.sbatch, 4 ranks by srun --mpi=pmix: the `prefill attention`
#               JSON report says world_size 4 and a small error against fp64;
#   mpirun      the same with PREFILL_LAUNCHER=mpirun (mpirun inside the allocation);
#   gpu         prefill-gpu.sbatch with --gpus-per-node=4 (fake GPUs, --device cpu);
#   refusal     `prefill` run straight from a 2-task batch script (a world of 1 while Slurm
#               says 2): exit 2 with the message that says how to launch;
#   run         prefill-cpu.sbatch running `prefill run` over 32 prompts of a tiny model;
#               its Prometheus file_sd targets are checked while it runs; then SIGTERM to
#               the batch shell (what --signal=B:TERM@120 sends before the time limit): the
#               ranks stop cleanly, the job requeues itself, the rerun resumes and finishes
#               with one result per prompt;
#   run_mpirun  the same under mpirun (one node: mpirun's own ranks get the SIGTERM);
#   limit       a real time limit (--time=1 --signal=B:TERM@55) on a stand-in for prefill:
#               the signal reaches the batch shell and the ranks, exit 0;
#   mpi=none    `srun --mpi=none prefill ...` (no PMI): Debian's OpenMPI aborts in MPI_Init
#               before prefill runs ("OMPI was not built with SLURM's PMI support"), so the
#               refusal there is OpenMPI's; asserted as such.
# Every daemon it started is stopped on exit and the temporary folder removed (kept with
# PREFILL_SLURM_TEST_KEEP=1). Exit 77 (ctest SKIP) when Slurm or munge is not installed or
# the user is not root. About 35-45 s, most of it the requeue wait and the time limit.
set -euo pipefail
prefill="$(realpath "$1")" repo="$(realpath "$2")"
py=/usr/bin/python3
# Run inside another Slurm job (CI on a cluster), its SLURM_* variables would point srun and
# sbatch at a job our cluster does not know.
unset $(compgen -v SLURM_) || true
start_s=$SECONDS
log() { printf '[%3ds] %s\n' $((SECONDS - start_s)) "$*"; }

for tool in munged slurmctld slurmd sbatch srun scontrol squeue sinfo scancel setpriv; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed (apt-get install slurm-wlm munge)"; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "SKIP: slurmd must run as root"; exit 77; }
id munge >/dev/null 2>&1 && [ -f /etc/munge/munge.key ] || { echo "SKIP: no munge user or /etc/munge/munge.key"; exit 77; }

# Short path: Slurm's PMIx and munge put Unix sockets under it (at most 108 bytes).
work="$(mktemp -d /tmp/prefill-slurm.XXXXXX)"
chmod 755 "$work"
mkdir -p "$work"/{state,spool,log,munge,out,file_sd}
chown munge: "$work/munge"
chmod 755 "$work/munge"  # munged: clients need to reach the socket
daemons=()  # "name:pid" of what this test started
watchdog=""

cleanup() {
  local rc=$?
  set +e
  [ -z "$watchdog" ] || kill "$watchdog" 2>/dev/null
  if [ -n "${SLURM_CONF:-}" ] && scontrol ping >/dev/null 2>&1; then
    local jobs
    jobs="$(squeue -h -o %i 2>/dev/null)"
    if [ -n "$jobs" ]; then
      log "cancelling leftover jobs: $jobs"
      scancel $jobs
      for _ in $(seq 30); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
    fi
  fi
  local entry pid
  for ((i = ${#daemons[@]} - 1; i >= 0; i--)); do
    entry="${daemons[$i]}" pid="${entry#*:}"
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "${entry%%:*} ($pid) ignored SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  done
  if ((rc != 0)); then
    for f in "$work"/log/* "$work"/munge/munged.log "$work"/out/*.out; do
      [ -f "$f" ] && { echo "===== $f (last 40 lines)"; tail -n 40 "$f"; }
    done
  fi
  if [ -n "${PREFILL_SLURM_TEST_KEEP:-}" ]; then
    log "stopped ${#daemons[@]} daemons, kept $work (PREFILL_SLURM_TEST_KEEP); exit $rc"
  else
    rm -rf "$work"
    log "stopped ${#daemons[@]} daemons, removed $work; exit $rc"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
# ctest's TIMEOUT (300 s) kills without a chance to clean up: give up first.
(sleep 240 && kill -TERM $$) >/dev/null 2>&1 &
watchdog=$!

fail() { log "FAIL: $*"; exit 1; }

# The metrics endpoint takes 4 consecutive ports (base + local rank): a base whose 4 ports are
# free now, below the kernel's ephemeral range (32768+), where concurrent tests' outgoing
# connections would otherwise take them between this check and the job.
read -r ctld_port slurmd_port metrics_port < <("$py" -c '
import random, socket
def free(ports):
    held = []
    try:
        for p in ports:
            s = socket.socket(); held.append(s); s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        for s in held: s.close()
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
base = next(b for b in iter(lambda: random.randrange(20000, 32000, 4), None) if free(range(b, b + 4)))
print(*[x.getsockname()[1] for x in s], base)')
host="$(hostname -s)"
export SLURM_CONF="$work/slurm.conf"
# Fake GPUs: Slurm drops GPUs without device files and wants character devices, so four
# copies of /dev/null (1:3) stand in; enough for --gpus-per-node and CUDA_VISIBLE_DEVICES.
# Without the right to make device nodes (a container without CAP_MKNOD) the GPU job is left out.
mkdir "$work/dev"
gres=""
if (for i in 0 1 2 3; do mknod "$work/dev/nvidia$i" c 1 3 || exit 1; done) 2>/dev/null; then
  echo "NodeName=$host Name=gpu File=$work/dev/nvidia[0-3]" >"$work/gres.conf"
  gres="Gres=gpu:4"
else
  log "cannot mknod: no fake GPUs, the GPU template's job is left out"
fi

# cred_expire: a requeued job waits this long before it may start again (default 120 s).
cat >"$SLURM_CONF" <<EOF
ClusterName=prefilltest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$work/munge/munge.socket,cred_expire=10
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerParameters=sched_interval=2
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
KillWait=5
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=4 $gres State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground \
  --socket="$work/munge/munge.socket" --pid-file="$work/munge/munged.pid" \
  --log-file="$work/munge/munged.log" --seed-file="$work/munge/munged.seed" >"$work/log/munged.out" 2>&1 &
daemons+=("munged:$!")
for _ in $(seq 50); do [ -S "$work/munge/munge.socket" ] && break; sleep 0.1; done
[ -S "$work/munge/munge.socket" ] || fail "munged did not start"
slurmctld -D -i >"$work/log/slurmctld.out" 2>&1 &
daemons+=("slurmctld:$!")
slurmd -D -N "$host" >"$work/log/slurmd.out" 2>&1 &
daemons+=("slurmd:$!")
state=""
for _ in $(seq 100); do
  state="$(sinfo -h -n "$host" -o %T 2>/dev/null || true)"
  [ "$state" = idle ] && break
  sleep 0.2
done
[ "$state" = idle ] || fail "node $host is '$state', not idle, after 20 s"
log "cluster up: munged, slurmctld (port $ctld_port), slurmd (port $slurmd_port); node $host idle"

# Jobs. The templates' #SBATCH defaults are overridden for this 4-CPU node.
out="$work/out"
sb=(sbatch --parsable --chdir="$out" --output="$out/%x-%j.out" --time=5 --nodes=1 --cpus-per-task=1)
export PREFILL_HOME="$repo" PREFILL_BIN="$prefill"
# The node claims 4 CPUs on fewer cores and jobs share them: without yielding, OpenMPI's
# busy-polling ranks (started by srun, OpenMPI cannot tell) starve each other (8x slower).
export OMPI_MCA_mpi_yield_when_idle=1
attention=(attention --workload needle --seq-len 4096 --heads 4 --kv-heads 2 --tau 0.99 --check)
cpu="$repo/launch/slurm/prefill-cpu.sbatch" gpu="$repo/launch/slurm/prefill-gpu.sbatch"

# A tiny model and 32 prompts for `prefill run`.
"$py" "$repo/tests/runtime/tiny_model.py" make "$work/model" --arch llama --seq-len 64 >/dev/null
"$py" - "$work" <<'EOF'
import json, sys
import numpy as np
work = sys.argv[1]
rng = np.random.default_rng(7)
with open(f"{work}/jobs.jsonl", "w") as f:
    for i in range(32):
        np.save(f"{work}/p{i}.npy", rng.integers(0, 300, size=400 + 37 * i).astype(np.int32))
        f.write(json.dumps({"id": f"p{i}", "tokens": f"{work}/p{i}.npy"}) + "\n")
EOF

job_srun=$("${sb[@]}" --job-name=srun --ntasks-per-node=4 "$cpu" "${attention[@]}" --json "$out/srun.json")
job_mpirun=$(PREFILL_LAUNCHER=mpirun "${sb[@]}" --job-name=mpirun --ntasks-per-node=4 "$cpu" "${attention[@]}" --json "$out/mpirun.json")
job_gpu=none
if [ -n "$gres" ]; then
  job_gpu=$("${sb[@]}" --job-name=gpu --ntasks-per-node=4 --gpus-per-node=4 "$gpu" "${attention[@]}" --device cpu \
    --json "$out/gpu.json")
fi
job_refusal=$("${sb[@]}" --job-name=refusal --ntasks=2 --wrap "'$prefill' ${attention[*]}; echo prefill-exit=\$?")
submit_run() {  # NAME LAUNCHER [VAR=VALUE...]: `prefill run` over the 32 prompts, output in $work/NAME
  local name=$1 launcher=$2
  shift 2
  env PREFILL_LAUNCHER="$launcher" "$@" "${sb[@]}" --job-name="$name" --ntasks-per-node=4 "$cpu" run \
    --manifest "$work/jobs.jsonl" --model "$work/model" --out "$work/$name" --block 64 --min-tokens-per-rank 128 \
    --mode dense --kv-dtype f32 --progress log
}
job_run=$(submit_run run srun PREFILL_METRICS_PORT="$metrics_port" PREFILL_FILE_SD_DIR="$work/file_sd")
job_run_mpirun=$(submit_run run_mpirun mpirun)
# The real time limit: --time=1 with --signal=B:TERM@55 signals the batch shell 5 to 35 s in
# (slurmctld checks limits every 30 s). A stand-in for `prefill run` stops cleanly on SIGTERM.
cat >"$work/stand_in_run.sh" <<'EOF'
#!/usr/bin/env bash
stop=0
trap 'echo "rank $SLURM_PROCID: SIGTERM"; stop=1' TERM
for _ in $(seq 1200); do
  ((stop)) && { echo "prefill run: 0 ok (stopped by a signal: rerun to finish)"; exit 0; }
  sleep 0.1
done
echo "rank $SLURM_PROCID: never signalled"
exit 1
EOF
chmod +x "$work/stand_in_run.sh"
job_limit=$(PREFILL_BIN="$work/stand_in_run.sh" PREFILL_REQUEUE=0 sbatch --parsable --chdir="$out" \
  --output="$out/%x-%j.out" --time=1 --signal=B:TERM@55 --job-name=limit --nodes=1 --ntasks-per-node=2 \
  --cpus-per-task=1 "$cpu" run)
log "submitted jobs: srun $job_srun, mpirun $job_mpirun, gpu $job_gpu, refusal $job_refusal," \
    "run $job_run, run_mpirun $job_run_mpirun, limit $job_limit"

job_field() { scontrol show job -o "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
# Waits for a job to end (bounded); prints its final state and exit code.
wait_job() {
  local id=$1 limit=$2 state=""
  for _ in $(seq $((limit * 5))); do
    state="$(job_field "$id" JobState)"
    case "$state" in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE) break ;;
    esac
    sleep 0.2
  done
  echo "$state $(job_field "$id" ExitCode)"
}
check_report() {  # JOB NAME: the job completed and its JSON report says 4 ranks, small error
  local result
  result="$(wait_job "$1" 90)"
  [ "$result" = "COMPLETED 0:0" ] || fail "job $2 ($1): $result"
  "$py" - "$out/$2.json" <<'EOF' || fail "job $2: report"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["world_size"] == 4, f"world_size {r['world_size']}, want 4"
assert len(r["ranks"]) == 4, r["ranks"]
assert r["rel_l2_err"] <= 0.02, f"rel_l2_err {r['rel_l2_err']}"
assert r["needle_recall"] == 1.0, r["needle_recall"]
print(f"  {sys.argv[1].rsplit('/', 1)[1]}: world_size 4, rel_l2_err {r['rel_l2_err']:.2e}, density {r['density']:.3f}")
EOF
  log "job $2 ($1): completed, report ok"
}

# No PMI: OpenMPI itself refuses before prefill's check can run.
set +e
none_out="$(timeout 60 srun -n 2 --mpi=none "$prefill" "${attention[@]}" 2>&1)"
none_rc=$?
set -e
((none_rc != 0)) || fail "srun --mpi=none: exit 0, want a refusal"
grep -q "OMPI was not built with SLURM's PMI support" <<<"$none_out" \
  || grep -q "Slurm says 2 tasks but MPI sees a world of 1" <<<"$none_out" \
  || { echo "$none_out"; fail "srun --mpi=none: neither OpenMPI's nor prefill's refusal"; }
log "srun --mpi=none: refused (exit $none_rc), no ranks ran alone"

# The batch jobs: once each has 3 results, stop it the way the time limit does (SIGTERM to
# the batch shell: --signal=B:TERM@120); check the srun job's Prometheus targets first.
wait_results() {  # NAME: bounded wait for 3 results
  local records="$work/$1/records"
  for _ in $(seq 600); do
    [ -d "$records" ] && (($(ls "$records" | wc -l) >= 3)) && return 0
    sleep 0.1
  done
  fail "$1: fewer than 3 results after 60 s"
}
wait_results run
"$py" - "$work/file_sd/prefill-$job_run.json" "$host" "$metrics_port" "$job_run" <<'EOF' || fail "run: file_sd targets"
import json, sys
path, host, port, job = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
targets = json.load(open(path))
assert [t["labels"]["rank"] for t in targets] == ["0", "1", "2", "3"], targets
assert [t["targets"] for t in targets] == [[f"{host}:{port + r}"] for r in range(4)], targets
assert all(t["labels"]["job_id"] == job for t in targets), targets
print(f"  {path.rsplit('/', 1)[1]}: 4 targets {host}:{port}..{port + 3}, job_id {job}")
EOF
scancel --batch --signal=TERM "$job_run"
log "run ($job_run): file_sd ok; SIGTERM to its batch shell after $(ls "$work/run/records" | wc -l) results"
wait_results run_mpirun
scancel --batch --signal=TERM "$job_run_mpirun"
log "run_mpirun ($job_run_mpirun): SIGTERM to its batch shell after $(ls "$work/run_mpirun/records" | wc -l) results"

check_report "$job_srun" srun
check_report "$job_mpirun" mpirun
if [ "$job_gpu" != none ]; then
  check_report "$job_gpu" gpu
fi

result="$(wait_job "$job_refusal" 60)"
[ "$result" = "COMPLETED 0:0" ] || fail "job refusal: $result"
grep -q 'prefill-exit=2' "$out/refusal-$job_refusal.out" || fail "refusal: prefill did not exit 2"
grep -q 'Slurm says 2 tasks but MPI sees a world of 1: launch with `srun --mpi=pmix`' "$out/refusal-$job_refusal.out" \
  || fail "refusal: message missing"
log "job refusal ($job_refusal): exit 2 with: $(grep -o 'Slurm says.*' "$out/refusal-$job_refusal.out")"

check_resumed() {  # JOB NAME: stopped cleanly, requeued once, resumed, one result per prompt
  local id=$1 name=$2 result restarts log_file="$out/$2-$1.out"
  result="$(wait_job "$id" 90)"
  [ "$result" = "COMPLETED 0:0" ] || fail "job $name: $result"
  restarts="$(job_field "$id" Restarts)"
  [ "$restarts" = 1 ] || fail "$name: $restarts restarts, want 1"
  for want in "SIGTERM: asking the ranks" "stopped by a signal: rerun to finish" "requeueing job $id" "(restart 1)"; do
    grep -qF "$want" "$log_file" || fail "$name: log lacks '$want'"
  done
  ! grep -q "forcing job termination" "$log_file" || fail "$name: srun was signalled and killed its tasks"
  "$py" - "$work/$name/results.jsonl" "$log_file" <<'EOF' || fail "$name: results"
import json, re, sys
records = [json.loads(line) for line in open(sys.argv[1])]
ids = [r["id"] for r in records]
assert ids == [f"p{i}" for i in range(32)], f"one result per prompt in order: {ids}"
assert all(r["status"] == "ok" for r in records), [r for r in records if r["status"] != "ok"]
log = open(sys.argv[2]).read()
first = re.search(r"prefill run: (\d+) ok, \d+ failed, 0 already done.*stopped by a signal", log)
second = first and re.search(r"prefill run: (\d+) ok, \d+ failed, (\d+) already done", log[first.end():])
assert first and second, "two runs, the first stopped"
assert int(first.group(1)) < 32 and int(second.group(2)) == int(first.group(1)), (first.group(0), second.group(0))
print(f"  first run stopped after {first.group(1)} prompts, the requeued run did the other {second.group(1)}")
EOF
  log "job $name ($id): stopped by SIGTERM, requeued, resumed: 32 results"
}
check_resumed "$job_run" run
[ ! -e "$work/file_sd/prefill-$job_run.json" ] || fail "run: file_sd targets left behind"
check_resumed "$job_run_mpirun" run_mpirun
result="$(wait_job "$job_limit" 70)"
[ "$result" = "COMPLETED 0:0" ] || fail "job limit: $result"
for want in "SIGTERM: asking the ranks" "rank 0: SIGTERM" "rank 1: SIGTERM" "prefill exited with 0"; do
  grep -qF "$want" "$out/limit-$job_limit.out" || fail "limit: log lacks '$want'"
done
log "job limit ($job_limit): the time limit's SIGTERM reached the batch shell and both ranks; exit 0"
log "PASS"
