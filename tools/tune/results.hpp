// pagedjit-tune's results file: one JSON object per line, appended (and
// flushed) as each timing finishes, failures included. A later run with the
// same file skips every key it holds, so an interrupted run resumes and a
// widened search space times only what is new.
//
// Key: "<device>|<engine version>|src:<kernel sources hash>|nvrtc:<version>|
//       <problem shape>|<phase>|<config or heuristic>"
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace pjtune {

using Json = nlohmann::ordered_json;

struct Result {
  std::string key;
  bool ok = false;
  double time_ms = 0;  // median
  std::string error;   // when !ok
  Json line;           // everything stored
};

class ResultStore {
 public:
  // Reads `path` when it exists; lines that do not parse (a run killed
  // mid-write) are counted and ignored. Throws std::runtime_error when the
  // file cannot be opened for appending.
  explicit ResultStore(std::string path);
  const Result* find(const std::string& key) const;
  // Appends the line and keeps it (the last line of a key wins).
  void add(const Json& line);
  const std::string& path() const { return path_; }
  std::size_t loaded() const { return loaded_; }
  std::size_t bad_lines() const { return bad_lines_; }

 private:
  std::string path_;
  std::map<std::string, Result> results_;
  std::size_t loaded_ = 0, bad_lines_ = 0;
};

}  // namespace pjtune
