#include "jit/nvrtc_compiler.hpp"

#include <fmt/format.h>
#include <nvrtc.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <regex>
#include <set>
#include <sstream>

#include "pagedjit/errors.hpp"

namespace pagedjit::jit {
namespace {

void nvrtc_check(nvrtcResult r, const char* call, const std::string& kernel) {
  if (r != NVRTC_SUCCESS)
    throw CompileError(kernel, fmt::format("{} failed: {}", call, nvrtcGetErrorString(r)), {}, "");
}

// RAII for nvrtcProgram.
struct Program {
  nvrtcProgram p = nullptr;
  ~Program() {
    if (p) nvrtcDestroyProgram(&p);
  }
};

int arch_number(const std::string& arch) {
  const auto us = arch.find('_');
  if (us == std::string::npos) return 0;
  return std::atoi(arch.c_str() + us + 1);
}

}  // namespace

std::string nvrtc_version() {
  int major = 0, minor = 0;
  nvrtcVersion(&major, &minor);
  return fmt::format("{}.{}", major, minor);
}

std::vector<int> nvrtc_supported_archs() {
  int n = 0;
  nvrtcGetNumSupportedArchs(&n);
  std::vector<int> archs(std::size_t(std::max(n, 0)));
  if (n > 0) nvrtcGetSupportedArchs(archs.data());
  return archs;
}

std::string clamp_arch(const std::string& arch) {
  // Asked once: planning calls this for every call it plans.
  static const std::vector<int> archs = nvrtc_supported_archs();
  if (archs.empty()) return arch;
  const int want = arch_number(arch);
  if (std::find(archs.begin(), archs.end(), want) != archs.end()) return arch;
  const int newest = *std::max_element(archs.begin(), archs.end());
  if (want > newest) return fmt::format("compute_{}", newest);
  throw InvalidArgument(
      "arch", fmt::format("a target NVRTC {} supports ({}..{})", nvrtc_version(), archs.front(), newest), arch);
}

std::string log_excerpt(const std::string& log, const SourceSet& sources, int context) {
  static const std::regex where(R"(([\w.\-/]+)\((\d+)\): (error|warning))");
  std::set<std::pair<std::string, int>> seen;
  std::string out;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), where); it != std::sregex_iterator(); ++it) {
    const std::string file = (*it)[1];
    const int line = std::stoi((*it)[2]);
    if (!seen.insert({file, line}).second) continue;
    const SourceFile* f = sources.find(file);
    const std::string* text = f ? &f->text : (file == sources.main_name ? &sources.main_text : nullptr);
    if (!text) continue;
    std::istringstream in(*text);
    std::string l;
    out += fmt::format("{}:{}:\n", file, line);
    for (int n = 1; std::getline(in, l); ++n)
      if (n >= line - context && n <= line + context) out += fmt::format("{} {:5} | {}\n", n == line ? ">" : " ", n, l);
  }
  return out;
}

