#include "results.hpp"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "json_depth.hpp"

namespace pjtune {
namespace {

Result to_result(const Json& j) {
  Result r;
  r.key = j.at("key").get<std::string>();
  r.ok = j.at("ok").get<bool>();
  if (r.ok) r.time_ms = j.at("time_ms").get<double>();
  if (j.contains("error") && j["error"].is_string()) r.error = j["error"].get<std::string>();
  r.line = j;
  return r;
}

}  // namespace

ResultStore::ResultStore(std::string path) : path_(std::move(path)) {
  std::ifstream in(path_);
  std::string line;
  while (in && std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      if (pagedjit::json_too_deep(line)) throw std::runtime_error("nested too deep");
      Result r = to_result(Json::parse(line));
      if (r.ok && !(r.time_ms > 0)) throw std::runtime_error("bad time");
      results_[r.key] = std::move(r);
      ++loaded_;
    } catch (const std::exception&) {
      ++bad_lines_;
    }
  }
  const std::filesystem::path parent = std::filesystem::path(path_).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  std::ofstream probe(path_, std::ios::app);
  if (!probe) throw std::runtime_error(fmt::format("cannot append to the results file {}", path_));
  // A run killed mid-line left no newline: end that line, so the next one starts clean.
  std::ifstream tail(path_, std::ios::binary | std::ios::ate);
  if (tail && tail.tellg() > 0) {
    tail.seekg(-1, std::ios::end);
    if (tail.get() != '\n') probe << '\n';
  }
}

const Result* ResultStore::find(const std::string& key) const {
  const auto it = results_.find(key);
  return it == results_.end() ? nullptr : &it->second;
}

void ResultStore::add(const Json& line) {
  Result r = to_result(line);
  std::ofstream out(path_, std::ios::app);
  out << line.dump(-1, ' ', false, Json::error_handler_t::replace) << "\n";
  out.flush();
  if (!out) throw std::runtime_error(fmt::format("cannot append to the results file {}", path_));
  results_[r.key] = std::move(r);
}

}  // namespace pjtune
