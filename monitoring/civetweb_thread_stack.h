// Debian's civetweb (1.15) starts every thread with a fixed 100 KiB stack (built with
// USE_STACK_SIZE=102400; no run-time option changes it). glibc carves each thread's static
// TLS out of its stack, and this process loads OpenBLAS (60 KiB of TLS) and, in the CUDA
// build, cuBLAS (100 KiB): civetweb's threads then either fail to start ("Cannot create
// threads", EINVAL) or start with a few KiB of stack left and overflow into their thread
// control block while answering a scrape (the segfault at exit that issue 10 chased).
//
// So this process raises the floor: pthread_attr_setstacksize is interposed (the
// executable's definition wins over libc's for libcivetweb's calls) and sizes below
// kMinThreadStackBytes become kMinThreadStackBytes. Larger requests pass unchanged.
#pragma once

#include <cstddef>

namespace prefill::monitoring {

inline constexpr size_t kMinThreadStackBytes = size_t{1} << 20;

// True when the interposer is in this process and found libc's function. Exposer::Create
// calls it, which also keeps the interposer's object file in every binary that serves /metrics.
bool ThreadStackFloorActive();

}  // namespace prefill::monitoring
