#include "ragged_bench.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <future>
#include <set>
#include <string>

#include "../common/timing.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/reference.hpp"

namespace pjbench {
namespace {

using pagedjit::DeviceBuffer;
using pagedjit::DType;
using pagedjit::RaggedAttentionArgs;
using pagedjit::TensorView;

void* offset(void* p, std::int64_t bytes) {
  return static_cast<char*>(p) + bytes;
}

DeviceBuffer upload_i32(const std::vector<int>& v) {
  DeviceBuffer b(v.size() * 4);
  b.upload(v.data(), b.size());
  return b;
}

std::vector<int> prefix_sums(const std::vector<int>& q) {
  std::vector<int> starts(q.size() + 1, 0);
  for (std::size_t s = 0; s < q.size(); ++s) starts[s + 1] = starts[s] + q[s];
  return starts;
}

// Query data: uniform in [-1, 1), never zero (xorshift64*, like the test problems).
std::vector<std::uint8_t> random_query(std::int64_t elems, DType dt, std::uint64_t seed) {
  std::vector<std::uint8_t> q(std::size_t(elems) * pagedjit::dtype_size(dt));
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x7A3D5C1B2E4F6081ull;
  for (std::int64_t i = 0; i < elems; ++i) {
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    float u = float((x * 0x2545F4914F6CDD1Dull) >> 40) * (2.0f / 16777216.0f) - 1.0f;
    if (u == 0.f) u = 0.5f;
    pagedjit::store_element(q.data(), i, u, dt);
  }
  return q;
}

// Elements of a device output that are NaN or Inf (0xff poison left unwritten).
std::int64_t count_nonfinite(const DeviceBuffer& out, std::size_t bytes, DType dt) {
  std::vector<std::uint8_t> h(bytes);
  out.download(h.data(), bytes);
  std::int64_t n = 0;
  if (dt == DType::f32) {
    for (std::size_t i = 0; i + 4 <= bytes; i += 4) {
      std::uint32_t b;
      std::memcpy(&b, &h[i], 4);
      n += (b & 0x7f800000u) == 0x7f800000u;
    }
  } else {
    const std::uint16_t mask = dt == DType::f16 ? 0x7c00 : 0x7f80;
    for (std::size_t i = 0; i + 2 <= bytes; i += 2) {
      std::uint16_t b;
      std::memcpy(&b, &h[i], 2);
      n += (b & mask) == mask;
    }
  }
  return n;
}

// The rows of a ragged case the CPU reference checks: in each group's first
// sequence and the last sequence, query tokens 0, 64, the middle one and the
// last (those that exist).
struct CheckRow {
  int seq;
  std::int64_t row;       // packed row
  std::int64_t position;  // its position in the sequence (sees keys 0..position)
};

std::vector<CheckRow> check_rows(const BenchCase& c) {
  const std::vector<int> q = c.q_lens(), lens = c.context_lens(), starts = prefix_sums(q);
  std::set<int> seqs;
  int first = 0;
  for (const RaggedGroup& g : c.groups) {
    seqs.insert(first);
    first += g.count;
  }
  seqs.insert(int(q.size()) - 1);
  std::vector<CheckRow> rows;
  for (int s : seqs) {
    const int n = q[std::size_t(s)];
    std::set<int> tokens;
    for (int i : {0, 64, n / 2, n - 1})
      if (i >= 0 && i < n) tokens.insert(i);
    for (int i : tokens)
      rows.push_back(CheckRow{s, std::int64_t(starts[std::size_t(s)]) + i, std::int64_t(lens[std::size_t(s)]) - n + i});
  }
  return rows;
}

// reference_ragged_attention on `rows` of a ragged case (each row as a
// one-token sequence whose context ends at its position: the same keys the
// causal call shows it), against the device output `out` ([T, H, D]); and
// every element of `out` for unwritten (poisoned) ones. One thread per row.
Json check_against_reference(const BenchCase& c, const pagedjit::testing::HostProblem& host,
                             const std::vector<std::uint8_t>& q_host, const DeviceBuffer& out,
                             const pagedjit::PagedAttentionOptions& opts) {
  const pagedjit::PagedAttentionArgs ha = host.args();  // host views of the caches and the table
  const int H = c.q_heads, D = c.head_dim;
  const std::size_t es = pagedjit::dtype_size(c.dtype), row_bytes = std::size_t(H) * D * es;
  const std::int64_t mb = ha.block_tables.shape[1], table_stride = ha.block_tables.strides[0];
  const std::vector<CheckRow> rows = check_rows(c);
  const auto one_row = [&](const CheckRow& r) {
    std::vector<std::uint8_t> q(q_host.begin() + std::ptrdiff_t(r.row * std::int64_t(row_bytes)),
                                q_host.begin() + std::ptrdiff_t((r.row + 1) * std::int64_t(row_bytes)));
    std::vector<std::int32_t> starts{0, 1}, lens{std::int32_t(r.position + 1)};
    const auto* t = static_cast<const std::int32_t*>(ha.block_tables.data) + r.seq * table_stride;
    std::vector<std::int32_t> table(t, t + mb);
    std::vector<std::uint8_t> scratch(row_bytes);
    RaggedAttentionArgs a;
    a.query = TensorView(q.data(), c.dtype, {1, H, D});
    a.query_start = TensorView(starts.data(), DType::i32, {2});
    a.context_lens = TensorView(lens.data(), DType::i32, {1});
    a.block_tables = TensorView(table.data(), DType::i32, {1, mb});
    a.key_cache = ha.key_cache;
    a.value_cache = ha.value_cache;
    a.layout = ha.layout;
    a.k_scale = ha.k_scale;
    a.v_scale = ha.v_scale;
    a.output = TensorView(scratch.data(), c.dtype, {1, H, D});
    a.max_query_len = 1;
    return pagedjit::reference_ragged_attention(a, opts).output;
  };
  std::vector<std::future<std::vector<double>>> futures;
  for (const CheckRow& r : rows) futures.push_back(std::async(std::launch::async, one_row, r));
  std::vector<double> want;
  std::vector<float> got;
  std::vector<std::uint8_t> buf(row_bytes);
  Json checked = Json::array();
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const std::vector<double> w = futures[i].get();
    want.insert(want.end(), w.begin(), w.end());
    out.download(buf.data(), row_bytes, std::size_t(rows[i].row) * row_bytes);
    for (std::int64_t e = 0; e < std::int64_t(H) * D; ++e)
      got.push_back(pagedjit::load_element(buf.data(), e, c.dtype));
    checked.push_back(Json{{"seq", rows[i].seq}, {"row", rows[i].row}, {"position", rows[i].position}});
  }
  const pagedjit::testing::ErrorStats err = pagedjit::testing::compare(got, want);
  const std::int64_t unwritten = count_nonfinite(out, std::size_t(c.query_tokens()) * row_bytes, c.dtype);
  const double tol = tolerance(c.dtype);
  const bool pass = err.nonfinite == 0 && unwritten == 0 && err.rel_l2 <= tol;
  return Json{{"rows", checked},
              {"rel_l2", err.nonfinite ? Json() : Json(err.rel_l2)},
              {"max_abs", err.max_abs},
              {"nonfinite", err.nonfinite},
              {"nonfinite_anywhere", unwritten},
              {"tolerance", tol},
              {"pass", pass}};
}

Json stats_json(const Stats& st) {
  return Json{{"time_ms", st.median}, {"min_ms", st.min}, {"p10_ms", st.p10},
              {"p90_ms", st.p90},     {"max_ms", st.max}, {"reps", st.n}};
}

// A group of a ragged call: sequences [s0, s0 + n), packed rows [r0, r0 + rows).
RaggedAttentionArgs group_view(const RaggedAttentionArgs& full, int s0, int n, std::int64_t r0, std::int64_t rows,
                               int q_len, void* query_start) {
  RaggedAttentionArgs g = full;
  const auto rows_of = [&](const TensorView& v) {
    TensorView r = v;
    r.data = offset(v.data, r0 * v.strides[0] * std::int64_t(pagedjit::dtype_size(v.dtype)));
    r.shape[0] = rows;
    return r;
  };
  const auto seqs_of = [&](const TensorView& v) {
    TensorView r = v;
    r.data = offset(v.data, std::int64_t(s0) * v.strides[0] * 4);
    r.shape[0] = n;
    return r;
  };
  g.query = rows_of(full.query);
  g.output = rows_of(full.output);
  g.context_lens = seqs_of(full.context_lens);
  g.block_tables = seqs_of(full.block_tables);
  g.query_start = TensorView(query_start, DType::i32, {n + 1});
  g.max_query_len = q_len;
  return g;
}

// The timing loop's L2 treatment: `between` flushes when the plan flushes.
struct Flush {
  std::unique_ptr<DeviceBuffer> buf;
  std::function<void(int)> between;
  Flush(const L2Plan& l2, CUstream stream) {
    if (!l2.flush_bytes) return;
    buf = std::make_unique<DeviceBuffer>(std::size_t(l2.flush_bytes));
    DeviceBuffer* b = buf.get();
    between = [b, stream](int i) {
      pagedjit::check(pagedjit::driver().cuMemsetD8Async(b->ptr(), static_cast<unsigned char>(i), b->size(), stream),
                      "cuMemsetD8Async(L2 flush)");
    };
  }
};

}  // namespace

