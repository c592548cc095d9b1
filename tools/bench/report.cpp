#include "report.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace pjbench {
namespace {

double num(const Json& j, const char* key, double fallback = 0) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : fallback;
}

std::string str(const Json& j, const char* key, const std::string& fallback = "") {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : fallback;
}

const Json* peer_entry(const Json& run, const std::string& name) {
  if (!run.contains("peers") || !run["peers"].contains("cases")) return nullptr;
  for (const Json& pc : run["peers"]["cases"])
    if (str(pc, "case") == name) return &pc;
  return nullptr;
}

// Where a case's launch configuration came from: "heuristic", "user",
// "batch-invariant", or "profile" with its level and file.
std::string plan_text(const Json& r) {
  if (!r.contains("launch") || !r["launch"].is_object()) return "-";
  const Json& l = r["launch"];
  std::string s = str(l, "source", "?");
  const std::string profile = str(l, "profile");
  if (!profile.empty()) s += " " + profile.substr(0, profile.find(" ("));  // level and file, not the bucket
  return s;
}

std::string gpu_line(const Json& run) {
  if (!run.contains("gpu")) return "GPU: unknown";
  const Json& g = run["gpu"];
  std::string s = fmt::format("GPU: {} ({} SMs, {}, {:.0f} MB L2, driver {}, NVRTC {})", str(g, "name", "?"),
                              num(g, "sm_count"), str(g, "arch", "?"), num(g, "l2_bytes") / 1e6,
                              str(g, "driver_version", "?"), str(g, "nvrtc_version", "?"));
  if (g.contains("sm_clock_khz") && g["sm_clock_khz"].is_number())
    s += fmt::format(", SM clock {:.0f} MHz", num(g, "sm_clock_khz") / 1e3);
  if (g.contains("memory_clock_khz") && g["memory_clock_khz"].is_number())
    s += fmt::format(", memory {:.0f} MHz x {:.0f} bit = {:.0f} GB/s datasheet", num(g, "memory_clock_khz") / 1e3,
                     num(g, "memory_bus_bits"), num(g, "datasheet_GBps"));
  return s;
}

// Run-time compilation (BENCHMARK.md target 5): the two child processes.
std::string compile_text(const Json& sc) {
  const Json none = Json::object();
  const Json& cold = sc.contains("compile") ? sc["compile"] : none;
  const Json& warm = sc.contains("warm_cache_load") ? sc["warm_cache_load"] : none;
  const auto ms_of = [](const Json& child, const char* step) {
    return child.contains(step) && child[step].is_object() ? num(child[step], "ms", -1) : -1.0;
  };
  const auto verdict = [](double ms, double target) { return ms <= target ? "ok" : "MISSED"; };
  std::string o = "  run-time compilation, child processes on a new empty cache directory (host clock):\n";
  const double cold_ms = ms_of(cold, "specialization"), warm_ms = ms_of(warm, "specialization");
  if (cold_ms >= 0) {
    o += fmt::format("    cold compile, one decode specialization:  {:9.1f} ms   target <= 500 ms  {:<6}  {}\n",
                     cold_ms, verdict(cold_ms, 500), str(cold["specialization"], "kernel"));
    const double added = num(cold["specialization"], "entries_added", 1);
    if (added != 1)
      o += fmt::format("      (that step compiled {:.0f} kernels, not one: the time is not one specialization's)\n",
                       added);
  } else if (cold.contains("pair_ms")) {  // a run from before the child processes
    o += fmt::format("    cold compile (older run, in-process): {:.0f} ms\n", num(cold, "pair_ms"));
  }
  if (cold.contains("error")) o += fmt::format("    cold compile: ERROR {}\n", str(cold, "error"));
  if (warm_ms >= 0)
    o += fmt::format("    warm-cache load, same specialization:      {:9.3f} ms   target <= 2 ms    {:<6}  {}\n",
                     warm_ms, verdict(warm_ms, 2), "(second process, from disk, PAGEDJIT_JIT=off)");
  if (warm.contains("error")) o += fmt::format("    warm-cache load: ERROR {}\n", str(warm, "error"));
  const double cold_first = ms_of(cold, "first_lookups"), warm_first = ms_of(warm, "first_lookups");
  if (cold_first >= 0 && warm_first >= 0)
    o += fmt::format(
        "    each process's first lookup before that (another tile's decode kernel): "
        "compile {:.0f} ms, load {:.3f} ms\n",
        cold_first, warm_first);
  if (warm.contains("gpu") && warm["gpu"].is_object()) {
    const Json& g = warm["gpu"];
    if (g.contains("first_call_overhead_ms"))
      o += fmt::format(
          "    first GPU call after the warm load: {:+.3f} ms over an identical second call ({:.3f} vs {:.3f} ms; "
          "module load of {:.0f} kernel{})\n",
          num(g, "first_call_overhead_ms"), num(g, "first_call_ms"), num(g, "second_call_ms"), num(g, "kernels_loaded"),
          num(g, "kernels_loaded") == 1 ? "" : "s");
    else if (g.contains("error"))
      o += fmt::format("    first GPU call after the warm load: ERROR {}\n", str(g, "error"));
    else
      o += fmt::format("    module load on the GPU: {}\n", str(g, "note", "not measured"));
  }
  return o;
}

