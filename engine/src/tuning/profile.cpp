#include "tuning/profile.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <tuple>

#include "jit/kernel_spec.hpp"
#include "pagedjit/errors.hpp"
#include "pj_params.cuh"

namespace pagedjit::tuning {
namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

// ------------------------------------------------------------------ reading

// A value and its JSON pointer, for error messages.
struct At {
  const json& v;
  std::string ptr;
};

std::string escape_pointer_token(const std::string& key) {
  std::string s;
  for (char c : key) {
    if (c == '~')
      s += "~0";
    else if (c == '/')
      s += "~1";
    else
      s += c;
  }
  return s;
}

std::string shown(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

class Reader {
 public:
  explicit Reader(const std::string& origin) : origin_(origin) {}

  [[noreturn]] void fail(const std::string& ptr, const std::string& expected, const std::string& got) const {
    throw InvalidArgument(origin_ + "#" + (ptr.empty() ? "/" : ptr), expected, got);
  }

  // An object with exactly the `required` keys, plus any of `optional`.
  void object(const At& a, std::initializer_list<const char*> required,
              std::initializer_list<const char*> optional) const {
    if (!a.v.is_object()) fail(a.ptr, "an object", shown(a.v));
    for (const char* k : required)
      if (!a.v.contains(k)) fail(a.ptr + "/" + k, "a value (missing)", "nothing");
    for (auto it = a.v.begin(); it != a.v.end(); ++it) {
      const std::string& k = it.key();
      const auto is = [&](const char* x) { return k == x; };
      if (std::none_of(required.begin(), required.end(), is) && std::none_of(optional.begin(), optional.end(), is)) {
        std::string keys;
        for (const char* x : required) keys += (keys.empty() ? "" : ", ") + std::string(x);
        for (const char* x : optional) keys += (keys.empty() ? "" : ", ") + std::string(x);
        fail(a.ptr + "/" + escape_pointer_token(k), fmt::format("one of the keys {}", keys),
             fmt::format("unknown key \"{}\"", k));
      }
    }
  }

  At member(const At& a, const char* key) const { return At{a.v.at(key), a.ptr + "/" + key}; }

  std::int64_t integer(const At& a, std::int64_t lo, std::int64_t hi, const std::string& what = "") const {
    const std::string expected =
        what.empty() ? fmt::format("an integer in [{}, {}]", lo, hi) : fmt::format("{} in [{}, {}]", what, lo, hi);
    if (a.v.is_number_unsigned()) {
      const std::uint64_t u = a.v.get<std::uint64_t>();
      if (u > std::uint64_t(hi) || (lo > 0 && u < std::uint64_t(lo))) fail(a.ptr, expected, shown(a.v));
      return std::int64_t(u);
    }
    if (!a.v.is_number_integer()) fail(a.ptr, expected, shown(a.v));
    const std::int64_t x = a.v.get<std::int64_t>();
    if (x < lo || x > hi) fail(a.ptr, expected, shown(a.v));
    return x;
  }

  double number(const At& a, double lo, double hi, bool lo_open) const {
    const std::string expected = fmt::format("a number in {}{}, {}]", lo_open ? "(" : "[", lo,
                                             hi == std::numeric_limits<double>::max() ? "inf" : fmt::format("{}", hi));
    if (!a.v.is_number()) fail(a.ptr, expected, shown(a.v));
    const double x = a.v.get<double>();
    if (!std::isfinite(x) || x < lo || (lo_open && x == lo) || x > hi) fail(a.ptr, expected, shown(a.v));
    return x;
  }

  std::string string(const At& a, std::size_t max_len = 256, bool empty_ok = false) const {
    const std::string expected = fmt::format("a {}string of at most {} bytes", empty_ok ? "" : "non-empty ", max_len);
    if (!a.v.is_string()) fail(a.ptr, expected, shown(a.v));
    const std::string s = a.v.get<std::string>();
    if ((!empty_ok && s.empty()) || s.size() > max_len) fail(a.ptr, expected, shown(a.v));
    for (unsigned char c : s)
      if (c < 0x20) fail(a.ptr, "a string without control characters", shown(a.v));
    return s;
  }

  DType dtype(const At& a) const {
    const std::string expected = "one of \"fp32\", \"fp16\", \"bf16\", \"e4m3\", \"e5m2\"";
    if (!a.v.is_string()) fail(a.ptr, expected, shown(a.v));
    const std::string s = a.v.get<std::string>();
    for (DType d : {DType::f32, DType::f16, DType::bf16, DType::e4m3, DType::e5m2})
      if (s == dtype_name(d)) return d;
    fail(a.ptr, expected, shown(a.v));
  }

  CacheLayout layout(const At& a) const {
    const std::string expected = "one of \"blocks_heads\", \"heads_blocks\", \"blocks_tokens\"";
    if (!a.v.is_string()) fail(a.ptr, expected, shown(a.v));
    const std::string s = a.v.get<std::string>();
    for (CacheLayout l : {CacheLayout::blocks_heads, CacheLayout::heads_blocks, CacheLayout::blocks_tokens})
      if (s == layout_name(l)) return l;
    fail(a.ptr, expected, shown(a.v));
  }

  // [lo, hi], 1 <= lo <= hi <= max.
  Range range(const At& a, std::int64_t max) const {
    const std::string expected = fmt::format("[lo, hi]: two integers with 1 <= lo <= hi <= {}", max);
    if (!a.v.is_array() || a.v.size() != 2) fail(a.ptr, expected, shown(a.v));
    Range r;
    r.lo = integer(At{a.v[0], a.ptr + "/0"}, 1, max);
    r.hi = integer(At{a.v[1], a.ptr + "/1"}, 1, max);
    if (r.lo > r.hi) fail(a.ptr, expected, shown(a.v));
    return r;
  }

 private:
  const std::string& origin_;
};

bool is_power_of_two(std::int64_t x) {
  return x > 0 && (x & (x - 1)) == 0;
}

Bucket read_bucket(const Reader& r, const At& a) {
  r.object(a, {"dtype", "kv_dtype", "head_dim", "page_size", "layout", "group", "batch", "context"}, {"q_len"});
  Bucket b;
  b.dtype = r.dtype(r.member(a, "dtype"));
  b.kv_dtype = r.dtype(r.member(a, "kv_dtype"));
  if (is_fp8(b.dtype)) r.fail(a.ptr + "/dtype", "a query dtype (fp32, fp16 or bf16)", dtype_name(b.dtype));
  if (b.kv_dtype != b.dtype && !is_fp8(b.kv_dtype))
    r.fail(a.ptr + "/kv_dtype", fmt::format("\"{}\" (the query's dtype), \"e4m3\" or \"e5m2\"", dtype_name(b.dtype)),
           fmt::format("\"{}\"", dtype_name(b.kv_dtype)));
  const At hd = r.member(a, "head_dim");
  b.head_dim = int(r.integer(hd, 16, pj::kMaxHeadDim, "a multiple of 16"));
  if (b.head_dim % 16)
    r.fail(hd.ptr, fmt::format("a multiple of 16 in [16, {}]", pj::kMaxHeadDim), std::to_string(b.head_dim));
  const At ps = r.member(a, "page_size");
  b.page_size = int(r.integer(ps, 1, 256, "a power of two"));
  if (!is_power_of_two(b.page_size)) r.fail(ps.ptr, "a power of two in [1, 256]", std::to_string(b.page_size));
  b.layout = r.layout(r.member(a, "layout"));
  b.group = r.range(r.member(a, "group"), 1 << 20);
  b.q_len = a.v.contains("q_len") ? r.range(r.member(a, "q_len"), 8) : Range{1, 1};
  b.batch = r.range(r.member(a, "batch"), kMaxBucketValue);
  b.context = r.range(r.member(a, "context"), kMaxBucketValue);
  return b;
}

// `config` of an entry whose bucket is `b` (head_dim, dtype: whether a dim
// split can run is known from the file alone).
KernelConfig read_config(const Reader& r, const At& a, const Bucket& b) {
  const int head_dim = b.head_dim;
  r.object(a, {"tile_tokens", "warps", "stages"}, {"chunk_tokens", "v_dims", "work_waves"});
  KernelConfig c;
  c.warps = int(r.integer(r.member(a, "warps"), 1, 8));
  const At tile = r.member(a, "tile_tokens");
  c.tile_tokens = int(r.integer(tile, 16, 256, "a multiple of 16 * warps"));
  if (!pj::tile_shape_ok(c.tile_tokens, c.warps))
    r.fail(tile.ptr, jit::tile_shape_rule(c.warps) + ", in [16, 256]", std::to_string(c.tile_tokens));
  c.stages = int(r.integer(r.member(a, "stages"), 2, 8));
  if (a.v.contains("chunk_tokens")) {
    const At ch = r.member(a, "chunk_tokens");
    c.chunk_tokens = int(r.integer(ch, 0, kMaxChunkTokens, "0 or a multiple of tile_tokens"));
    if (c.chunk_tokens % c.tile_tokens)
      r.fail(ch.ptr, fmt::format("0 or a multiple of tile_tokens = {}", c.tile_tokens), std::to_string(c.chunk_tokens));
  }
  if (a.v.contains("v_dims")) {
    const At dv = r.member(a, "v_dims");
    const int max_dv = std::min(256, head_dim);
    c.v_dims = int(r.integer(dv, 0, max_dv, "0 or a multiple of 16"));
    if (c.v_dims % 16) r.fail(dv.ptr, fmt::format("0 or a multiple of 16 up to {}", max_dv), std::to_string(c.v_dims));
  }
  if (a.v.contains("work_waves"))
    c.work_waves = int(r.integer(r.member(a, "work_waves"), 0, pj::kMaxWorkWaves, "0 (engine chooses) or 1..16"));
  const int dv = c.v_dims ? c.v_dims : jit::default_v_dims(head_dim);
  if (!pj::dim_split_ok(c.tile_tokens, c.warps, dv, b.dtype != DType::f32))
    r.fail(a.ptr + "/warps", jit::dim_split_rule(c.tile_tokens, c.warps),
           fmt::format("{} warps, {} output dims, {}", c.warps, dv, dtype_name(b.dtype)));
  return c;
}

bool overlaps(const Range& a, const Range& b) {
  return a.lo <= b.hi && b.lo <= a.hi;
}

bool same_exact_key(const Bucket& a, const Bucket& b) {
  return a.dtype == b.dtype && a.kv_dtype == b.kv_dtype && a.head_dim == b.head_dim && a.page_size == b.page_size &&
         a.layout == b.layout;
}

// Parses JSON, refusing duplicate keys in an object.
json parse_json(const Reader& r, const std::string& text) {
  if (text.empty()) r.fail("", "a JSON profile", "an empty file");
  if (text.size() > kMaxProfileBytes)
    r.fail("", fmt::format("a file of at most {} bytes", kMaxProfileBytes), fmt::format("{} bytes", text.size()));
  if (json_too_deep(text))
    r.fail("", fmt::format("JSON nested at most {} levels deep", kMaxJsonDepth), "deeper nesting");
  std::vector<std::set<std::string>> keys;  // per open object (arrays push an empty marker)
  std::string duplicate;
  const json::parser_callback_t cb = [&](int, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key:
        if (!keys.empty() && parsed.is_string() && !keys.back().insert(parsed.get<std::string>()).second &&
            duplicate.empty())
          duplicate = parsed.get<std::string>();
        break;
      case json::parse_event_t::value:
        break;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text, cb);
  } catch (const json::exception& e) {
    std::string what = e.what();
    if (what.size() > 300) what = what.substr(0, 297) + "...";
    r.fail("", "a JSON profile", fmt::format("invalid JSON: {}", what));
  }
  if (!duplicate.empty())
    r.fail("", "JSON objects without duplicate keys", fmt::format("the key \"{}\" twice in an object", duplicate));
  return j;
}

}  // namespace

