#include "cases.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "json_depth.hpp"
#include "pagedjit/errors.hpp"

namespace pjbench {
namespace {

using pagedjit::DType;

constexpr const char* kFields[] = {"name",    "batch", "q_heads",  "kv_heads", "head_dim", "page_size",
                                   "ctx",     "dtype", "kv_dtype", "layout",   "window",   "soft_cap",
                                   "splits",  "seed",  "tile",     "warps",    "stages",   "chunk",
                                   "max_ctx", "dv",    "q_len",    "waves",    "q",        "cached"};

bool known_field(const std::string& k) {
  return std::find(std::begin(kFields), std::end(kFields), k) != std::end(kFields);
}

std::string field_list() {
  std::string s;
  for (const char* f : kFields) s += (s.empty() ? "" : ", ") + std::string(f);
  return s;
}

// Where a field's text sits in a --case string (pos == npos for files).
struct Span {
  std::size_t pos = CaseError::npos, len = 0;
};

[[noreturn]] void fail(const std::string& field, const std::string& message, Span at) {
  throw CaseError(field, fmt::format("{}: {}", field, message), at.pos, at.len);
}

// A non-negative integer, with an optional k suffix (x1024): "4096", "32k".
std::int64_t parse_int(const std::string& field, const std::string& v, std::int64_t min, std::int64_t max, Span at) {
  std::string digits = v;
  std::int64_t mult = 1;
  if (!digits.empty() && (digits.back() == 'k' || digits.back() == 'K')) {
    digits.pop_back();
    mult = 1024;
  }
  const auto expected = [&] {
    return max == std::numeric_limits<std::int64_t>::max() ? fmt::format("an integer >= {}", min)
                                                           : fmt::format("an integer in [{}, {}]", min, max);
  };
  bool ok = !digits.empty() && digits.size() <= 18;
  for (char c : digits) ok = ok && c >= '0' && c <= '9';
  if (!ok) fail(field, fmt::format("expected {}, got \"{}\"", expected(), v), at);
  const std::int64_t n = std::stoll(digits);                                               // <= 18 digits: fits
  if (n > max / mult) fail(field, fmt::format("expected {}, got {}", expected(), v), at);  // before multiplying
  const std::int64_t x = n * mult;
  if (x < min || x > max) fail(field, fmt::format("expected {}, got {}", expected(), v), at);
  return x;
}

int parse_i32(const std::string& field, const std::string& v, int min, Span at) {
  return int(parse_int(field, v, min, std::numeric_limits<int>::max(), at));
}

// Limits of a ragged case: a query of at most 1M tokens per sequence, 64k
// sequences, 1G cached tokens (contexts stay int32).
constexpr std::int64_t kMaxRaggedQ = 1 << 20, kMaxRaggedSeqs = 1 << 16, kMaxCached = 1 << 30;

std::vector<std::string> split_plus(const std::string& v) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t end = v.find('+', start);
    out.push_back(v.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) return out;
    start = end + 1;
  }
}

// q: '+'-separated groups "Q" (one sequence of Q new tokens) or "QxN" (N of them).
std::vector<RaggedGroup> parse_q_spec(const std::string& v, Span at) {
  std::vector<RaggedGroup> groups;
  std::int64_t seqs = 0;
  for (const std::string& term : split_plus(v)) {
    if (term.empty())
      fail("q", fmt::format("expected groups Q or QxN joined by '+' (e.g. 4096x8, 2048+1x127), got \"{}\"", v), at);
    RaggedGroup g;
    const std::size_t x = term.find_first_of("xX");
    g.q_len = int(parse_int("q", term.substr(0, x), 1, kMaxRaggedQ, at));
    if (x != std::string::npos) g.count = int(parse_int("q", term.substr(x + 1), 1, kMaxRaggedSeqs, at));
    seqs += g.count;
    if (seqs > kMaxRaggedSeqs) fail("q", fmt::format("more than {} sequences in \"{}\"", kMaxRaggedSeqs, v), at);
    groups.push_back(g);
  }
  return groups;
}

