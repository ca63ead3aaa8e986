"""Writes a small safetensors file of q, k, v for the CLI tests, independently of the C++
writer: write_qkv.py OUT L H HKV D [--break {missing_v,bad_k_shape,bad_dtype,truncated}]."""
import json
import struct
import sys

import numpy as np


def main():
    out, L, H, HKV, D = sys.argv[1], *map(int, sys.argv[2:6])
    brk = sys.argv[7] if len(sys.argv) > 7 else ""
    rng = np.random.default_rng(0)
    tensors = {"q": rng.standard_normal((L, H, D)).astype(np.float32),
               "k": rng.standard_normal((L, HKV, D)).astype(np.float32),
               "v": rng.standard_normal((L, HKV, D)).astype(np.float32)}
    if brk == "missing_v":
        del tensors["v"]
    if brk == "bad_k_shape":
        tensors["k"] = rng.standard_normal((L, HKV, D // 2)).astype(np.float32)
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.tobytes()
        dtype = "F64" if (brk == "bad_dtype" and name == "q") else "F32"
        if dtype == "F64":
            data = t.astype(np.float64)[..., : D // 2].tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    payload = struct.pack("<Q", len(text)) + text + b"".join(blobs)
    if brk == "truncated":
        payload = payload[: len(payload) // 2]
    with open(out, "wb") as f:
        f.write(payload)


if __name__ == "__main__":
    main()
