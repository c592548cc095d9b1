#include "peers.hpp"

#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "json_depth.hpp"

namespace pjbench {
namespace {

double num(const Json& j, const char* key, double fallback = 0) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : fallback;
}

}  // namespace

Json compare_with_peers_json(const Json& run, const Json& pf, const std::string& label) {
  if (!pf.is_object() || !pf.contains("peers") || !pf["peers"].is_object())
    throw std::runtime_error(fmt::format("{}: expected an object with \"peers\": {{peer: {{case: ms}}}}", label));
  const Json& bw = run.at("bandwidth");
  const double our_read = num(bw, "read_GBps"), our_copy = num(bw, "copy_GBps");
  const double file_copy = num(pf, "copy_GBps", our_copy);
  Json out;
  out["file"] = label;
  out["gpu"] = pf.value("gpu", "");
  out["about"] = pf.value("about", "");
  out["copy_GBps"] = pf.contains("copy_GBps") ? pf["copy_GBps"] : Json();
  out["read_GBps"] = pf.contains("read_GBps") ? pf["read_GBps"] : Json();
  out["method"] =
      "peer fraction of read = (this case's bytes / this run's read bandwidth) / peer ms; ratio = best peer ms / our "
      "ms (per byte, where the peer read another token count)";
  Json names = Json::array();
  for (auto it = pf["peers"].begin(); it != pf["peers"].end(); ++it) names.push_back(it.key());
  out["names"] = names;

  Json cases = Json::array();
  double log_sum = 0;
  int n_ratio = 0, n_partial = 0;
  for (const Json& row : run.at("cases")) {
    const std::string name = row.value("name", "");
    const double bytes = num(row, "bytes"), kv = num(row, "kv_bytes"), tokens_read = num(row, "tokens_read");
    const bool uniform = row.value("uniform_lengths", true);
    Json entry{{"case", name}, {"peers", Json::object()}};
    double best = 0;
    std::string best_name;
    Json best_ms;
    bool partial = false;
    for (const Json& pn : names) {
      const std::string peer = pn.get<std::string>();
      const Json& times = pf["peers"][peer];
      const std::string frac_key = peer + "_" + name + "_fraction_of_copy";
      const bool has_ms = times.is_object() && times.contains(name) && times[name].is_number();
      const bool has_frac = pf.contains(frac_key) && pf[frac_key].is_number();
      if (!has_ms && !has_frac) continue;
      Json p;
      double gbps = 0;
      bool same_bytes = false;
      if (has_ms) p["ms"] = times[name];
      const Json* tok = nullptr;
      if (pf.contains("tokens") && pf["tokens"].contains(peer) && pf["tokens"][peer].contains(name) &&
          pf["tokens"][peer][name].is_number())
        tok = &pf["tokens"][peer][name];
      if (has_ms && tok && tokens_read > 0) {
        const double peer_bytes = bytes - kv + kv * tok->get<double>() / tokens_read;
        gbps = peer_bytes / times[name].get<double>() / 1e6;
        p["basis"] = fmt::format("ms over the peer's {} tokens", tok->get<std::int64_t>());
      } else if (has_ms && uniform) {
        gbps = bytes / times[name].get<double>() / 1e6;
        same_bytes = true;
        p["basis"] = "ms";
      } else if (has_frac) {
        gbps = pf[frac_key].get<double>() * file_copy;
        p["basis"] = fmt::format("fraction {} of the file's copy bandwidth", pf[frac_key].get<double>());
      }
      if (gbps > 0) {
        p["comparable"] = true;
        p["GBps"] = gbps;
        p["frac_read"] = our_read > 0 ? gbps / our_read : 0.0;
        if (gbps > best) {
          best = gbps;
          best_name = peer;
          best_ms = same_bytes ? times[name] : Json();
        }
      } else {
        partial = true;
        p["comparable"] = false;
        p["note"] = fmt::format(
            "lengths are not uniform and the peer may have drawn its own: add \"tokens\": {{\"{}\": {{\"{}\": N}}}} "
            "to the peers file",
            peer, name);
      }
      entry["peers"][peer] = p;
    }
    entry["best_peer"] = best_name.empty() ? Json() : Json(best_name);
    entry["best_peer_GBps"] = best > 0 ? Json(best) : Json();
    entry["best_peer_ms"] = best_ms;
    entry["partial"] = partial;
    const double ours = num(row, "GBps");
    if (best > 0 && ours > 0 && row.value("error", Json()).is_null()) {
      entry["ratio"] = ours / best;
      // A partial comparison may miss the best peer: kept out of the geomean.
      if (partial) {
        ++n_partial;
      } else {
        log_sum += std::log(ours / best);
        ++n_ratio;
      }
    } else {
      entry["ratio"] = nullptr;
    }
    cases.push_back(entry);
  }
  out["cases"] = cases;
  out["geomean_ratio"] = n_ratio ? Json(std::exp(log_sum / n_ratio)) : Json();
  out["geomean_cases"] = n_ratio;
  out["geomean_excludes_partial"] = n_partial;
  return out;
}

Json compare_with_peers(const Json& run, const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(fmt::format("cannot read the peers file {}", path));
  std::stringstream ss;
  ss << in.rdbuf();
  if (pagedjit::json_too_deep(ss.str()))
    throw std::runtime_error(fmt::format("{}: JSON nested more than {} levels deep", path, pagedjit::kMaxJsonDepth));
  Json pf;
  try {
    pf = Json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(fmt::format("{}: not valid JSON: {}", path, e.what()));
  }
  return compare_with_peers_json(run, pf, path);
}

}  // namespace pjbench