std::vector<int> parse_cached_spec(const std::string& v, Span at) {
  std::vector<int> out;
  for (const std::string& term : split_plus(v)) out.push_back(int(parse_int("cached", term, 0, kMaxCached, at)));
  return out;
}

std::string k_text(std::int64_t n) {
  return n >= 1024 && n % 1024 == 0 ? fmt::format("{}k", n / 1024) : std::to_string(n);
}

// One case being built: the fields seen and where they were.
struct Builder {
  BenchCase c;
  std::map<std::string, Span> seen;
  std::optional<DType> kv_dtype;
  Span kv_dtype_at;
  bool batch_set = false;
  std::vector<int> cached;  // ragged: tokens cached before the step, one value or one per group

  void set(const std::string& key, const std::string& v, Span at) {
    if (!known_field(key)) fail(key, fmt::format("unknown field (known: {})", field_list()), at);
    seen[key] = at;
    if (key == "name") {
      if (v.empty()) fail(key, "expected a non-empty name", at);
      for (char ch : v)
        if (ch == ',' || ch == '=' || ch == '"' || ch == '<' || ch == '>' || ch == '&' || ch < ' ')
          fail(key, fmt::format("expected letters, digits, '_', '-', '.', got \"{}\"", v), at);
      c.name = v;
    } else if (key == "batch") {
      c.batch = parse_i32(key, v, 1, at);
      batch_set = true;
    } else if (key == "q_heads") {
      c.q_heads = parse_i32(key, v, 1, at);
    } else if (key == "kv_heads") {
      c.kv_heads = parse_i32(key, v, 1, at);
    } else if (key == "head_dim") {
      c.head_dim = parse_i32(key, v, 1, at);
    } else if (key == "page_size") {
      c.page_size = parse_i32(key, v, 1, at);
    } else if (key == "ctx") {
      if (v.rfind("var:", 0) == 0) {
        c.ctx.kind = ContextSpec::Kind::uniform_random;
        c.ctx.value = parse_i32(key, v.substr(4), 1, at);
      } else {
        bool digits = !v.empty();
        for (char ch : v) digits = digits && ((ch >= '0' && ch <= '9') || ch == 'k' || ch == 'K');
        if (!digits)
          fail(key,
               fmt::format("expected a length (e.g. 4096 or 32k) or var:MAX (uniform random in [1, MAX]), got \"{}\"",
                           v),
               at);
        c.ctx.kind = ContextSpec::Kind::fixed;
        c.ctx.value = parse_i32(key, v, 1, at);
      }
      c.ctx.lengths.clear();
    } else if (key == "dtype" || key == "kv_dtype") {
      DType d = DType::bf16;
      try {
        d = pagedjit::parse_dtype(v);
      } catch (const pagedjit::Error&) {
        fail(key,
             fmt::format("expected one of bf16, fp16, fp32{}, got \"{}\"", key == "kv_dtype" ? ", e4m3, e5m2" : "", v),
             at);
      }
      if (d == DType::i32 || (key == "dtype" && pagedjit::is_fp8(d)))
        fail(key,
             fmt::format("expected one of bf16, fp16, fp32{}, got \"{}\"", key == "kv_dtype" ? ", e4m3, e5m2" : "", v),
             at);
      if (key == "dtype") {
        c.dtype = d;
      } else {
        kv_dtype = d;
        kv_dtype_at = at;
      }
    } else if (key == "layout") {
      try {
        c.layout = pagedjit::parse_layout(v);
      } catch (const pagedjit::Error&) {
        fail(key, fmt::format("expected one of blocks_heads, heads_blocks, blocks_tokens, got \"{}\"", v), at);
      }
    } else if (key == "window") {
      c.window = parse_int(key, v, 1, std::numeric_limits<int>::max(), at);
    } else if (key == "soft_cap") {
      std::size_t used = 0;
      double x = 0;
      try {
        x = std::stod(v, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != v.size() || v.empty() || !(x > 0) || !std::isfinite(x) || x > 1e30)
        fail(key, fmt::format("expected a finite number > 0, got \"{}\"", v), at);
      c.soft_cap = float(x);
    } else if (key == "splits") {
      c.splits = parse_i32(key, v, 0, at);
    } else if (key == "tile") {
      c.config.tile_tokens = parse_i32(key, v, 16, at);
    } else if (key == "warps") {
      c.config.warps = parse_i32(key, v, 1, at);
    } else if (key == "stages") {
      c.config.stages = parse_i32(key, v, 2, at);
    } else if (key == "chunk") {
      c.config.chunk_tokens = parse_i32(key, v, 16, at);
    } else if (key == "dv") {
      c.config.v_dims = parse_i32(key, v, 16, at);
    } else if (key == "waves") {
      c.config.work_waves = int(parse_int(key, v, 1, 16, at));
    } else if (key == "q_len") {
      c.q_len = int(parse_int(key, v, 1, 8, at));
    } else if (key == "max_ctx") {
      c.max_ctx = parse_int(key, v, 1, std::numeric_limits<int>::max(), at);
    } else if (key == "q") {
      c.groups = parse_q_spec(v, at);
    } else if (key == "cached") {
      cached = parse_cached_spec(v, at);
    } else if (key == "seed") {
      c.seed = std::uint64_t(parse_int(key, v, 0, std::numeric_limits<std::int64_t>::max(), at));
    }
  }

  void set_lengths(const std::vector<int>& lengths, Span at) {
    seen["ctx"] = at;
    if (lengths.empty()) fail("ctx", "expected at least one length", at);
    for (int l : lengths)
      if (l < 0) fail("ctx", fmt::format("expected lengths >= 0, got {}", l), at);
    c.ctx.kind = ContextSpec::Kind::explicit_lengths;
    c.ctx.lengths = lengths;
    c.ctx.value = 0;
  }

  // Required fields, cross-field rules and defaults. `whole` locates the
  // case as a whole (for a missing field).
  BenchCase finish(Span whole) {
    auto where = [&](const char* f) {
      auto it = seen.find(f);
      return it == seen.end() ? whole : it->second;
    };
    if (c.ragged()) {
      // A ragged case: q and cached give the batch and the contexts.
      for (const char* f : {"ctx", "q_len"})
        if (seen.count(f))
          fail(f, "not with q (a ragged case: q gives the new tokens, cached the tokens before them)", where(f));
      for (const char* f : {"q_heads", "kv_heads", "head_dim"})
        if (!seen.count(f)) fail(f, "missing (required: q_heads, kv_heads, head_dim, q)", whole);
      if (cached.empty()) cached = {0};
      if (cached.size() != 1 && cached.size() != c.groups.size())
        fail("cached",
             fmt::format("expected one value or one per group of q ({}), got {}", c.groups.size(), cached.size()),
             where("cached"));
      std::vector<int> lens;
      for (std::size_t g = 0; g < c.groups.size(); ++g) {
        c.groups[g].cached = cached[cached.size() == 1 ? 0 : g];
        lens.insert(lens.end(), std::size_t(c.groups[g].count), c.groups[g].cached + c.groups[g].q_len);
      }
      if (batch_set && std::size_t(c.batch) != lens.size())
        fail("batch", fmt::format("q has {} sequences, batch says {}", lens.size(), c.batch), where("batch"));
      c.ctx.kind = ContextSpec::Kind::explicit_lengths;
      c.ctx.lengths = lens;
      c.ctx.value = 0;
      c.batch = int(lens.size());
      seen["ctx"] = where("q");
    } else if (!cached.empty()) {
      fail("cached", "only with q (a ragged case)", where("cached"));
    }
    const bool lengths = c.ctx.kind == ContextSpec::Kind::explicit_lengths;
    for (const char* f : {"batch", "q_heads", "kv_heads", "head_dim", "ctx"}) {
      if (seen.count(f) || (lengths && std::string(f) == "batch")) continue;
      fail(f, "missing (required: batch, q_heads, kv_heads, head_dim, ctx)", whole);
    }
    if (lengths && !c.ragged()) {
      if (batch_set && std::size_t(c.batch) != c.ctx.lengths.size())
        fail("ctx", fmt::format("{} lengths given for batch {}", c.ctx.lengths.size(), c.batch), where("ctx"));
      c.batch = int(c.ctx.lengths.size());
    }
    if (c.q_heads % c.kv_heads != 0)
      fail("q_heads", fmt::format("must be a multiple of kv_heads ({}), got {}", c.kv_heads, c.q_heads),
           where("q_heads"));
    c.kv_dtype = kv_dtype.value_or(c.dtype);
    if (c.kv_dtype != c.dtype && !(pagedjit::is_fp8(c.kv_dtype) && c.dtype != DType::f32))
      fail("kv_dtype",
           fmt::format("the query's dtype, or e4m3/e5m2 with an fp16/bf16 query ({} vs {})",
                       pagedjit::dtype_name(c.kv_dtype), pagedjit::dtype_name(c.dtype)),
           kv_dtype_at);
    if (c.name.empty() && c.ragged())
      c.name = fmt::format("rg_h{}x{}_d{}_p{}_q{}_c{}_{}", c.q_heads, c.kv_heads, c.head_dim, c.page_size, c.q_text(),
                           c.cached_text(), pagedjit::dtype_name(c.dtype));
    if (c.name.empty())
      c.name = fmt::format("b{}_h{}x{}_d{}_p{}_c{}_{}", c.batch, c.q_heads, c.kv_heads, c.head_dim, c.page_size,
                           c.ctx.kind == ContextSpec::Kind::uniform_random ? "var" + std::to_string(c.ctx.value)
                           : lengths                                       ? std::string("list")
                                                                           : std::to_string(c.ctx.value),
                           pagedjit::dtype_name(c.dtype));
    return c;
  }
};

std::string json_scalar(const std::string& field, const nlohmann::json& v, Span at) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<std::int64_t>());
  if (v.is_number_unsigned()) return std::to_string(v.get<std::uint64_t>());
  if (v.is_number_float()) return fmt::format("{}", v.get<double>());
  fail(field, fmt::format("expected a number or a string, got {}", v.dump()), at);
}

