// The fuzz targets' bodies, shared by the libFuzzer executables
// (tests/fuzz/CMakeLists.txt, scripts/fuzz.sh) and the doctest suite, which
// replays the seed corpora and the regression inputs through them
// (tests/test_fuzz_regressions.cpp).
//
// Each function runs one input. It lets through only the exceptions its API
// documents (pagedjit::Error, pjbench::CaseError) and throws Violation when a
// result breaks an invariant; anything else escaping is a bug (libFuzzer
// reports it as a crash, doctest as a failure).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace pjfuzz {

class Violation : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// (a) Arguments and options built from the input: validate_call, then
// plan_problem on an H100 when the call is valid.
void validate_one(const std::uint8_t* data, std::size_t size);
// How many inputs validate_one found valid, and how many of those it planned.
std::string validate_stats();
// (a') The same calls, damaged further through the C API's own fields, into
// pagedjit_validate; an accepted call must describe memory the kernel can
// read and write without overflow, misalignment or overlap (checked by
// arithmetic of its own, not validation's).
void views_one(const std::uint8_t* data, std::size_t size);
std::string views_stats();
// (c) The input as a disk cache entry file, loaded with a fixed key: a miss
// or the entry it holds, never a crash. The first byte picks how the file is
// made from the rest (verbatim, checksum fixed up, or metadata + payload under
// a valid header).
void disk_cache_one(const std::uint8_t* data, std::size_t size);
// The key disk_cache_one loads.
extern const char* const kDiskCacheKey;
std::string disk_cache_stats();
// (d) The input as a pagedjit-bench --case string.
void case_string_one(const std::uint8_t* data, std::size_t size);
std::string case_string_stats();
// (e) The input as a tuned profile file (parse, round trip, lookups).
void profile_one(const std::uint8_t* data, std::size_t size);
std::string profile_stats();
// (f) The ragged step's calls through the C API: pagedjit_validate_ragged and
// pagedjit_validate_append on argument sets made and damaged as in (a'); an
// accepted set must describe memory the kernels can touch without overflow,
// misalignment or overlap (the caches of an append may interleave but share
// no element), and an accepted ragged call must plan for an H100 (decode and
// prefill) within the grid, shared memory and workspace limits.
void ragged_one(const std::uint8_t* data, std::size_t size);
std::string ragged_stats();

// Reads little pieces of the input; zeros once it is exhausted.
class Bytes {
 public:
  Bytes(const std::uint8_t* data, std::size_t size) : p_(data), n_(size) {}
  std::size_t left() const { return n_; }
  std::uint8_t u8() {
    if (n_ == 0) return 0;
    --n_;
    return *p_++;
  }
  std::uint16_t u16() { return std::uint16_t(u8() | (std::uint16_t(u8()) << 8)); }
  std::uint32_t u32() { return std::uint32_t(u16()) | (std::uint32_t(u16()) << 16); }
  std::uint64_t u64() { return std::uint64_t(u32()) | (std::uint64_t(u32()) << 32); }
  bool flag() { return (u8() & 1) != 0; }
  // True about one time in `n`.
  bool one_in(unsigned n) { return u8() % n == 0; }
  float f32_bits() {
    const std::uint32_t b = u32();
    float f;
    std::memcpy(&f, &b, sizeof f);
    return f;
  }

 private:
  const std::uint8_t* p_;
  std::size_t n_;
};

}  // namespace pjfuzz

// Defines libFuzzer's entry point calling `fn`, and a line of `stats()` on
// stderr at exit (only in the fuzz executables: the doctest suite links all
// targets' bodies together).
#ifdef PAGEDJIT_FUZZ_MAIN
#include <cstdio>
#include <cstdlib>
#define PJFUZZ_ENTRY(fn)                                                              \
  extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) { \
    fn(data, size);                                                                   \
    return 0;                                                                         \
  }
#define PJFUZZ_STATS(name, stats)                                                  \
  extern "C" int LLVMFuzzerInitialize(int*, char***) {                             \
    std::atexit([] { std::fprintf(stderr, "%s: %s\n", #name, stats().c_str()); }); \
    return 0;                                                                      \
  }
#else
#define PJFUZZ_ENTRY(fn)
#define PJFUZZ_STATS(name, stats)
#endif