std::string rel_err(const Json& r, int& failures) {
  if (!r.contains("check") || !r["check"].is_object()) return "-";
  const Json& c = r["check"];
  std::string err =
      c.contains("rel_l2") && c["rel_l2"].is_number() ? fmt::format("{:.1e}", c["rel_l2"].get<double>()) : "NaN";
  if (!c.value("pass", false)) {
    err += "!";
    ++failures;
  }
  return err;
}

// --ragged-decode: each decode case's inputs through ragged_paged_attention.
std::string ragged_decode_text(const Json& cases, int& failures) {
  std::size_t w = 4;
  bool any = false;
  for (const Json& r : cases)
    if (r.contains("ragged_decode")) {
      any = true;
      w = std::max(w, str(r, "name").size());
    }
  if (!any) return "";
  std::string o = fmt::format(
      "\ndecode cases through Engine::ragged_paged_attention (--ragged-decode: the same inputs, the query as packed "
      "rows; rg/pa = ragged ms / paged_attention ms, target <= 1.02)\n{:<{}}  {:>9}  {:>9}  {:>6}  {:>8}  plan\n",
      "case", w, "paged ms", "ragged ms", "rg/pa", "rel err");
  double log_sum = 0, worst = 0;
  int n = 0, within = 0;
  std::string worst_name;
  for (const Json& r : cases) {
    if (!r.contains("ragged_decode")) continue;
    const Json& rd = r["ragged_decode"];
    if (rd.contains("error") && rd["error"].is_string()) {
      o += fmt::format("{:<{}}  ERROR {}\n", str(r, "name"), w, str(rd, "error"));
      ++failures;
      continue;
    }
    const double ratio = num(rd, "ratio");
    log_sum += std::log(ratio);
    ++n;
    within += ratio <= 1.02;
    if (ratio > worst) worst = ratio, worst_name = str(r, "name");
    o += fmt::format("{:<{}}  {:9.4f}  {:9.4f}  {:6.3f}  {:>8}  {}\n", str(r, "name"), w, num(rd, "paged_ms"),
                     num(rd, "time_ms"), ratio, rel_err(rd, failures),
                     rd.contains("launch") ? str(rd["launch"], "describe") : "");
  }
  if (n)
    o += fmt::format("rg/pa: geomean {:.3f}, worst {:.3f} ({}); {} of {} cases within 1.02\n", std::exp(log_sum / n),
                     worst, worst_name, within, n);
  return o;
}