bool ignored_key(const std::string& k) {
  return k == "about" || k == "note" || k == "comment";
}

}  // namespace

CaseError::CaseError(std::string field, const std::string& message, std::size_t pos, std::size_t len)
    : std::runtime_error(message), field_(std::move(field)), pos_(pos), len_(len) {}

std::string ContextSpec::describe() const {
  switch (kind) {
    case Kind::fixed:
      return std::to_string(value);
    case Kind::uniform_random:
      return fmt::format("var:{}", value);
    case Kind::explicit_lengths:
      return fmt::format("lengths[{}]", lengths.size());
  }
  return "?";
}

std::vector<int> BenchCase::context_lens() const {
  switch (ctx.kind) {
    case ContextSpec::Kind::fixed:
      return std::vector<int>(std::size_t(batch), ctx.value);
    case ContextSpec::Kind::uniform_random: {
      // Independent of the data sets: every set of a case has the same lengths.
      std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 0x5eed);
      std::vector<int> out(static_cast<std::size_t>(batch));
      for (int& l : out) l = 1 + int(rng() % std::uint64_t(ctx.value));
      return out;
    }
    case ContextSpec::Kind::explicit_lengths:
      return ctx.lengths;
  }
  return {};
}

std::int64_t BenchCase::tokens() const {
  std::int64_t t = 0;
  for (int l : context_lens()) t += l;
  return t;
}