namespace {

// One NVRTC compilation of `spec` with its options plus `extra` (diagnostic
// options that leave the machine code alone).
CompiledKernel run_nvrtc(const KernelSpec& spec, const SourceSet& sources, const std::vector<std::string>& extra) {
  spec.check();
  const auto t0 = std::chrono::steady_clock::now();
  const std::string name = spec.name_expression();
  CompiledKernel out;
  out.key = spec.key(sources.hash, nvrtc_version());
  out.readable = spec.readable();
  out.is_ptx = spec.arch.rfind("compute_", 0) == 0;

  std::vector<const char*> header_text, header_names;
  for (const auto& h : sources.headers) {
    header_text.push_back(h.text.c_str());
    header_names.push_back(h.name.c_str());
  }
  Program prog;
  nvrtc_check(nvrtcCreateProgram(&prog.p, sources.main_text.c_str(), sources.main_name.c_str(), int(header_text.size()),
                                 header_text.data(), header_names.data()),
              "nvrtcCreateProgram", name);
  nvrtc_check(nvrtcAddNameExpression(prog.p, name.c_str()), "nvrtcAddNameExpression", name);
  std::vector<std::string> options = spec.compile_options();
  options.insert(options.end(), extra.begin(), extra.end());
  std::vector<const char*> opts;
  for (const auto& o : options) opts.push_back(o.c_str());
  const nvrtcResult r = nvrtcCompileProgram(prog.p, int(opts.size()), opts.data());
  std::size_t log_size = 0;
  nvrtcGetProgramLogSize(prog.p, &log_size);
  out.log.resize(log_size);
  if (log_size) nvrtcGetProgramLog(prog.p, out.log.data());
  while (!out.log.empty() && (out.log.back() == '\0' || out.log.back() == '\n')) out.log.pop_back();
  if (r != NVRTC_SUCCESS)
    throw CompileError(name, fmt::format("{}: {}\n{}", nvrtcGetErrorString(r), sources.origin, out.log), options,
                       log_excerpt(out.log, sources));

  const char* lowered = nullptr;
  nvrtc_check(nvrtcGetLoweredName(prog.p, name.c_str(), &lowered), "nvrtcGetLoweredName", name);
  out.lowered_name = lowered;
  std::size_t size = 0;
  if (out.is_ptx) {
    nvrtc_check(nvrtcGetPTXSize(prog.p, &size), "nvrtcGetPTXSize", name);
    out.binary.resize(size);
    nvrtc_check(nvrtcGetPTX(prog.p, out.binary.data()), "nvrtcGetPTX", name);
  } else {
    nvrtc_check(nvrtcGetCUBINSize(prog.p, &size), "nvrtcGetCUBINSize", name);
    out.binary.resize(size);
    nvrtc_check(nvrtcGetCUBIN(prog.p, out.binary.data()), "nvrtcGetCUBIN", name);
  }
  out.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

// The number before `what` in `text`, or -1.
int number_before(const std::string& text, const std::string& what) {
  const auto at = text.find(what);
  if (at == std::string::npos) return -1;
  std::size_t begin = at;
  while (begin > 0 && text[begin - 1] == ' ') --begin;
  std::size_t digits = begin;
  while (digits > 0 && std::isdigit(static_cast<unsigned char>(text[digits - 1]))) --digits;
  return digits == begin ? -1 : std::atoi(text.c_str() + digits);
}

}  // namespace

CompiledKernel compile_kernel(const KernelSpec& spec, const SourceSet& sources) {
  return run_nvrtc(spec, sources, {});
}

ResourceUsage parse_resource_usage(const std::string& log, const std::string& function) {
  // ptxas reports functions in no fixed order: the block of `function` runs
  // from its "Function properties for" line to its "Used N registers" line.
  const std::string head = "Function properties for " + function;
  std::size_t at = log.find(head);
  while (at != std::string::npos && at + head.size() < log.size() && !std::isspace(log[at + head.size()]))
    at = log.find(head, at + 1);  // a longer name that starts with this one
  const std::size_t used = at == std::string::npos ? at : log.find("Used ", at);
  const std::size_t end = used == std::string::npos ? used : log.find('\n', used);
  if (used == std::string::npos)
    throw CompileError(function, "ptxas reported no resource usage for it (a PTX target, or no --verbose)", {}, log);
  const std::string block = log.substr(at, end == std::string::npos ? std::string::npos : end - at);
  ResourceUsage u;
  u.registers = number_before(block, " registers");
  u.stack_bytes = number_before(block, " bytes stack frame");
  u.spill_store_bytes = number_before(block, " bytes spill stores");
  u.spill_load_bytes = number_before(block, " bytes spill loads");
  if (u.registers < 0 || u.stack_bytes < 0 || u.spill_store_bytes < 0 || u.spill_load_bytes < 0)
    throw CompileError(function, "ptxas's resource report is not in the expected form", {}, block);
  // Callees' stacks (present only when not zero).
  u.stack_bytes = std::max(u.stack_bytes, number_before(block, " bytes cumulative stack size"));
  return u;
}

ResourceUsage resource_usage(const KernelSpec& spec, const SourceSet& sources) {
  const CompiledKernel k = run_nvrtc(spec, sources, {"--ptxas-options=--verbose"});
  return parse_resource_usage(k.log, k.lowered_name);
}

}  // namespace pagedjit::jit