// Ragged cases (bench/cases-ragged.json).
std::string ragged_text(const Json& run, int& failures) {
  const Json& rows = run["ragged"];
  const double ceiling = run.contains("settings") ? num(run["settings"], "gemm_ceiling_TFLOPs", 790) : 790;
  std::size_t w = 4;
  for (const Json& r : rows) w = std::max(w, str(r, "name").size());
  std::string o = fmt::format(
      "\nragged cases (Engine::ragged_paged_attention): TFLOP/s of the causal work (4 x head_dim x visible keys over "
      "query tokens and heads); /gemm = of a {:.0f} TFLOP/s bf16 GEMM ceiling (a constant, --gemm-ceiling); "
      "1/split = one call's ms / the sum of one call per group (mixed target <= 0.95)\n",
      ceiling);
  o += fmt::format("{:<{}}  {:>9}  {:>7}  {:>5}  {:>7}  {:>5}  {:>9}  {:>7}  {:>8}  {:<5}  plan\n", "case", w, "ms",
                   "TFLOP/s", "/gemm", "GB/s", "/read", "split ms", "1/split", "rel err", "L2");
  for (const Json& r : rows) {
    const std::string name = str(r, "name");
    if (r.contains("error") && !r["error"].is_null()) {
      o += fmt::format("{:<{}}  ERROR {}\n", name, w, str(r, "error"));
      ++failures;
      continue;
    }
    std::string err = rel_err(r, failures), split_ms = "-", ratio = "-";
    if (r.contains("split")) {
      const Json& sp = r["split"];
      split_ms = fmt::format("{:.4f}", num(sp, "sum_ms"));
      ratio = fmt::format("{:.3f}", num(sp, "ratio"));
      const std::string split_err = rel_err(sp, failures);
      if (!split_err.empty() && split_err.back() == '!') err += " split" + split_err;
    }
    std::string l2 = "?";
    if (r.contains("l2"))
      l2 = str(r["l2"], "mode") == "flush" ? "flush" : fmt::format("rot{}", r["l2"].value("sets", 1));
    o += fmt::format("{:<{}}  {:9.4f}  {:7.1f}  {:5.3f}  {:7.1f}  {:5.3f}  {:>9}  {:>7}  {:>8}  {:<5}  {}\n", name, w,
                     num(r, "time_ms"), num(r, "TFLOPs"), num(r, "frac_gemm"), num(r, "GBps"), num(r, "frac_read"),
                     split_ms, ratio, err, l2, r.contains("launch") ? str(r["launch"], "describe") : "");
  }
  return o;
}

std::string small_calls_text(const Json& sc) {
  std::string o = fmt::format("\nsmall calls ({}):\n", str(sc, "case", "tiny"));
  if (sc.contains("error")) o += fmt::format("  ERROR: {}\n", str(sc, "error"));
  if (sc.contains("host")) {
    const Json& h = sc["host"];
    o += fmt::format("  host cost, warm Engine::paged_attention: {:7.2f} us/call ({} launch{} per call)\n",
                     num(h, "engine_us"), num(h, "engine_launches_per_call"),
                     num(h, "engine_launches_per_call") == 1 ? "" : "es");
    o += fmt::format("  host cost, bare cuLaunchKernel (empty): {:7.2f} us/call   -> engine overhead {:+.2f} us\n",
                     num(h, "bare_launch_us"), num(h, "overhead_us"));
    if (h.contains("engine_new_shape_us"))
      o += fmt::format("  host cost, a shape not planned lately:  {:7.2f} us/call   -> engine overhead {:+.2f} us\n",
                       num(h, "engine_new_shape_us"), num(h, "new_shape_overhead_us"));
    if (h.contains("new_shape_error"))
      o += fmt::format("  host cost, new shapes: ERROR {}\n", str(h, "new_shape_error"));
  }
  if (sc.contains("events"))
    o += fmt::format("  GPU time, one by one (event pairs):     {:7.2f} us/call   (includes launch gaps)\n",
                     num(sc["events"], "us"));
  if (sc.contains("graph")) {
    const Json& g = sc["graph"];
    if (g.contains("error"))
      o += fmt::format("  GPU time, CUDA graph replay: ERROR {}\n", str(g, "error"));
    else
      o += fmt::format(
          "  GPU time, CUDA graph replay:            {:7.2f} us/call   ({} calls per graph, "
          "non-default stream)\n",
          num(g, "us_per_call"), num(g, "calls_per_graph"));
  }
  if (sc.contains("compile") || sc.contains("warm_cache_load")) o += compile_text(sc);
  return o;
}

}  // namespace

