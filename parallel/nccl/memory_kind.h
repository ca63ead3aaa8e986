// Which kind of memory a pointer is, for the communicators that take host or device buffers.
#pragma once

namespace prefill {

// Pageable or pinned host memory (anything that is not device or managed memory); null: false.
bool IsHostMemory(const void* p);

}  // namespace prefill
