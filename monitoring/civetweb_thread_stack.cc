#include "monitoring/civetweb_thread_stack.h"

#include <dlfcn.h>
#include <pthread.h>

#include <algorithm>

namespace prefill::monitoring {
namespace {

using SetStackSize = int (*)(pthread_attr_t*, size_t);

SetStackSize LibcSetStackSize() {
  static const auto real =
      reinterpret_cast<SetStackSize>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  return real;
}

}  // namespace

bool ThreadStackFloorActive() { return LibcSetStackSize() != nullptr; }

}  // namespace prefill::monitoring

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t size) {
  const prefill::monitoring::SetStackSize real = prefill::monitoring::LibcSetStackSize();
  if (real == nullptr) return 0;  // keep the default stack (8 MiB): never smaller than asked
  return real(attr, std::max(size, prefill::monitoring::kMinThreadStackBytes));
}