std::int64_t BenchCase::tokens_read() const {
  std::int64_t t = 0;
  for (int l : context_lens()) t += window ? std::min<std::int64_t>(l, *window) : l;
  return t;
}

std::int64_t BenchCase::kv_bytes() const {
  return tokens_read() * kv_heads * head_dim * 2 * std::int64_t(pagedjit::dtype_size(kv_dtype));
}

std::int64_t BenchCase::bytes() const {
  const std::int64_t qo = query_tokens() * q_heads * head_dim * std::int64_t(pagedjit::dtype_size(dtype));
  return kv_bytes() + 2 * qo;
}

std::vector<int> BenchCase::q_lens() const {
  if (!ragged()) return std::vector<int>(std::size_t(batch), q_len);
  std::vector<int> out;
  for (const RaggedGroup& g : groups) out.insert(out.end(), std::size_t(g.count), g.q_len);
  return out;
}

std::int64_t BenchCase::query_tokens() const {
  std::int64_t t = 0;
  for (int q : q_lens()) t += q;
  return t;
}

double BenchCase::causal_flops() const {
  const std::vector<int> lens = context_lens(), qs = q_lens();
  double keys = 0;
  for (std::size_t s = 0; s < lens.size() && s < qs.size(); ++s)
    for (std::int64_t i = 0; i < qs[s]; ++i) {
      const std::int64_t p = std::int64_t(lens[s]) - qs[s] + i;  // the token's position
      keys += double(window ? std::min<std::int64_t>(p + 1, *window) : std::max<std::int64_t>(p + 1, 0));
    }
  return 4.0 * head_dim * q_heads * keys;
}