// ------------------------------------------------------------------ model

double Range::log_distance(std::int64_t x) const {
  const double v = double(std::max<std::int64_t>(x, 1));
  if (x >= lo && x <= hi) return 0;
  const double edge = double(x < lo ? lo : hi);
  return std::fabs(std::log2(v) - std::log2(edge));
}

ProblemShape Bucket::corner(bool high) const {
  const auto pick = [&](const Range& r) { return high ? r.hi : r.lo; };
  ProblemShape s;
  s.dtype = s.out_dtype = dtype;
  s.kv_dtype = kv_dtype;
  s.head_dim = head_dim;
  s.page_size = page_size;
  s.layout = layout;
  s.num_kv_heads = 1;
  s.num_heads = int(pick(group));
  s.q_len = int(pick(q_len));
  s.num_seqs = int(pick(batch));
  s.max_context_len = pick(context);
  s.max_blocks = int((s.max_context_len + page_size - 1) / page_size);
  s.num_blocks = s.max_blocks;
  return s;
}

bool Bucket::exact_match(const ProblemShape& s) const {
  return dtype == s.dtype && kv_dtype == s.kv_dtype && head_dim == s.head_dim && page_size == s.page_size &&
         layout == s.layout;
}

bool Bucket::sizes_contain(const ProblemShape& s) const {
  return batch.contains(s.num_seqs) && context.contains(s.max_context_len);
}

