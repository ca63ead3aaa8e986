#!/bin/sh
# The whole-model prefill on GPUs (`prefill model --device cuda`, `prefill run --device cuda`)
# against the float64 numpy forward of tests/runtime/tiny_model.py: Llama and Qwen2, dense and
# sparse at tau=1, a batch through the CUDA groups (ncclCommSplit), and 2 and 4 ranks sharing
# the GPU (--comm host-staged: the context-parallel path of several GPUs, on one).
#
#   model_on_gpu.sh PREFILL WORKDIR [LAUNCHER...]
# LAUNCHER: mpirun and its options but -np (one rank: `-np 1` is added); none runs the rank as
# an MPI singleton (a machine without mpirun). RANKS_LAUNCH (default: LAUNCHER) launches the
# several-rank runs; with neither they are skipped.
# PYTHON (default /usr/bin/python3) must have numpy. Exit 77 (skipped) without a GPU.
#
# Tolerances: the CPU path matches float64 to 1e-4; the GPU rounds every GEMM input and the
# attention's Q/K/V to bf16 (relative 2^-9 each), which after two layers leaves errors of a
# few 1e-3 relative to the largest logit or KV value: 3e-2 still catches any wrong op
# (a wrong RoPE pairing, a missing bias or norm moves them by O(1)).
set -u
prefill=$1 work=$2
shift 2
py=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
tiny=$here/../runtime/tiny_model.py
if ! nvidia-smi -L 2>/dev/null | grep -q GPU; then
  echo "SKIP: no GPU (nvidia-smi lists none): the CUDA model path is not tested here"
  exit 77
fi
rm -rf "$work" && mkdir -p "$work" || exit 1
launch="$*"  # mpirun's own arguments carry no spaces
fail=0
for arch in llama qwen2; do
  "$py" "$tiny" make "$work/$arch" --arch $arch --seq-len 700 >/dev/null || exit 1
  for mode in dense sparse; do
    out=$work/${arch}_$mode
    echo "== $arch $mode"
    $launch ${launch:+-np 1} "$prefill" model --device cuda --model "$work/$arch" --tokens "$work/$arch/tokens.npy" --block 128 \
      --mode $mode --tau 1.0 --kv-out "$out" --kv-dtype f32 --json "$out.json" || { fail=1; continue; }
    # bf16 activations: K reaches the cache through 3 roundings to bf16 (GEMM output, bias,
    # RoPE; V through 2), each within 2^-9 of the value, on top of the bf16 error the layer's
    # input carries; relative to the tensor's largest value, 1.5e-2 (measured: 0.9e-2, qwen2).
    "$py" "$tiny" compare "$work/$arch" "$out.json" "$out" --tol-logits 3e-2 --tol-kv 1.5e-2 || fail=1
  done
done
echo "== a request larger than the GPU allows is refused up front, naming the GPU's figure"
out=$work/too_big
if $launch ${launch:+-np 1} "$prefill" model --device cuda --model "$work/llama" --tokens "$work/llama/tokens.npy" \
  --memory-per-rank 100000 --mode dense --json "$out.json" >"$out.log" 2>&1; then
  echo "FAIL: a 100 kB budget was accepted"; fail=1
elif ! grep -q "of GPU memory per rank" "$out.log"; then
  echo "FAIL: no GPU memory figure in the refusal:"; cat "$out.log"; fail=1
fi
echo "== 2 and 4 ranks on one GPU (--comm host-staged), llama, both layouts"
ranks_launch=${RANKS_LAUNCH:-$launch}
if [ -z "$ranks_launch" ]; then
  echo "SKIP: no mpirun (LAUNCHER or RANKS_LAUNCH): several ranks on one GPU not tested"
else
  for np in 2 4; do
    for case in "dense zigzag" "sparse contiguous" "sparse zigzag"; do
      set -- $case
      out=$work/llama_$1_$2_np$np
      echo "== llama $1 $2, $np ranks"
      $ranks_launch -np $np "$prefill" model --device cuda --comm host-staged --model "$work/llama" \
        --tokens "$work/llama/tokens.npy" --block 128 --layout $2 --mode $1 --tau 1.0 --kv-out "$out" --kv-dtype f32 \
        --json "$out.json" || { fail=1; continue; }
      "$py" "$tiny" compare "$work/llama" "$out.json" "$out" --tol-logits 3e-2 --tol-kv 1.5e-2 || fail=1
    done
  done
fi
echo "== batch (prefill run --device cuda)"
BATCH_DEVICE=cuda BATCH_RANKS=1 "$py" "$here/../scheduler/batch_test.py" mixed "$prefill" $launch || fail=1
[ $fail = 0 ] && echo "model_on_gpu: all passed"
exit $fail