std::string BenchCase::q_text() const {
  if (!ragged()) return q_len == 1 ? std::to_string(batch) : fmt::format("{}x{}", q_len, batch);
  std::string s;
  for (const RaggedGroup& g : groups)
    s += (s.empty() ? "" : "+") + (g.count == 1 ? k_text(g.q_len) : fmt::format("{}x{}", k_text(g.q_len), g.count));
  return s;
}

std::string BenchCase::cached_text() const {
  bool same = true;
  for (const RaggedGroup& g : groups) same = same && g.cached == groups.front().cached;
  if (groups.empty()) return "0";
  if (same) return k_text(groups.front().cached);
  std::string s;
  for (const RaggedGroup& g : groups) s += (s.empty() ? "" : "+") + k_text(g.cached);
  return s;
}

pagedjit::PagedAttentionOptions BenchCase::options() const {
  pagedjit::PagedAttentionOptions o;
  o.num_splits = splits;
  if (window) o.sliding_window = *window;
  if (soft_cap) o.attn_logits_soft_cap = *soft_cap;
  if (config.tile_tokens || config.chunk_tokens || config.v_dims || config.work_waves) o.kernel_config = config;
  if (max_ctx) o.max_context_len = *max_ctx;
  return o;
}

pagedjit::testing::ProblemConfig BenchCase::problem(int set) const {
  pagedjit::testing::ProblemConfig p;
  p.num_heads = q_heads;
  p.num_kv_heads = kv_heads;
  p.head_dim = head_dim;
  p.page_size = page_size;
  p.dtype = p.out_dtype = dtype;
  if (kv_dtype != dtype) p.kv_dtype = kv_dtype;
  p.q_len = q_len;
  p.layout = layout;
  p.context_lens = context_lens();
  p.spare_blocks = 3;
  p.poison_unused = true;
  p.seed = seed * 1000003ull + std::uint64_t(set) + 1;
  return p;
}