bool Bucket::operator==(const Bucket& o) const {
  return same_exact_key(*this, o) && group == o.group && q_len == o.q_len && batch == o.batch && context == o.context;
}

std::string Bucket::describe() const {
  const auto rng = [](const Range& r) {
    return r.lo == r.hi ? std::to_string(r.lo) : fmt::format("{}-{}", r.lo, r.hi);
  };
  return fmt::format("{}/{} d{} p{} {} g{} q{} b{} ctx{}", dtype_name(dtype), dtype_name(kv_dtype), head_dim, page_size,
                     layout_name(layout), rng(group), rng(q_len), rng(batch), rng(context));
}

std::string describe_config(const KernelConfig& c) {
  // work_waves only when set: the tuner's stored result keys of configurations
  // without it stay what they were.
  std::string s = fmt::format("tile={} warps={} stages={} chunk={} dv={}", c.tile_tokens, c.warps, c.stages,
                              c.chunk_tokens, c.v_dims);
  if (c.work_waves) s += fmt::format(" waves={}", c.work_waves);
  return s;
}

bool same_config(const KernelConfig& a, const KernelConfig& b) {
  return a.tile_tokens == b.tile_tokens && a.warps == b.warps && a.stages == b.stages &&
         a.chunk_tokens == b.chunk_tokens && a.v_dims == b.v_dims && a.work_waves == b.work_waves;
}

