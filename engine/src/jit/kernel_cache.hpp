// Process-wide cache of compiled kernels, keyed by the full key text.
// Concurrent requests for one key compile once (the others wait on it);
// different keys compile in parallel. An optional persistent store (the disk
// cache) is consulted before compiling and fed after.
#pragma once
#include <cstdint>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "jit/kernel_spec.hpp"
#include "jit/nvrtc_compiler.hpp"

namespace pagedjit::jit {

// Persistent storage of compiled kernels (implemented by the disk cache).
class KernelStore {
 public:
  virtual ~KernelStore() = default;
  // The entry stored under exactly this key text, or nothing.
  virtual std::optional<CompiledKernel> load(const std::string& key) = 0;
  virtual void store(const CompiledKernel& kernel) = 0;
  // Optional claim on compiling `key` across processes, held until the result
  // is released (nullptr: none). Waits a bounded time for another holder.
  virtual std::shared_ptr<void> claim(const std::string& /*key*/) { return nullptr; }
  // Where the store keeps its entries, for messages.
  virtual std::string location() const { return {}; }
};

struct KernelCacheStats {
  std::uint64_t memory_hits = 0, store_hits = 0, compiles = 0;
  double compile_ms = 0;
};

class KernelCache {
 public:
  using Kernel = std::shared_ptr<const CompiledKernel>;

  static KernelCache& global();

  Kernel get(const KernelSpec& spec);
  void set_store(std::shared_ptr<KernelStore> store);
  KernelCacheStats stats() const;
  void clear_memory();  // drop in-memory entries (tests, benchmarks of the store)

 private:
  Kernel produce(const KernelSpec& spec, const std::string& key);

  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_future<Kernel>> entries_;
  std::shared_ptr<KernelStore> store_;
  KernelCacheStats stats_;
};

}  // namespace pagedjit::jit
