// Benchmark cases: the cases files (bench/cases.json, bench/cases-ragged.json)
// and the compact command-line form `name=x,batch=8,q_heads=40,kv_heads=8,head_dim=128,...`.
// CPU only: the unit tests compile this file too.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "pagedjit/paged_attention.hpp"
#include "pagedjit/tensor.hpp"
#include "pagedjit/testing.hpp"

namespace pjbench {

// A bad case. `field()` names the offending field ("batch", "ctx", ...);
// `pos`/`len` locate it in the --case text (pos == npos when the case came
// from a file).
class CaseError : public std::runtime_error {
 public:
  static constexpr std::size_t npos = std::string::npos;
  CaseError(std::string field, const std::string& message, std::size_t pos = npos, std::size_t len = 0);
  const std::string& field() const noexcept { return field_; }
  std::size_t pos() const noexcept { return pos_; }
  std::size_t len() const noexcept { return len_; }

 private:
  std::string field_;
  std::size_t pos_, len_;
};

// Context lengths of a case: every sequence `value` tokens, uniform random
// lengths in [1, value] (drawn from the case's seed), or explicit lengths.
struct ContextSpec {
  enum class Kind { fixed, uniform_random, explicit_lengths };
  Kind kind = Kind::fixed;
  int value = 0;
  std::vector<int> lengths;
  std::string describe() const;  // "4096", "var:8192", "lengths[64]"
};

// One group of a ragged case's sequences (fields q and cached): `count`
// sequences, each with `q_len` new tokens on top of `cached` tokens already in
// the cache, so a context length of cached + q_len.
struct RaggedGroup {
  int q_len = 1, count = 1, cached = 0;
};

struct BenchCase {
  std::string name;
  int batch = 0, q_heads = 0, kv_heads = 0, head_dim = 0, page_size = 16;
  ContextSpec ctx;
  pagedjit::DType dtype = pagedjit::DType::bf16;     // q and output (and K, V unless kv_dtype)
  pagedjit::DType kv_dtype = pagedjit::DType::bf16;  // K and V: dtype, or e4m3 / e5m2 (per-head scales)
  int q_len = 1;                                     // query tokens per sequence (1..8)
  pagedjit::CacheLayout layout = pagedjit::CacheLayout::blocks_heads;
  std::optional<std::int64_t> window;   // sliding window, tokens
  std::optional<float> soft_cap;        // logits soft cap
  int splits = 0;                       // options.num_splits (0: engine chooses)
  pagedjit::KernelConfig config;        // forced tile / warps / stages / chunk (0: engine chooses)
  std::optional<std::int64_t> max_ctx;  // options.max_context_len hint
  std::uint64_t seed = 1;               // data, page order and random lengths
  std::string origin;                   // where the case came from ("--case", a file name)
  // A ragged case (run through ragged_paged_attention, tools/bench/ragged_bench.hpp):
  // the groups of sequences in packed order; ctx then holds every sequence's
  // context (cached + q_len) and batch their number. Empty: a decode case.
  std::vector<RaggedGroup> groups;

  bool ragged() const { return !groups.empty(); }
  std::vector<int> q_lens() const;    // new tokens per sequence (q_len each for a decode case)
  std::int64_t query_tokens() const;  // query rows: batch x q_len, or the sum of q_lens
  // Causal attention work: 4 x head_dim x visible keys, summed over query
  // tokens and heads (a token at position p sees p + 1 keys, or the window).
  double causal_flops() const;
  std::string q_text() const;       // "4096x8", "2048+1x127"
  std::string cached_text() const;  // "28672", or one per group "0+4095"

  std::vector<int> context_lens() const;
  std::int64_t tokens() const;       // sum of context lengths
  std::int64_t tokens_read() const;  // sum of min(length, window): what a call must read
  // Bytes a call must move, per BENCHMARK.md: K and V of every token read,
  // plus q and output (query_tokens() rows of each).
  std::int64_t kv_bytes() const;
  std::int64_t bytes() const;
  bool uniform_lengths() const { return ctx.kind == ContextSpec::Kind::fixed; }
  pagedjit::PagedAttentionOptions options() const;
  // A random problem for this case; `set` picks another data set (and page order).
  pagedjit::testing::ProblemConfig problem(int set = 0) const;
  // "b64 h32/8 d128 p16 ctx=4096 bf16 blocks_heads"
  std::string shape_text() const;
};

// Parses one --case string. Throws CaseError pointing at the bad field.
BenchCase parse_case_string(const std::string& text);

// Parses a cases file's text (the format of bench/cases.json). `source` names
// it in errors. Throws CaseError.
std::vector<BenchCase> parse_cases_json(const std::string& text, const std::string& source);
std::vector<BenchCase> load_cases_file(const std::string& path);

// The message of `e` for the --case string `text`, with a caret line under
// the bad field: two lines when the position is known.
std::string format_case_error(const std::string& text, const CaseError& e);

// Keeps the cases named in `only` (comma-separated), in the order given.
// Throws CaseError (field "only") naming an unknown case.
std::vector<BenchCase> select_cases(const std::vector<BenchCase>& cases, const std::string& only);

// Throws CaseError (field "name") when two cases share a name.
void check_unique_names(const std::vector<BenchCase>& cases);

}  // namespace pjbench