int config_smem_bytes(const KernelConfig& c, const ProblemShape& s) {
  const int dv = c.v_dims ? c.v_dims : jit::default_v_dims(s.head_dim);
  const int q_elem = is_fp8(s.kv_dtype) ? 2 : int(dtype_size(s.dtype));  // fp8: the query tile is fp16
  return pj::decode_smem(s.head_dim, dv, q_elem, int(dtype_size(s.kv_dtype)), c.tile_tokens, c.warps, c.stages,
                         s.dtype == DType::f32)
      .total;
}

std::string config_error(const KernelConfig& c, const ProblemShape& s, const DeviceInfo& d) {
  if (c.warps < 1 || c.warps > 8) return fmt::format("warps {} outside 1..8", c.warps);
  if (32 * c.warps > 1024) return fmt::format("{} threads per CTA (at most 1024)", 32 * c.warps);
  if (c.tile_tokens <= 0 || c.tile_tokens > 256 || !pj::tile_shape_ok(c.tile_tokens, c.warps))
    return fmt::format("tile_tokens {} is not {}, in [16, 256]", c.tile_tokens, jit::tile_shape_rule(c.warps));
  if (c.stages < 2 || c.stages > 8) return fmt::format("stages {} outside 2..8", c.stages);
  if (c.chunk_tokens < 0 || c.chunk_tokens > kMaxChunkTokens || c.chunk_tokens % c.tile_tokens)
    return fmt::format("chunk_tokens {} is not 0 or a multiple of tile_tokens {} up to 2^30", c.chunk_tokens,
                       c.tile_tokens);
  if (s.head_dim < 16 || s.head_dim > pj::kMaxHeadDim || s.head_dim % 16) return fmt::format("head_dim {}", s.head_dim);
  const int max_dv = std::min(256, s.head_dim);
  if (c.v_dims < 0 || c.v_dims > max_dv || c.v_dims % 16)
    return fmt::format("v_dims {} is not 0 or a multiple of 16 up to {}", c.v_dims, max_dv);
  if (c.work_waves < 0 || c.work_waves > pj::kMaxWorkWaves)
    return fmt::format("work_waves {} outside 0..{}", c.work_waves, pj::kMaxWorkWaves);
  const int dv = c.v_dims ? c.v_dims : jit::default_v_dims(s.head_dim);
  if (!pj::dim_split_ok(c.tile_tokens, c.warps, dv, s.dtype != DType::f32))
    return fmt::format("{} warps with {} output dims on {}: {}", c.warps, dv, dtype_name(s.dtype),
                       jit::dim_split_rule(c.tile_tokens, c.warps));
  const int smem = config_smem_bytes(c, s);
  if (d.max_smem_per_block > 0 && smem > d.max_smem_per_block)
    return fmt::format("needs {} bytes of shared memory, {} allows {} per block", smem, d.name, d.max_smem_per_block);
  return "";
}

