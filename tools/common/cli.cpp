#include "cli.hpp"

#include <fmt/format.h>

#include <cstdlib>
#include <exception>
#include <utility>

#include "pagedjit/version.hpp"

namespace pjtools {

Cli::Cli(std::string tool, std::string usage, int argc, char** argv)
    : tool_(std::move(tool)), usage_(std::move(usage)), args_(argv + 1, argv + argc) {}

bool Cli::next() {
  if (pos_ >= args_.size()) return false;
  option_ = args_[pos_++];
  has_inline_value_ = false;
  if (option_.rfind("--", 0) == 0) {
    if (const auto eq = option_.find('='); eq != std::string::npos) {
      inline_value_ = option_.substr(eq + 1);
      option_.resize(eq);
      has_inline_value_ = true;
    }
  } else if (option_ != "-h") {
    fail(fmt::format("unexpected argument \"{}\"", option_));
  }
  if (option_ == "--help" || option_ == "-h") {
    fmt::print("{}", usage_);
    std::exit(0);
  }
  if (option_ == "--version") {
    fmt::print("{} {}\n", tool_, pagedjit::kVersion);
    std::exit(0);
  }
  return true;
}

std::string Cli::value() {
  if (has_inline_value_) {
    has_inline_value_ = false;
    return inline_value_;
  }
  if (pos_ >= args_.size()) fail(option_ + " needs a value");
  return args_[pos_++];
}

long long Cli::integer(long long min, long long max) {
  const std::string v = value();
  try {
    std::size_t used = 0;
    const long long x = std::stoll(v, &used);
    if (used == v.size() && x >= min && x <= max) return x;
  } catch (const std::exception&) {
  }
  fail(fmt::format("{} expects an integer in [{}, {}], got \"{}\"", option_, min, max, v));
}

double Cli::number(double min, double max) {
  const std::string v = value();
  try {
    std::size_t used = 0;
    const double x = std::stod(v, &used);
    if (used == v.size() && x >= min && x <= max) return x;
  } catch (const std::exception&) {
  }
  fail(fmt::format("{} expects a number in [{}, {}], got \"{}\"", option_, min, max, v));
}

std::string Cli::choice(std::initializer_list<const char*> choices) {
  const std::string v = value();
  for (const char* c : choices)
    if (v == c) return v;
  std::string names;
  for (const char* c : choices) names += (names.empty() ? "" : ", ") + std::string(c);
  fail(fmt::format("{} expects one of {}, got \"{}\"", option_, names, v));
}

std::vector<std::string> Cli::values() {
  std::vector<std::string> out;
  if (has_inline_value_) out.push_back(value());
  while (pos_ < args_.size() && args_[pos_].rfind("--", 0) != 0) out.push_back(args_[pos_++]);
  if (out.empty()) fail(option_ + " needs at least one value");
  return out;
}

void Cli::unknown() const {
  fail(fmt::format("unknown option \"{}\"", option_));
}

void Cli::fail(const std::string& message) const {
  fmt::print(stderr, "{}: {}\n(try --help)\n", tool_, message);
  std::exit(2);
}

}  // namespace pjtools