RaggedAttentionArgs decode_as_ragged(const pagedjit::PagedAttentionArgs& a, int batch, int q_len, void* query_start) {
  RaggedAttentionArgs r;
  const std::int64_t rows = std::int64_t(batch) * q_len;
  const auto packed = [&](const TensorView& v) {
    const std::int64_t h = v.shape[v.rank - 2], d = v.shape[v.rank - 1];
    // The token stride: rows of a [batch, q_len, ...] query follow each other when it is contiguous.
    return TensorView(v.data, v.dtype, {rows, h, d},
                      {v.strides[v.rank - 3], v.strides[v.rank - 2], v.strides[v.rank - 1]});
  };
  r.query = packed(a.query);
  r.output = packed(a.output);
  r.query_start = TensorView(query_start, DType::i32, {batch + 1});
  r.key_cache = a.key_cache;
  r.value_cache = a.value_cache;
  r.context_lens = a.context_lens;
  r.block_tables = a.block_tables;
  r.layout = a.layout;
  r.k_scale = a.k_scale;
  r.v_scale = a.v_scale;
  r.sinks = a.sinks;
  r.max_query_len = q_len;
  return r;
}

Json time_decode_as_ragged(pagedjit::Engine& engine, const BenchCase& c,
                           const std::vector<std::unique_ptr<pagedjit::testing::DeviceProblem>>& sets,
                           const pagedjit::PagedAttentionOptions& opts, const std::vector<int>& seqs, double paged_ms,
                           int warmup, int reps, const std::function<void(int)>& between, CUstream stream) {
  const pagedjit::DriverApi& d = pagedjit::driver();
  Json j;
  j["error"] = nullptr;
  try {
    std::vector<int> starts(std::size_t(c.batch) + 1);
    for (int s = 0; s <= c.batch; ++s) starts[std::size_t(s)] = s * c.q_len;
    const DeviceBuffer starts_d = upload_i32(starts);
    std::vector<RaggedAttentionArgs> args;
    for (const auto& p : sets) args.push_back(decode_as_ragged(p->args(), c.batch, c.q_len, starts_d.data()));
    // Correctness: the paged case's check, on what the ragged call wrote.
    sets[0]->poison_outputs();
    const pagedjit::LaunchInfo info = engine.ragged_paged_attention(args[0], opts, stream);
    pagedjit::check(d.cuStreamSynchronize(stream), "cuStreamSynchronize");
    j["launch"] = launch_info_json(info);
    const pagedjit::testing::ErrorStats err = sets[0]->check(opts, seqs);
    const double tol = tolerance(c.dtype);
    j["check"] = Json{{"seqs", seqs},           {"rel_l2", err.nonfinite ? Json() : Json(err.rel_l2)},
                      {"max_abs", err.max_abs}, {"nonfinite", err.nonfinite},
                      {"tolerance", tol},       {"pass", err.nonfinite == 0 && err.rel_l2 <= tol}};
    const std::size_t n = args.size();
    const auto call = [&](int i) { engine.ragged_paged_attention(args[std::size_t(i) % n], opts, stream); };
    const Stats st = summarize(time_calls(stream, warmup, reps, call, between));
    j.update(stats_json(st));
    j["paged_ms"] = paged_ms;
    j["ratio"] = st.median / paged_ms;
  } catch (const pagedjit::Error& e) {
    j["error"] = fmt::format("{}: {}", pagedjit::error_code_name(e.code()), e.what());
    d.cuStreamSynchronize(stream);
  }
  return j;
}