// ------------------------------------------------------------------ parsing

Profile parse_profile(const std::string& text, const std::string& origin) {
  const Reader r(origin);
  const json j = parse_json(r, text);
  const At root{j, ""};
  if (!j.is_object()) r.fail("", "a JSON object (a profile)", shown(j));
  if (!j.contains("schema_version")) r.fail("/schema_version", "a value (missing)", "nothing");
  const At sv = r.member(root, "schema_version");
  if (!sv.v.is_number_integer() || sv.v.get<std::int64_t>() != kProfileSchemaVersion)
    r.fail(sv.ptr, fmt::format("{} (the schema version this pagedjit reads)", kProfileSchemaVersion), shown(sv.v));
  r.object(root, {"schema_version", "device", "toolkit", "driver", "engine_version", "read_GBps", "entries"},
           {"created_utc", "about"});

  Profile p;
  p.origin = origin;
  const At dev = r.member(root, "device");
  r.object(dev, {"name", "arch", "sm_count", "memory_bytes"}, {});
  p.device.name = r.string(r.member(dev, "name"));
  const At arch = r.member(dev, "arch");
  p.device.arch = r.string(arch, 16);
  {
    const std::string& a = p.device.arch;
    bool ok = a.size() > 3 && a.compare(0, 3, "sm_") == 0 && std::isdigit(static_cast<unsigned char>(a[3]));
    for (std::size_t i = 3; ok && i < a.size(); ++i)
      ok = std::isdigit(static_cast<unsigned char>(a[i])) ||
           (i + 1 == a.size() && std::isalpha(static_cast<unsigned char>(a[i])));
    if (!ok) r.fail(arch.ptr, "an NVRTC target like \"sm_90a\"", shown(arch.v));
  }
  p.device.sm_count = int(r.integer(r.member(dev, "sm_count"), 1, 100000));
  p.device.memory_bytes = r.integer(r.member(dev, "memory_bytes"), 0, std::numeric_limits<std::int64_t>::max());
  p.toolkit = r.string(r.member(root, "toolkit"), 64);
  p.driver = r.string(r.member(root, "driver"), 64);
  p.engine_version = r.string(r.member(root, "engine_version"), 64);
  if (j.contains("created_utc")) p.created_utc = r.string(r.member(root, "created_utc"), 64);
  if (j.contains("about")) p.about = r.string(r.member(root, "about"), 4096, true);
  p.read_GBps = r.number(r.member(root, "read_GBps"), 0, 1e6, true);

  const At entries = r.member(root, "entries");
  if (!entries.v.is_array()) r.fail(entries.ptr, "an array of entries", shown(entries.v));
  for (std::size_t i = 0; i < entries.v.size(); ++i) {
    const At e{entries.v[i], fmt::format("{}/{}", entries.ptr, i)};
    r.object(e, {"bucket", "config", "time_ms", "frac_read"}, {"heuristic_ms", "chosen", "problem"});
    Entry en;
    en.bucket = read_bucket(r, r.member(e, "bucket"));
    en.config = read_config(r, r.member(e, "config"), en.bucket);
    en.time_ms = r.number(r.member(e, "time_ms"), 0, 1e9, true);
    en.frac_read = r.number(r.member(e, "frac_read"), 0, 100, false);
    if (e.v.contains("heuristic_ms")) en.heuristic_ms = r.number(r.member(e, "heuristic_ms"), 0, 1e9, true);
    if (e.v.contains("chosen")) {
      const At ch = r.member(e, "chosen");
      en.chosen = r.string(ch, 16);
      if (en.chosen != "tuned" && en.chosen != "heuristic") r.fail(ch.ptr, "\"tuned\" or \"heuristic\"", shown(ch.v));
    }
    if (e.v.contains("problem")) en.problem = r.string(r.member(e, "problem"), 1024, true);
    // Entries with the same exact key must not overlap: nearest would be ambiguous.
    for (std::size_t k = 0; k < p.entries.size(); ++k) {
      const Bucket& o = p.entries[k].bucket;
      if (same_exact_key(o, en.bucket) && overlaps(o.group, en.bucket.group) && overlaps(o.q_len, en.bucket.q_len) &&
          overlaps(o.batch, en.bucket.batch) && overlaps(o.context, en.bucket.context))
        r.fail(e.ptr + "/bucket",
               fmt::format("a bucket that overlaps no other entry's (entry {} is {})", k, o.describe()),
               en.bucket.describe());
    }
    p.entries.push_back(std::move(en));
  }
  return p;
}