std::string BenchCase::shape_text() const {
  if (ragged()) {
    std::string r = fmt::format("ragged h{}/{} d{} p{} q={} cached={} {} {}", q_heads, kv_heads, head_dim, page_size,
                                q_text(), cached_text(), pagedjit::dtype_name(dtype), pagedjit::layout_name(layout));
    if (kv_dtype != dtype) r += fmt::format(" kv={}", pagedjit::dtype_name(kv_dtype));
    if (window) r += fmt::format(" window={}", *window);
    if (soft_cap) r += fmt::format(" soft_cap={}", *soft_cap);
    if (max_ctx) r += fmt::format(" max_ctx={}", *max_ctx);
    return r;
  }
  std::string s = fmt::format("b{} h{}/{} d{} p{} ctx={} {} {}", batch, q_heads, kv_heads, head_dim, page_size,
                              ctx.describe(), pagedjit::dtype_name(dtype), pagedjit::layout_name(layout));
  if (kv_dtype != dtype) s += fmt::format(" kv={}", pagedjit::dtype_name(kv_dtype));
  if (q_len > 1) s += fmt::format(" q_len={}", q_len);
  if (window) s += fmt::format(" window={}", *window);
  if (soft_cap) s += fmt::format(" soft_cap={}", *soft_cap);
  if (splits) s += fmt::format(" splits={}", splits);
  if (config.tile_tokens) s += fmt::format(" tile={}/{}w/{}s", config.tile_tokens, config.warps, config.stages);
  if (config.chunk_tokens) s += fmt::format(" chunk={}", config.chunk_tokens);
  if (config.v_dims) s += fmt::format(" dv={}", config.v_dims);
  if (config.work_waves) s += fmt::format(" waves={}", config.work_waves);
  if (max_ctx) s += fmt::format(" max_ctx={}", *max_ctx);
  return s;
}

BenchCase parse_case_string(const std::string& text) {
  Builder b;
  b.c.origin = "--case";
  if (text.empty()) fail("case", "empty case string", Span{0, 0});
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(start, end - start);
    const Span at{start, std::max<std::size_t>(item.size(), 1)};
    if (item.empty()) fail("case", "empty field (two commas in a row, or a trailing comma)", at);
    const std::size_t eq = item.find('=');
    if (eq == std::string::npos) fail(item, "expected key=value", at);
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (b.seen.count(key)) fail(key, "given twice", at);
    b.set(key, value, at);
    start = end + 1;
  }
  return b.finish(Span{0, text.size()});
}

