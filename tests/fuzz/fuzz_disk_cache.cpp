// Fuzz target (c): the disk cache's entry files. The input becomes the entry
// file of a fixed key in a private directory, which DiskStore::load reads (the
// engine's path) and DiskStore::read_entry reads as the pagedjit-cache tool
// does (with and without the checksum). A damaged file must be a miss; a file
// that loads must hold what its header and metadata say.
//
// The first input byte picks how the file is made from the rest, so that the
// fuzzer gets past the checksum to the metadata parser:
//   0  the rest, verbatim
//   1  the rest, with the CRC-32 field recomputed (the lengths are the fuzzer's)
//   2  a valid header for the fixed key around "<metadata JSON>\0<payload>"
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "harness.hpp"
#include "jit/disk_store.hpp"

namespace pjfuzz {

const char* const kDiskCacheKey =
    "pagedjit-kernel 1|pj::paged_decode<pj::bf16, pj::bf16, 128, 128, 64, 4, 3, true>|sm_90a|-std=c++17 "
    "--use_fast_math|src:0123456789abcdef|nvrtc:12.8";

namespace {

namespace jit = pagedjit::jit;

void put_le(std::string& s, std::size_t at, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s[at + std::size_t(i)] = char((v >> (8 * i)) & 0xFF);
}

// The documented format, written here independently of DiskStore::serialize.
std::string craft_entry(const std::string& key, const std::string& meta, const std::string& payload) {
  std::string h(jit::kDiskHeaderBytes, '\0');
  h.replace(0, 8, "PJKCACHE");
  put_le(h, 8, jit::kDiskFormatVersion, 4);
  put_le(h, 12, key.size(), 4);
  put_le(h, 16, meta.size(), 4);
  put_le(h, 24, payload.size(), 8);
  std::uint32_t crc = jit::crc32(h.data(), 32);
  crc = jit::crc32(key.data(), key.size(), crc);
  crc = jit::crc32(meta.data(), meta.size(), crc);
  crc = jit::crc32(payload.data(), payload.size(), crc);
  put_le(h, 32, crc, 4);
  return h + key + meta + payload;
}

// A private cache directory (in memory when /dev/shm is there), removed at exit.
struct Dir {
  std::string path;
  Dir() {
    const char* tmp = std::getenv("TMPDIR");
    struct stat st {};
    std::string base = ::stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && ::access("/dev/shm", W_OK) == 0
                           ? std::string("/dev/shm")
                           : std::string(tmp && *tmp ? tmp : "/tmp");
    std::string tmpl = base + "/pagedjit-fuzz-cache-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed in " + base);
    path = tmpl;
  }
  ~Dir() {
    ::unlink((path + "/" + jit::entry_file_name(kDiskCacheKey)).c_str());
    ::rmdir(path.c_str());
  }
};

void write_file(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot write " + path);
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) break;
    done += std::size_t(n);
  }
  ::close(fd);
  if (done != bytes.size()) throw std::runtime_error("short write to " + path);
}

void check(bool ok, const char* what) {
  if (!ok) throw Violation(std::string("disk cache: ") + what);
}

std::uint64_t g_runs = 0, g_hits = 0;

}  // namespace

std::string disk_cache_stats() {
  return std::to_string(g_runs) + " entry files, " + std::to_string(g_hits) + " loaded, the rest misses";
}

void disk_cache_one(const std::uint8_t* data, std::size_t size) {
  static Dir dir;
  static jit::DiskStore store([] {
    jit::DiskStoreOptions o;
    o.dir = dir.path;
    o.max_bytes = 0;
    o.use_locks = false;
    o.warnings = false;
    return o;
  }());
  const std::string key = kDiskCacheKey;
  const int mode = size ? data[0] % 3 : 0;
  const std::string body = size ? std::string(reinterpret_cast<const char*>(data) + 1, size - 1) : std::string();
  std::string file = body, payload;
  if (mode == 1 && file.size() >= jit::kDiskHeaderBytes) {
    std::uint32_t crc = jit::crc32(file.data(), 32);
    crc = jit::crc32(file.data() + jit::kDiskHeaderBytes, file.size() - jit::kDiskHeaderBytes, crc);
    put_le(file, 32, crc, 4);
  } else if (mode == 2) {
    const std::size_t nul = body.find('\0');
    const std::string meta = body.substr(0, nul);
    payload = nul == std::string::npos ? std::string() : body.substr(nul + 1);
    file = craft_entry(key, meta, payload);
  }
  const std::string path = store.entry_path(key);
  write_file(path, file);

  const std::optional<jit::CompiledKernel> hit = store.load(key);
  ++g_runs;
  if (hit) {
    ++g_hits;
    check(hit->key == key, "a hit holds another key");
    check(!hit->lowered_name.empty(), "a hit without a lowered name");
    if (mode == 2) check(hit->binary == payload, "a hit's payload differs from the file's");
  }
  // What `pagedjit-cache list` reads: header, key and metadata, no checksum.
  const jit::EntryInfo quick = jit::DiskStore::read_entry(path, nullptr, nullptr, false);
  if (hit) check(quick.status == jit::EntryStatus::ok && quick.key == key, "loads but does not list");
  (void)jit::entry_status_name(quick.status);
  (void)jit::entry_file_name(quick.key);
}

}  // namespace pjfuzz

PJFUZZ_ENTRY(pjfuzz::disk_cache_one)
PJFUZZ_STATS(fuzz_disk_cache, pjfuzz::disk_cache_stats)