Profile load_profile_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InvalidArgument(path, "a readable profile file", "a file that cannot be opened");
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) throw InvalidArgument(path, "a readable profile file", "a file whose size cannot be read");
  if (std::uint64_t(size) > kMaxProfileBytes)
    throw InvalidArgument(path + "#/", fmt::format("a file of at most {} bytes", kMaxProfileBytes),
                          fmt::format("{} bytes", size));
  in.seekg(0);
  std::string text(std::size_t(size), '\0');
  in.read(text.data(), size);
  if (!in) throw InvalidArgument(path, "a readable profile file", "a read error");
  return parse_profile(text, path);
}

std::string profile_error_text(const std::exception& e) {
  const std::string s = e.what();
  const std::string prefix = kArgumentErrorPrefix;
  return s.compare(0, prefix.size(), prefix) == 0 ? s.substr(prefix.size()) : s;
}

// ------------------------------------------------------------------ writing

std::string serialize_profile(const Profile& p) {
  const auto range = [](const Range& r) { return ojson::array({r.lo, r.hi}); };
  ojson head;
  head["schema_version"] = p.schema_version;
  if (!p.about.empty()) head["about"] = p.about;
  head["device"] = ojson{{"name", p.device.name},
                         {"arch", p.device.arch},
                         {"sm_count", p.device.sm_count},
                         {"memory_bytes", p.device.memory_bytes}};
  head["toolkit"] = p.toolkit;
  head["driver"] = p.driver;
  head["engine_version"] = p.engine_version;
  if (!p.created_utc.empty()) head["created_utc"] = p.created_utc;
  head["read_GBps"] = p.read_GBps;
  std::string out = "{\n";
  for (auto it = head.begin(); it != head.end(); ++it)
    out += fmt::format(" {}: {},\n", ojson(it.key()).dump(),
                       it.value().dump(-1, ' ', false, ojson::error_handler_t::replace));
  out += " \"entries\": [";
  for (std::size_t i = 0; i < p.entries.size(); ++i) {
    const Entry& e = p.entries[i];
    const Bucket& b = e.bucket;
    ojson je;
    je["bucket"] = ojson{{"dtype", dtype_name(b.dtype)},    {"kv_dtype", dtype_name(b.kv_dtype)},
                         {"head_dim", b.head_dim},          {"page_size", b.page_size},
                         {"layout", layout_name(b.layout)}, {"group", range(b.group)},
                         {"q_len", range(b.q_len)},         {"batch", range(b.batch)},
                         {"context", range(b.context)}};
    je["config"] = ojson{{"tile_tokens", e.config.tile_tokens},
                         {"warps", e.config.warps},
                         {"stages", e.config.stages},
                         {"chunk_tokens", e.config.chunk_tokens},
                         {"v_dims", e.config.v_dims}};
    // Only when set, so that profiles without the device schedule's knob read as before.
    if (e.config.work_waves) je["config"]["work_waves"] = e.config.work_waves;
    je["time_ms"] = e.time_ms;
    je["frac_read"] = e.frac_read;
    if (e.heuristic_ms > 0) je["heuristic_ms"] = e.heuristic_ms;
    if (!e.chosen.empty()) je["chosen"] = e.chosen;
    if (!e.problem.empty()) je["problem"] = e.problem;
    out += fmt::format("{}\n  {}", i ? "," : "", je.dump(-1, ' ', false, ojson::error_handler_t::replace));
  }
  out += p.entries.empty() ? "]\n}\n" : "\n ]\n}\n";
  return out;
}