std::string format_report(const Json& run) {
  std::string o;
  o += fmt::format("pagedjit-bench {}: {}\n", str(run, "version", "?"), str(run, "date_utc", ""));
  o += gpu_line(run) + "\n";
  const Json& bw = run.at("bandwidth");
  o += fmt::format(
      "ceilings: copy {:.1f} GB/s (cuMemcpyDtoD, {:.2f} GB read + written), read {:.1f} GB/s "
      "(reduction over {:.2f} GB, best grid {}x{})\n",
      num(bw, "copy_GBps"), num(bw, "copy_bytes") / 1e9, num(bw, "read_GBps"), num(bw, "read_bytes") / 1e9,
      bw.contains("best_read") ? num(bw["best_read"], "blocks") : 0.0,
      bw.contains("best_read") ? num(bw["best_read"], "threads") : 0.0);
  if (run.contains("settings"))
    o += fmt::format(
        "timing: median of {} CUDA-event timings per case after warm-up; L2 kept cold per case "
        "(column L2: rotN = N input sets in turn, flush = memset between timings)\n",
        num(run["settings"], "reps"));
  // The /rd@sz column: runs that measured it (not older files, not --no-read-floor).
  const bool read_floor = run.contains("settings") && run["settings"].contains("read_floor") &&
                          run["settings"]["read_floor"].is_boolean() && run["settings"]["read_floor"].get<bool>();
  if (read_floor)
    o += "/rd@sz: a streaming read (the read ceiling's kernel) of the case's bytes, timed the same way, in ms / the "
         "case's ms (1 = as fast as that read)\n";
  if (run.contains("settings") && run["settings"].contains("profiles"))
    o += fmt::format("launch configurations: tuned profiles {} (column plan: where each case's came from)\n",
                     str(run["settings"], "profiles"));
  if (run.contains("settings") && run["settings"].contains("specialize") &&
      str(run["settings"], "specialize") != "none")
    o += fmt::format("decode kernels specialized for: {} (--specialize)\n", str(run["settings"], "specialize"));

  const Json& cases = run.at("cases");
  std::size_t w = 4;
  for (const Json& r : cases) w = std::max(w, str(r, "name").size());
  const bool peers = run.contains("peers");
  const bool compare = run.contains("compare_heuristic");
  // The plan column: where each case's launch configuration came from.
  std::size_t pw = 4;
  for (const Json& r : cases) pw = std::max(pw, plan_text(r).size());
  std::string head = fmt::format("\n{:<{}}  {:>8}  {:>7}  {:>5}  {:>5}", "case", w, "ms", "GB/s", "/copy", "/read");
  if (read_floor) head += fmt::format("  {:>6}", "/rd@sz");
  head += fmt::format("  {:>8}  {:<5}", "rel err", "L2");
  if (peers) head += fmt::format("  {:<22}  {:>6}", "best peer (ms)", "ratio");
  if (compare) head += fmt::format("  {:>8}  {:>5}", "heur ms", "h/p");
  o += head + fmt::format("  {:<{}}  config\n", "plan", pw);
  int failures = 0;
  std::vector<std::string> floor_errors;  // why /rd@sz shows "-"
  for (const Json& r : cases) {
    const std::string name = str(r, "name");
    if (r.contains("error") && !r["error"].is_null()) {
      o += fmt::format("{:<{}}  ERROR {}\n", name, w, str(r, "error"));
      ++failures;
      continue;
    }
    std::string err = "-";
    if (r.contains("check")) {
      const Json& c = r["check"];
      err = c["rel_l2"].is_number() ? fmt::format("{:.1e}", c["rel_l2"].get<double>()) : "NaN";
      if (!c.value("pass", false)) {
        err += "!";
        ++failures;
      }
    }
    std::string l2 = "?";
    if (r.contains("l2"))
      l2 = str(r["l2"], "mode") == "flush" ? "flush" : fmt::format("rot{}", r["l2"].value("sets", 1));
    std::string line = fmt::format("{:<{}}  {:8.4f}  {:7.1f}  {:5.3f}  {:5.3f}", name, w, num(r, "time_ms"),
                                   num(r, "GBps"), num(r, "frac_copy"), num(r, "frac_read"));
    if (read_floor) {
      const double rd = num(r, "read_same_size_ms", -1), ms = num(r, "time_ms", -1);
      line += rd > 0 && ms > 0 ? fmt::format("  {:6.3f}", rd / ms) : fmt::format("  {:>6}", "-");
      if (r.contains("read_same_size") && r["read_same_size"].is_object()) {
        const std::string why = str(r["read_same_size"], "error");
        if (!why.empty() && std::find(floor_errors.begin(), floor_errors.end(), why) == floor_errors.end())
          floor_errors.push_back(why);
      }
    }
    line += fmt::format("  {:>8}  {:<5}", err, l2);
    if (peers) {
      const Json* pc = peer_entry(run, name);
      std::string best = "-", ratio = "-";
      if (pc && (*pc)["best_peer"].is_string()) {
        best = (*pc)["best_peer_ms"].is_number() ? fmt::format("{} {:.4f}", (*pc)["best_peer"].get<std::string>(),
                                                               (*pc)["best_peer_ms"].get<double>())
                                                 : fmt::format("{} (by GB/s)", (*pc)["best_peer"].get<std::string>());
        if ((*pc)["ratio"].is_number())
          ratio = fmt::format("{:.2f}{}", (*pc)["ratio"].get<double>(), pc->value("partial", false) ? "*" : "");
      }
      line += fmt::format("  {:<22}  {:>6}", best, ratio);
    }
    if (compare) {
      std::string hms = "-", ratio = "-";
      if (r.contains("compare_heuristic")) {
        const Json& ch = r["compare_heuristic"];
        if (ch["time_ms"].is_number()) hms = fmt::format("{:.4f}", ch["time_ms"].get<double>());
        if (ch["ratio"].is_number()) ratio = fmt::format("{:.3f}", ch["ratio"].get<double>());
        if (ch["error"].is_string()) hms = "ERROR";
      }
      line += fmt::format("  {:>8}  {:>5}", hms, ratio);
    }
    line += fmt::format("  {:<{}}", plan_text(r), pw);
    o += line + "  " + (r.contains("launch") ? str(r["launch"], "describe") : "") + "\n";
  }
  for (const std::string& why : floor_errors) o += fmt::format("/rd@sz -: {}\n", why);
  if (compare) {
    const Json& c = run["compare_heuristic"];
    o += c.contains("geomean_ratio") && c["geomean_ratio"].is_number()
             ? fmt::format(
                   "h/p = heuristic-only ms / profile ms (>1: the tuned profile is faster); geomean over {} cases: "
                   "{:.3f}\n",
                   num(c, "cases"), num(c, "geomean_ratio"))
             : std::string("h/p: no case ran both ways\n");
  }
  if (peers) {
    const Json& p = run["peers"];
    o += fmt::format("ratio = best-peer time / ours (>1: faster than every peer); peers from {} ({})\n", str(p, "file"),
                     str(p, "gpu", "?"));
    if (p["geomean_ratio"].is_number())
      o += fmt::format("geomean ratio over {} cases: {:.3f}{}\n", num(p, "geomean_cases"), num(p, "geomean_ratio"),
                       num(p, "geomean_excludes_partial") > 0
                           ? fmt::format(" ({} case(s) marked * left out)", num(p, "geomean_excludes_partial"))
                           : std::string());
    bool any_partial = false;
    for (const Json& pc : p["cases"]) any_partial = any_partial || pc.value("partial", false);
    if (any_partial)
      o += "*: some peers' timings of that case are not comparable (other lengths: give \"tokens\" in the peers file) "
           "and were left out, so the ratio may be against a peer that is not the best; see the JSON\n";
  }
  o += ragged_decode_text(cases, failures);
  if (run.contains("ragged") && run["ragged"].is_array()) o += ragged_text(run, failures);
  if (failures) o += fmt::format("{} case(s) FAILED (error, or rel err over tolerance: marked !)\n", failures);
  if (run.contains("small_calls")) o += small_calls_text(run["small_calls"]);
  return o;
}

void write_text_file(const std::string& path, const std::string& text) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) throw std::runtime_error(fmt::format("cannot write {}", path));
}

void write_json_file(const std::string& path, const Json& run) {
  write_text_file(path, run.dump(1) + "\n");
}

Json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(fmt::format("cannot read {}", path));
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return Json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(fmt::format("{}: not valid JSON: {}", path, e.what()));
  }
}

}  // namespace pjbench
