// Fuzz target (d): pagedjit-bench's --case strings (tools/common/cases.cpp).
// parse_case_string may throw only CaseError, whose position must lie inside
// the text; a parsed case must satisfy the rules the parser promises.
#include <string>
#include <vector>

#include "../../tools/common/cases.hpp"
#include "harness.hpp"

namespace pjfuzz {
namespace {

void check(bool ok, const char* what) {
  if (!ok) throw Violation(std::string("case string: ") + what);
}

std::uint64_t g_runs = 0, g_parsed = 0;

// A ragged case: its groups give the sequences (every one with at least one
// new token), their contexts (cached + new tokens, listed explicitly) and the
// packed query rows.
void ragged_rules(const pjbench::BenchCase& c) {
  std::int64_t seqs = 0, rows = 0;
  std::vector<int> lens;
  for (const pjbench::RaggedGroup& g : c.groups) {
    check(g.q_len >= 1 && g.count >= 1 && g.cached >= 0, "a ragged group below its bounds");
    seqs += g.count;
    rows += std::int64_t(g.q_len) * g.count;
    lens.insert(lens.end(), std::size_t(g.count), g.cached + g.q_len);
  }
  check(c.ctx.kind == pjbench::ContextSpec::Kind::explicit_lengths && c.ctx.lengths == lens, "ragged contexts");
  check(c.batch == seqs && c.query_tokens() == rows, "ragged sequences or rows");
  check(c.q_lens().size() == std::size_t(seqs), "ragged q_lens size");
  (void)c.q_text();
  (void)c.cached_text();
  (void)c.causal_flops();
}

}  // namespace

std::string case_string_stats() {
  return std::to_string(g_runs) + " strings, " + std::to_string(g_parsed) + " parsed";
}

void case_string_one(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  ++g_runs;
  pjbench::BenchCase c;
  try {
    c = pjbench::parse_case_string(text);
  } catch (const pjbench::CaseError& e) {
    check(e.pos() == pjbench::CaseError::npos || e.pos() <= text.size(), "error position past the text");
    (void)pjbench::format_case_error(text, e);
    return;
  }
  ++g_parsed;
  check(!c.name.empty(), "a case without a name");
  check(c.batch >= 1 && c.q_heads >= 1 && c.kv_heads >= 1 && c.head_dim >= 1 && c.page_size >= 1, "sizes below 1");
  check(c.q_heads % c.kv_heads == 0, "q_heads not a multiple of kv_heads");
  (void)c.shape_text();
  (void)c.options();
  if (c.ragged()) {
    ragged_rules(c);
    return;
  }
  check(c.ctx.kind != pjbench::ContextSpec::Kind::explicit_lengths && c.ctx.value >= 1, "context");
  if (c.batch <= 4096) {
    const auto lens = c.context_lens();
    check(lens.size() == std::size_t(c.batch), "context_lens size");
    for (int l : lens) check(l >= 1 && l <= c.ctx.value, "a length outside [1, ctx]");
  }
}

}  // namespace pjfuzz

PJFUZZ_ENTRY(pjfuzz::case_string_one)
PJFUZZ_STATS(fuzz_case_string, pjfuzz::case_string_stats)
