// The tools' one command-line parser: options "--name" and "--name VALUE"
// (or "--name=VALUE"), numbers checked against their range, and one way to
// fail: "<tool>: <message>" and a hint on stderr, exit status 2. --help (-h)
// prints the usage and --version the tool's and pagedjit's version; both exit 0.
#pragma once
#include <initializer_list>
#include <string>
#include <vector>

namespace pjtools {

class Cli {
 public:
  // `tool`: the program's name for messages; `usage`: what --help prints.
  Cli(std::string tool, std::string usage, int argc, char** argv);

  // Moves to the next option; false when none is left. Answers --help and
  // --version itself; an argument that is not an option is a usage error.
  bool next();
  // The current option, without its "=VALUE" part.
  const std::string& option() const { return option_; }
  bool is(const char* name) const { return option_ == name; }

  // The current option's value: after '=', else the next argument.
  std::string value();
  // The value as an integer in [min, max] / a number in [min, max].
  long long integer(long long min, long long max);
  double number(double min, double max);
  // The value, which must be one of `choices`.
  std::string choice(std::initializer_list<const char*> choices);
  // The arguments after the option up to the next option (at least one).
  std::vector<std::string> values();

  [[noreturn]] void unknown() const;  // "unknown option ..."
  [[noreturn]] void fail(const std::string& message) const;

 private:
  std::string tool_, usage_;
  std::vector<std::string> args_;
  std::size_t pos_ = 0;
  std::string option_, inline_value_;
  bool has_inline_value_ = false;
};

}  // namespace pjtools