Json run_ragged_case(pagedjit::Engine& engine, const BenchCase& c, const Bandwidth& bw, const RunSettings& s,
                     CUstream stream) {
  const pagedjit::DriverApi& d = pagedjit::driver();
  Json row;
  row["name"] = c.name;
  row["origin"] = c.origin;
  row["shape"] = c.shape_text();
  row["config"] = case_config_json(c);
  row["query_tokens"] = c.query_tokens();
  row["tokens"] = c.tokens();
  row["kv_bytes"] = c.kv_bytes();
  row["bytes"] = c.bytes();
  row["flops"] = c.causal_flops();
  row["flops_counted"] = "4 x head_dim x visible keys, summed over query tokens and heads (causal work only)";
  row["gemm_ceiling_TFLOPs"] = s.gemm_ceiling_tflops;
  row["error"] = nullptr;
  try {
    const L2Plan l2 = plan_case_memory(c, engine.device().l2_bytes, s, row);

    // Problem sets: the cache (and the table and lengths) of a decode
    // problem with the case's contexts, plus a packed query and output.
    const double t0 = host_seconds();
    const int H = c.q_heads, D = c.head_dim;
    const std::int64_t T = c.query_tokens();
    const std::size_t qo_bytes = std::size_t(T) * std::size_t(H) * std::size_t(D) * pagedjit::dtype_size(c.dtype);
    const std::vector<std::uint8_t> q_host = random_query(T * H * D, c.dtype, c.seed * 7919 + 17);
    const std::vector<int> q_lens = c.q_lens(), starts = prefix_sums(q_lens);
    const DeviceBuffer starts_d = upload_i32(starts);
    struct Set {
      std::unique_ptr<pagedjit::testing::DeviceProblem> problem;
      DeviceBuffer query, output;
      RaggedAttentionArgs args;
    };
    std::vector<Set> sets;
    for (int i = 0; i < l2.sets; ++i) {
      Set set{std::make_unique<pagedjit::testing::DeviceProblem>(c.problem(i)), DeviceBuffer(qo_bytes),
              DeviceBuffer(qo_bytes), RaggedAttentionArgs{}};
      set.query.upload(q_host.data(), qo_bytes);
      const pagedjit::PagedAttentionArgs pa = set.problem->args();
      RaggedAttentionArgs& a = set.args;
      a.query = TensorView(set.query.data(), c.dtype, {T, H, D});
      a.output = TensorView(set.output.data(), c.dtype, {T, H, D});
      a.query_start = TensorView(starts_d.data(), DType::i32, {c.batch + 1});
      a.key_cache = pa.key_cache;
      a.value_cache = pa.value_cache;
      a.context_lens = pa.context_lens;
      a.block_tables = pa.block_tables;
      a.layout = pa.layout;
      a.k_scale = pa.k_scale;
      a.v_scale = pa.v_scale;
      a.max_query_len = *std::max_element(q_lens.begin(), q_lens.end());
      sets.push_back(std::move(set));
    }
    row["setup_s"] = host_seconds() - t0;
    const pagedjit::PagedAttentionOptions opts = c.options();
    const auto poison = [&] {
      pagedjit::check(d.cuMemsetD8(sets[0].output.ptr(), 0xff, qo_bytes), "cuMemsetD8(poison)");
      pagedjit::check(d.cuCtxSynchronize(), "cuCtxSynchronize");
    };

    // Correctness: poisoned output, one call, the CPU reference on a few rows.
    poison();
    const double t1 = host_seconds();
    const pagedjit::LaunchInfo info = engine.ragged_paged_attention(sets[0].args, opts, stream);
    pagedjit::check(d.cuStreamSynchronize(stream), "cuStreamSynchronize");
    row["first_call_ms"] = (host_seconds() - t1) * 1e3;  // includes compiling and loading its kernels
    row["launch"] = launch_info_json(info);
    const double t2 = host_seconds();
    row["check"] = check_against_reference(c, sets[0].problem->host(), q_host, sets[0].output, opts);
    row["check_s"] = host_seconds() - t2;

    // Timing.
    const Flush flush(l2, stream);
    const int n = l2.sets;
    const int warmup = std::max(s.warmup, n);
    const auto call = [&](int i) { engine.ragged_paged_attention(sets[std::size_t(i % n)].args, opts, stream); };
    const Stats st = summarize(time_calls(stream, warmup, s.reps, call, flush.between));
    row["warmup"] = warmup;
    row.update(stats_json(st));
    const double tflops = c.causal_flops() / (st.median * 1e-3) / 1e12;
    const double gbps = double(c.bytes()) / (st.median * 1e-3) / 1e9;
    row["TFLOPs"] = tflops;
    row["frac_gemm"] = tflops / s.gemm_ceiling_tflops;
    row["GBps"] = gbps;
    row["frac_read"] = gbps / bw.read_GBps;

    // Several groups (a prefill chunk + decodes): the same work as one call per group.
    if (c.groups.size() > 1) {
      Json split;
      split["calls"] = Json::array();
      std::vector<DeviceBuffer> group_starts;
      std::vector<std::vector<RaggedAttentionArgs>> group_args(c.groups.size());
      int s0 = 0;
      for (std::size_t g = 0; g < c.groups.size(); ++g) {
        const RaggedGroup& gr = c.groups[g];
        std::vector<int> gs(std::size_t(gr.count) + 1);
        for (int k = 0; k <= gr.count; ++k) gs[std::size_t(k)] = k * gr.q_len;
        group_starts.push_back(upload_i32(gs));
        for (const Set& set : sets)
          group_args[g].push_back(group_view(set.args, s0, gr.count, starts[std::size_t(s0)],
                                             std::int64_t(gr.count) * gr.q_len, gr.q_len, group_starts.back().data()));
        s0 += gr.count;
      }
      // The calls one after the other write the same rows as the one call.
      poison();
      for (std::size_t g = 0; g < c.groups.size(); ++g) {
        const pagedjit::LaunchInfo gi = engine.ragged_paged_attention(group_args[g][0], opts, stream);
        split["calls"].push_back(
            Json{{"group", fmt::format("{}x{} after {}", c.groups[g].q_len, c.groups[g].count, c.groups[g].cached)},
                 {"launch", launch_info_json(gi)}});
      }
      pagedjit::check(d.cuStreamSynchronize(stream), "cuStreamSynchronize");
      split["check"] = check_against_reference(c, sets[0].problem->host(), q_host, sets[0].output, opts);
      double sum = 0;
      for (std::size_t g = 0; g < c.groups.size(); ++g) {
        const auto gcall = [&](int i) {
          engine.ragged_paged_attention(group_args[g][std::size_t(i % n)], opts, stream);
        };
        const Stats gst = summarize(time_calls(stream, warmup, s.reps, gcall, flush.between));
        split["calls"][g].update(stats_json(gst));
        sum += gst.median;
      }
      split["sum_ms"] = sum;
      split["ratio"] = st.median / sum;
      split["ratio_means"] = "one call's ms / the sum of the per-group calls' ms (< 1: the one call is faster)";
      row["split"] = split;
    }
  } catch (const pagedjit::Error& e) {
    row["error"] = fmt::format("{}: {}", pagedjit::error_code_name(e.code()), e.what());
    d.cuStreamSynchronize(stream);
  } catch (const std::bad_alloc&) {
    row["error"] = "out of host memory";
  }
  return row;
}

}  // namespace pjbench