// ------------------------------------------------------------------ matching

int nearest_entry(const Profile& p, const ProblemShape& s) {
  // Range::log_distance, with the call's log2 computed once per call.
  const auto dist = [](const Range& r, std::int64_t x, double lx) {
    return x < r.lo ? std::log2(double(r.lo)) - lx : x > r.hi ? lx - std::log2(double(r.hi)) : 0.0;
  };
  const std::int64_t q = std::max(s.q_len, 1), g = s.num_kv_heads > 0 ? std::max(s.group(), 1) : 1;
  const std::int64_t n = std::max(s.num_seqs, 1);
  const std::int64_t c = std::max<std::int64_t>(s.max_context_len, 1);
  const double lq = std::log2(double(q)), lg = std::log2(double(g)), ln = std::log2(double(n)),
               lc = std::log2(double(c));
  int best = -1;
  std::tuple<double, double, double> best_key{0, 0, 0};
  for (std::size_t i = 0; i < p.entries.size(); ++i) {
    const Bucket& b = p.entries[i].bucket;
    if (!b.exact_match(s)) continue;
    const std::tuple<double, double, double> key{dist(b.q_len, q, lq), dist(b.group, g, lg),
                                                 dist(b.batch, n, ln) + dist(b.context, c, lc)};
    if (best < 0 || key < best_key) {
      best = int(i);
      best_key = key;
    }
  }
  return best;
}

}  // namespace pagedjit::tuning
