#include "jit/kernel_cache.hpp"

#include "jit/source_set.hpp"

namespace pagedjit::jit {

KernelCache& KernelCache::global() {
  static KernelCache cache;
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
  if (store) {
    if (auto hit = store->load(key)) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.store_hits;
      return std::make_shared<const CompiledKernel>(std::move(*hit));
    }
  }
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
