// Random ragged-attention problems (RaggedAttentionArgs) with host data and
// device copies, for the ragged tests: packed queries of per-sequence
// lengths, a paged cache (blocks_heads layout, pages a random permutation,
// NaN in every slot no sequence uses), optional fp8 scales, sinks and
// seq_count.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pagedjit/driver.hpp"
#include "pagedjit/paged_attention.hpp"
#include "pagedjit/ragged_attention.hpp"
#include "pagedjit/reference.hpp"

namespace pjtest {

struct RaggedConfig {
  int num_heads = 8, num_kv_heads = 2, head_dim = 128, page_size = 16;
  pagedjit::DType dtype = pagedjit::DType::bf16, out_dtype = pagedjit::DType::bf16;
  std::optional<pagedjit::DType> kv_dtype;  // e4m3 / e5m2: an fp8 cache with one scale per KV head
  std::vector<int> q_lens{16}, context_lens{16};
  // query_start as the device sees it; empty: the prefix sums of q_lens.
  // Lets a test pass hostile offsets (the packed rows are then total_tokens).
  std::vector<int> query_start;
  std::int64_t total_tokens = -1;  // -1: sum of q_lens
  int seq_count = -1;              // >= 0: pass seq_count with this value
  bool sinks = false;              // a random logit per query head in [-2, 6]
  bool with_lse = false;
  int holes = 0;  // sequences that get a -1 table entry inside their context
  std::uint64_t seed = 1;
  std::string describe() const;
};

class RaggedProblem {
 public:
  explicit RaggedProblem(RaggedConfig cfg);
  const RaggedConfig& config() const { return cfg_; }
  pagedjit::DType kv_dtype() const { return cfg_.kv_dtype.value_or(cfg_.dtype); }
  int num_seqs() const { return int(cfg_.context_lens.size()); }
  std::int64_t total_tokens() const { return total_; }
  // The call with host views (output and lse point at host scratch).
  pagedjit::RaggedAttentionArgs host_args() const;
  // Its shape as the planner sees it (ragged, q_len = the longest query).
  pagedjit::ProblemShape shape() const;
  // Multiply-adds of the float64 reference, to keep cases affordable.
  double reference_cost(const pagedjit::PagedAttentionOptions& options) const;

  std::vector<std::uint8_t> q, k, v;
  std::vector<std::int32_t> query_start, lens, table, count;
  std::vector<float> k_scale, v_scale, sinks;
  int max_blocks = 0, num_blocks = 0;

 private:
  RaggedConfig cfg_;
  std::int64_t total_ = 0;
  mutable std::vector<std::uint8_t> out_scratch_;
  mutable std::vector<float> lse_scratch_;
};

// Device copies, with output and lse buffers.
class RaggedDevice {
 public:
  explicit RaggedDevice(const RaggedProblem& host);
  pagedjit::RaggedAttentionArgs args() const;
  void poison();  // every output and lse byte 0xff (NaN in every float format); waits
  std::vector<std::uint8_t> output_bytes() const;
  std::vector<float> lse() const;

 private:
  const RaggedProblem& host_;
  pagedjit::DeviceBuffer q_, k_, v_, query_start_, lens_, table_, count_, k_scale_, v_scale_, sinks_, out_, lse_;
};

struct RaggedCheck {
  double rel_l2 = 0, max_abs = 0, lse_max_abs = 0;
  std::int64_t nonfinite = 0;  // in rows of computed sequences
  std::int64_t touched = 0;    // bytes changed in rows no computed sequence owns (poison must stay)
  bool lse_ok = true;          // -inf exactly where the reference has it
};

// The device result against reference_ragged_attention.
RaggedCheck check_ragged(const RaggedProblem& host, const RaggedDevice& dev,
                         const pagedjit::PagedAttentionOptions& options);

}  // namespace pjtest
