// Random paged-attention problems with host mirrors and device copies, for
// tests, tools and users' own checks. Data is random and never zero; pages
// are a random permutation; unused slots of last pages may hold NaN/Inf.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pagedjit/driver.hpp"
#include "pagedjit/paged_attention.hpp"
#include "pagedjit/reference.hpp"

namespace pagedjit::testing {

struct ProblemConfig {
  int num_heads = 8, num_kv_heads = 8, head_dim = 64, page_size = 16;
  DType dtype = DType::bf16, out_dtype = DType::bf16;
  std::optional<DType> kv_dtype;  // the cache's dtype when not the query's (e4m3, e5m2)
  int kv_scales = 2;              // fp8 caches: 0 no scales, 1 one per tensor, 2 one per KV head
  int q_len = 1;                  // query tokens per sequence; > 1 makes query/output rank 4
  CacheLayout layout = CacheLayout::blocks_heads;
  std::vector<int> context_lens{32};
  int max_blocks = 0;         // 0: just enough for the longest sequence
  int spare_blocks = 3;       // physical pages no sequence uses
  int pad_elems = 0;          // extra elements after each cache row / query row (strided views)
  bool poison_unused = true;  // NaN and Inf in slots past context_len and in spare pages
  bool share_pages = false;   // sequences 1.. reuse sequence 0's first page (prefix sharing)
  int holes = 0;              // this many sequences get a -1 inside their used table range
  std::uint64_t seed = 1;
  bool with_lse = false;
  std::string describe() const;
};

// The problem in host memory, in storage format.
class HostProblem {
 public:
  explicit HostProblem(ProblemConfig cfg);
  const ProblemConfig& config() const { return cfg_; }
  // A call whose views point at the host data (output/lse views point at host scratch).
  PagedAttentionArgs args() const;
  std::int64_t kv_bytes_read() const;  // K and V bytes a call must read (valid tokens only)
  std::int64_t num_blocks() const { return num_blocks_; }

  std::vector<std::uint8_t> q, k, v;
  std::vector<std::int32_t> lens, table;
  std::vector<float> k_scale, v_scale;  // fp8 dequantization scales (empty: none)
  DType kv_dtype() const { return cfg_.kv_dtype.value_or(cfg_.dtype); }
  std::int64_t rows() const;  // query rows: sequences x q_len x heads

 private:
  ProblemConfig cfg_;
  std::int64_t num_blocks_ = 0;
  std::int64_t q_row = 0, kv_row = 0;  // padded row lengths, elements
  mutable std::vector<std::uint8_t> out_scratch_, lse_scratch_;
};

struct ErrorStats {
  double rel_l2 = 0;  // ||got - want|| / ||want||  (absolute when want is all zero)
  double max_abs = 0;
  std::int64_t nonfinite = 0;  // NaN/Inf in the output (poisoned elements left unwritten show up here)
  double lse_max_abs = 0;      // when lse was compared
  bool lse_ok = true;          // -inf exactly where expected, finite elsewhere
};

// Device copies of a HostProblem, with output (and lse) buffers.
class DeviceProblem {
 public:
  explicit DeviceProblem(ProblemConfig cfg);
  // Uploads a host problem the caller may have edited (table entries, cache
  // values); the reference then sees the same edits.
  explicit DeviceProblem(HostProblem host);
  const HostProblem& host() const { return host_; }
  PagedAttentionArgs args() const;
  void poison_outputs();  // NaN everywhere in output and lse; returns once done
  std::vector<float> output() const;
  std::vector<float> lse() const;
  // Runs the CPU reference on `seqs` (all when empty) and compares.
  ErrorStats check(const PagedAttentionOptions& options, const std::vector<int>& seqs = {}) const;

 private:
  HostProblem host_;
  DeviceBuffer q_, k_, v_, lens_, table_, out_, lse_, k_scale_, v_scale_;
};

// Comparison of a device result (float) with a reference (double).
ErrorStats compare(const std::vector<float>& got, const std::vector<double>& want);

}  // namespace pagedjit::testing
