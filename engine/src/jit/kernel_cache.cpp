#include "jit/kernel_cache.hpp"

#include <fmt/format.h>

#include "jit/disk_store.hpp"
#include "jit/source_set.hpp"
#include "pagedjit/errors.hpp"

namespace pagedjit::jit {

KernelCache& KernelCache::global() {
  static KernelCache cache;
  static const bool with_store = (cache.set_store(DiskStore::from_environment()), true);  // the disk cache, if enabled
  (void)with_store;
  return cache;
}

void KernelCache::set_store(std::shared_ptr<KernelStore> store) {
  std::lock_guard<std::mutex> lock(mu_);
  store_ = std::move(store);
}

KernelCacheStats KernelCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void KernelCache::clear_memory() {
  std::lock_guard<std::mutex> lock(mu_);
  entries_.clear();
}

KernelCache::Kernel KernelCache::produce(const KernelSpec& spec, const std::string& key) {
  std::shared_ptr<KernelStore> store;
  {
    std::lock_guard<std::mutex> lock(mu_);
    store = store_;
  }
  std::shared_ptr<void> claim;  // held until this function returns
  if (store) {
    auto hit = store->load(key);
    if (!hit && (claim = store->claim(key))) hit = store->load(key);  // another process may have just built it
    if (hit) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.store_hits;
      return std::make_shared<const CompiledKernel>(std::move(*hit));
    }
  }
  if (jit_disabled_by_env())
    throw CacheError(ErrorCode::jit_disabled,
                     fmt::format("PAGEDJIT_JIT=off and kernel {} ({}) is not in the kernel cache ({}); warm the cache "
                                 "with `pagedjit-cache warm` or unset PAGEDJIT_JIT",
                                 spec.readable(), spec.name_expression(),
                                 store ? store->location() : std::string("disk cache disabled")));
  auto compiled = std::make_shared<const CompiledKernel>(compile_kernel(spec, SourceSet::current()));
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.compiles;
    stats_.compile_ms += compiled->compile_ms;
  }
  if (store) store->store(*compiled);
  return compiled;
}

KernelCache::Kernel KernelCache::get(const KernelSpec& spec) {
  const std::string key = spec.key(SourceSet::current().hash, nvrtc_version());
  std::shared_ptr<std::promise<Kernel>> mine;  // set when this thread must produce the kernel
  std::shared_future<Kernel> future;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      ++stats_.memory_hits;
      future = it->second;
    } else {
      mine = std::make_shared<std::promise<Kernel>>();
      future = mine->get_future().share();
      entries_.emplace(key, future);
    }
  }
  if (mine) {
    try {
      mine->set_value(produce(spec, key));
    } catch (...) {
      mine->set_exception(std::current_exception());
      std::lock_guard<std::mutex> lock(mu_);
      entries_.erase(key);  // a later request retries; current waiters see the error
    }
  }
  return future.get();
}

}  // namespace pagedjit::jit