std::vector<BenchCase> parse_cases_json(const std::string& text, const std::string& source) {
  if (pagedjit::json_too_deep(text))
    throw CaseError("cases", fmt::format("{}: JSON nested more than {} levels deep", source, pagedjit::kMaxJsonDepth));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw CaseError("cases", fmt::format("{}: not valid JSON: {}", source, e.what()));
  }
  if (!j.is_object() || !j.contains("cases") || !j["cases"].is_array())
    throw CaseError("cases", fmt::format("{}: expected an object with a \"cases\" array", source));
  // Top-level fields other than "cases" are defaults for every case (e.g. "dtype").
  std::vector<std::pair<std::string, std::string>> defaults;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "cases" || ignored_key(it.key())) continue;
    if (!known_field(it.key()) || it.key() == "name" || it.key() == "ctx")
      throw CaseError(it.key(), fmt::format("{}: top-level key \"{}\": not a field that can have a default ({})",
                                            source, it.key(), field_list()));
    try {
      defaults.emplace_back(it.key(), json_scalar(it.key(), it.value(), Span{}));
      Builder check;
      check.set(it.key(), defaults.back().second, Span{});
    } catch (const CaseError& e) {
      throw CaseError(e.field(), fmt::format("{}: top-level default: {}", source, e.what()));
    }
  }
  std::vector<BenchCase> out;
  int index = 0;
  for (const auto& jc : j["cases"]) {
    const std::string label = jc.is_object() && jc.contains("name") && jc["name"].is_string()
                                  ? fmt::format("{}: case {} (\"{}\")", source, index, jc["name"].get<std::string>())
                                  : fmt::format("{}: case {}", source, index);
    try {
      if (!jc.is_object()) throw CaseError("case", "expected an object");
      Builder b;
      b.c.origin = source;
      for (const auto& [k, v] : defaults) b.set(k, v, Span{});
      for (auto it = jc.begin(); it != jc.end(); ++it) {
        if (ignored_key(it.key())) continue;
        if (it.key() == "ctx" && it.value().is_object()) {
          const auto& o = it.value();
          if (o.contains("lengths") && o["lengths"].is_array()) {
            std::vector<int> lengths;
            for (const auto& l : o["lengths"]) {
              if (!l.is_number_integer()) fail("ctx", fmt::format("expected integer lengths, got {}", l.dump()), {});
              lengths.push_back(int(std::clamp<std::int64_t>(l.get<std::int64_t>(), -1, 1 << 30)));
            }
            b.set_lengths(lengths, Span{});
          } else if (o.contains("var")) {
            b.set("ctx", "var:" + json_scalar("ctx", o["var"], {}), Span{});
          } else {
            fail("ctx",
                 fmt::format("expected a length, \"var:MAX\", {{\"lengths\": [...]}} or {{\"var\": MAX}}, got {}",
                             o.dump()),
                 {});
          }
          continue;
        }
        if ((it.key() == "q" || it.key() == "cached") && it.value().is_array()) {
          // A list per sequence (q) or per group (cached): the '+' form.
          std::string joined;
          for (const auto& x : it.value()) joined += (joined.empty() ? "" : "+") + json_scalar(it.key(), x, {});
          b.set(it.key(), joined, Span{});
          continue;
        }
        b.set(it.key(), json_scalar(it.key(), it.value(), Span{}), Span{});
      }
      if (!b.seen.count("name")) fail("name", "missing (every case in a file needs a name)", {});
      out.push_back(b.finish(Span{}));
    } catch (const CaseError& e) {
      throw CaseError(e.field(), fmt::format("{}: {}", label, e.what()));
    }
    ++index;
  }
  check_unique_names(out);
  return out;
}

std::vector<BenchCase> load_cases_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw CaseError("cases", fmt::format("cannot read the cases file {}", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_cases_json(ss.str(), path);
}

std::string format_case_error(const std::string& text, const CaseError& e) {
  if (e.pos() == CaseError::npos) return std::string("bad case: ") + e.what();
  const std::string prefix = "  --case ";
  std::string s = fmt::format("bad case: {}\n{}{}\n", e.what(), prefix, text);
  s += std::string(prefix.size() + std::min(e.pos(), text.size()), ' ');
  s += std::string(std::max<std::size_t>(e.len(), 1), '^');
  return s;
}

std::vector<BenchCase> select_cases(const std::vector<BenchCase>& cases, const std::string& only) {
  std::vector<BenchCase> out;
  std::set<std::string> taken;
  std::stringstream ss(only);
  std::string name;
  while (std::getline(ss, name, ',')) {
    if (name.empty() || taken.count(name)) continue;
    auto it = std::find_if(cases.begin(), cases.end(), [&](const BenchCase& c) { return c.name == name; });
    if (it == cases.end()) {
      std::string names;
      for (const auto& c : cases) names += (names.empty() ? "" : ", ") + c.name;
      throw CaseError("only", fmt::format("--only: no case named \"{}\" (cases: {})", name, names));
    }
    taken.insert(name);
    out.push_back(*it);
  }
  if (out.empty()) throw CaseError("only", "--only: no case names given");
  return out;
}

void check_unique_names(const std::vector<BenchCase>& cases) {
  std::set<std::string> names;
  for (const auto& c : cases)
    if (!names.insert(c.name).second)
      throw CaseError("name", fmt::format("two cases are named \"{}\" ({})", c.name, c.origin));
}

}  // namespace pjbench
