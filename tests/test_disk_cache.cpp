// The disk cache of compiled kernels (engine/src/jit/disk_store.hpp) and the
// pagedjit-cache tool. CPU only: compiles and caches work without a GPU.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "attention/planner.hpp"
#include "disk_cache_support.hpp"
#include "disk_entry.hpp"
#include "jit/disk_store.hpp"
#include "jit/hash.hpp"
#include "jit/kernel_cache.hpp"
#include "jit/nvrtc_compiler.hpp"
#include "jit/source_set.hpp"
#include "pagedjit/errors.hpp"
#include "run_command.hpp"
#include "shapes.hpp"
#include "temp_files.hpp"

using namespace pagedjit;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using namespace pjtest::disk;

// Makes this process unable to write files past `bytes` (`ulimit -f`). With
// `ignore_sigxfsz`, write() then fails with EFBIG, as it fails with ENOSPC on
// a full disk; without, the kernel's SIGXFSZ would end the process, so the
// store must not try.
// (Called in forked children only.) NVRTC 13 keeps a cache of its own in the
// driver's compute cache (~/.nv/ComputeCache) where a driver is installed;
// its writes would meet the same limit, and with SIGXFSZ at its default end
// the process before pagedjit's store is ever reached (seen on the GPU
// machine). CUDA_CACHE_DISABLE turns that cache off: these tests are about
// pagedjit's own directory.
bool limit_file_size(rlim_t bytes, bool ignore_sigxfsz = true) {
  ::setenv("CUDA_CACHE_DISABLE", "1", 1);
  if (ignore_sigxfsz) ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim {};
  if (::getrlimit(RLIMIT_FSIZE, &lim) != 0) return false;
  lim.rlim_cur = bytes;
  return ::setrlimit(RLIMIT_FSIZE, &lim) == 0;
}

// In a child whose cache directory `dir` has no room left and holds the entry
// of `cached`: gets `cached` and two kernels that are not cached, then one of
// those again, and reports what the process saw.
json full_cache_scenario(const std::string& dir, const jit::KernelSpec& cached) {
  auto store = std::make_shared<jit::DiskStore>(options_for(dir));
  jit::KernelCache cache;
  cache.set_store(store);
  const auto a = cache.get(cached);
  const auto b = cache.get(small_spec(DType::f16));
  const auto c = cache.get(small_spec(DType::f32));
  const auto b_again = cache.get(small_spec(DType::f16));
  const jit::KernelCacheStats stats = cache.stats();
  const jit::DiskStore::DirContents contents = store->scan(true, true);
  json entries = json::array();
  for (const auto& e : contents.entries)
    entries.push_back({{"file", e.file_name}, {"status", jit::entry_status_name(e.status)}});
  return {{"store_hits", stats.store_hits},
          {"compiles", stats.compiles},
          {"memory_hits", stats.memory_hits},
          {"writable", store->writable()},
          {"bytes", {a->binary.size(), b->binary.size(), c->binary.size()}},
          {"same_b", b_again.get() == b.get()},
          {"entries", entries},
          {"temps", contents.temps.size()},
          {"locks", contents.locks.size()},
          {"files", files_in(dir)}};
}

// What a process with no room to write must have seen: the cached kernel read
// from the disk, the two others compiled and served (the repeat from memory),
// one warning that names the directory and the lack of space, and in the
// directory nothing but the valid entry: no partial entry, temp or lock file.
void check_full_cache_child(const ChildOutput& out, const std::string& dir, const std::string& cached_file) {
  CAPTURE(out.err);
  REQUIRE(out.code == 0);
  REQUIRE(out.report.is_object());
  const json& r = out.report;
  CHECK(r["store_hits"] == 1);
  CHECK(r["compiles"] == 2);
  CHECK(r["memory_hits"] == 1);
  CHECK(r["same_b"] == true);
  CHECK(r["writable"] == false);
  for (const json& bytes : r["bytes"]) CHECK(bytes.get<std::size_t>() > 1000);
  CHECK(count_lines_with(out.err, "pagedjit:") == 1);
  CHECK(count_lines_with(out.err, "memory only") == 1);
  CHECK(count_lines_with(out.err, dir) == 1);
  REQUIRE(r["entries"].size() == 1);
  CHECK(r["entries"][0]["file"] == cached_file);
  CHECK(r["entries"][0]["status"] == "ok");
  CHECK(r["temps"] == 0);
  CHECK(r["locks"] == 0);
  CHECK(r["files"] == json::array({cached_file}));
}

bool write_proc_file(const char* path, const std::string& text) {
  const int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size());
  ::close(fd);
  return ok;
}

// In a forked (single-threaded) child: a private mount namespace, entered
// directly with CAP_SYS_ADMIN or through a user namespace without it, with a
// tmpfs of `options` mounted at `dir`. It vanishes with the process. False,
// with the reason, where neither is permitted (e.g. a container without
// CAP_SYS_ADMIN whose seccomp profile forbids user namespaces).
bool mount_private_tmpfs(const std::string& dir, const std::string& options, std::string& why) {
  const uid_t uid = ::geteuid();
  const gid_t gid = ::getegid();
  if (::unshare(CLONE_NEWNS) != 0) {
    const int direct = errno;
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
      why = fmt::format("no mount namespace: unshare(CLONE_NEWNS): {}; with CLONE_NEWUSER: {}", std::strerror(direct),
                        std::strerror(errno));
      return false;
    }
    write_proc_file("/proc/self/setgroups", "deny");  // (absent before Linux 3.19)
    if (!write_proc_file("/proc/self/uid_map", fmt::format("0 {} 1", uid)) ||
        !write_proc_file("/proc/self/gid_map", fmt::format("0 {} 1", gid))) {
      why = fmt::format("cannot map ids into the user namespace: {}", std::strerror(errno));
      return false;
    }
  }
  // Private first, so the tmpfs never propagates to the parent's namespace.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    why = fmt::format("mount --make-rprivate /: {}", std::strerror(errno));
    return false;
  }
  if (::mount("pagedjit-test", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
    why = fmt::format("mount -t tmpfs: {}", std::strerror(errno));
    return false;
  }
  return true;
}

#ifdef PAGEDJIT_CACHE_TOOL

// The cache tool with `args`, stdout and stderr to pipes; with `fsize_limit`,
// unable to write files past that many bytes (see limit_file_size).
struct ToolProcess {
  pid_t pid = -1;
  int out = -1, err = -1;
};
ToolProcess spawn_tool(std::vector<std::string> args, rlim_t fsize_limit = 0, bool ignore_sigxfsz = true) {
  args.insert(args.begin(), PAGEDJIT_CACHE_TOOL);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int out[2], err[2];
  REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(err, O_CLOEXEC) == 0);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (::dup2(out[1], 1) < 0 || ::dup2(err[1], 2) < 0) ::_exit(76);
    if (fsize_limit && !limit_file_size(fsize_limit, ignore_sigxfsz)) ::_exit(77);
    ::execv(argv[0], argv.data());
    ::_exit(78);
  }
  ::close(out[1]);
  ::close(err[1]);
  return {pid, out[0], err[0]};
}
struct ToolResult {
  int status = -1;
  std::string out, err;
};
ToolResult finish(const ToolProcess& p) {  // (outputs are far below a pipe's buffer)
  ToolResult r;
  r.out = drain(p.out);
  r.err = drain(p.err);
  r.status = wait_status(p.pid);
  return r;
}
#endif

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("disk cache: checksum, file names, sizes and the environment") {
    CHECK(jit::crc32("123456789", 9) == 0xCBF43926u);
    CHECK(jit::crc32("", 0) == 0u);
    // Incremental = one shot, across the 8-byte fast path.
    const std::string text = "the quick brown fox jumps over the lazy dog, twice over";
    CHECK(jit::crc32(text.data() + 13, text.size() - 13, jit::crc32(text.data(), 13)) ==
          jit::crc32(text.data(), text.size()));

    const std::string name = jit::entry_file_name("some key");
    CHECK(name == fmt::format("{:016x}.pjk", jit::fnv1a64("some key")));

    CHECK(jit::parse_byte_size("1073741824") == 1073741824ull);
    CHECK(jit::parse_byte_size("512M") == 512ull << 20);
    CHECK(jit::parse_byte_size("2GiB") == 2ull << 30);
    CHECK(jit::parse_byte_size("0") == 0ull);
    CHECK_FALSE(jit::parse_byte_size("").has_value());
    CHECK_FALSE(jit::parse_byte_size("lots").has_value());
    CHECK_FALSE(jit::parse_byte_size("12Q").has_value());
    CHECK_FALSE(jit::parse_byte_size("99999999999999999999").has_value());

    EnvGuard off("PAGEDJIT_CACHE", nullptr);
    {
      EnvGuard d("PAGEDJIT_CACHE_DIR", "/some/where/");
      const auto loc = jit::cache_location_from_env();
      CHECK(loc.enabled);
      CHECK(loc.dir == "/some/where");
      EnvGuard o("PAGEDJIT_CACHE", "off");
      CHECK_FALSE(jit::cache_location_from_env().enabled);
      CHECK(jit::DiskStore::from_environment() == nullptr);
    }
    {
      EnvGuard d("PAGEDJIT_CACHE_DIR", "");
      CHECK_FALSE(jit::cache_location_from_env().enabled);
      CHECK(jit::DiskStore::from_environment() == nullptr);
    }
    {
      EnvGuard d("PAGEDJIT_CACHE_DIR", nullptr);
      EnvGuard x("XDG_CACHE_HOME", "/xdg/cache");
      CHECK(jit::cache_location_from_env().dir == "/xdg/cache/pagedjit");
      EnvGuard x2("XDG_CACHE_HOME", nullptr);
      EnvGuard h("HOME", "/home/someone");
      CHECK(jit::cache_location_from_env().dir == "/home/someone/.cache/pagedjit");
      REQUIRE(jit::DiskStore::from_environment() != nullptr);
      CHECK(jit::DiskStore::from_environment()->dir() == "/home/someone/.cache/pagedjit");
    }
    {
      EnvGuard m("PAGEDJIT_CACHE_MAX_BYTES", "64M");
      CHECK(jit::cache_max_bytes_from_env() == 64ull << 20);
      CHECK(jit::DiskStoreOptions::from_env("/x").max_bytes == 64ull << 20);
    }
    {
      EnvGuard m("PAGEDJIT_CACHE_MAX_BYTES", nullptr);
      CHECK(jit::cache_max_bytes_from_env() == 1ull << 30);
    }
    {
      EnvGuard j("PAGEDJIT_JIT", "off");
      CHECK(jit::jit_disabled_by_env());
      EnvGuard j2("PAGEDJIT_JIT", "on");
      CHECK_FALSE(jit::jit_disabled_by_env());
    }
  }

  TEST_CASE("disk cache: the tests' process-wide cache lives in a temporary directory, not ~/.cache") {
    const auto loc = jit::cache_location_from_env();
    REQUIRE(loc.enabled);
    CHECK(loc.dir.find("/.cache/") == std::string::npos);
    const jit::KernelSpec spec = small_spec();
    jit::KernelCache::global().get(spec);
    CHECK(fs::exists(loc.dir + "/" + jit::entry_file_name(key_of(spec))));
  }

  TEST_CASE("disk cache: store and load round-trip; a missing entry is a miss") {
    TempDir tmp;
    const std::string dir = tmp / "a/b/cache";  // created on the first write, 0700
    jit::DiskStore store(options_for(dir));
    CHECK_FALSE(store.load("k1").has_value());
    CHECK_FALSE(fs::exists(dir));

    const jit::CompiledKernel k = fake_kernel("k1", 5000);
    store.store(k);
    REQUIRE(fs::is_directory(dir));
    struct stat st {};
    REQUIRE(::stat(dir.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
    CHECK(files_in(dir) == std::vector<std::string>{jit::entry_file_name("k1")});  // no temp or lock file left

    const auto hit = store.load("k1");
    REQUIRE(hit.has_value());
    CHECK(hit->key == k.key);
    CHECK(hit->binary == k.binary);
    CHECK(hit->lowered_name == k.lowered_name);
    CHECK(hit->readable == k.readable);
    CHECK(hit->log == k.log);
    CHECK(hit->compile_ms == doctest::Approx(12.5));
    CHECK_FALSE(hit->is_ptx);
    CHECK_FALSE(store.load("k2").has_value());

    // The documented format, written independently, reads back.
    const json meta = {{"lowered_name", "_Z1fv"}, {"readable", "crafted"}, {"is_ptx", true}, {"compile_ms", 1.0}};
    write_file(store.entry_path("k3"), craft_entry("k3", meta.dump(), "PTX TEXT"));
    const auto crafted = store.load("k3");
    REQUIRE(crafted.has_value());
    CHECK(crafted->binary == "PTX TEXT");
    CHECK(crafted->is_ptx);
    CHECK(crafted->lowered_name == "_Z1fv");

    // Storing again replaces the entry.
    store.store(fake_kernel("k1", 300, 7));
    CHECK(store.load("k1")->binary == fake_kernel("k1", 300, 7).binary);
  }

  TEST_CASE("disk cache: a compiled kernel is stored; a fresh memory cache loads it instead of compiling") {
    TempDir tmp;
    auto store = std::make_shared<jit::DiskStore>(options_for(tmp.str()));
    const jit::KernelSpec spec = small_spec();
    jit::KernelCache a;
    a.set_store(store);
    const auto compiled = a.get(spec);
    CHECK(a.stats().compiles == 1);
    CHECK(a.stats().store_hits == 0);
    CHECK(fs::exists(store->entry_path(key_of(spec))));

    jit::KernelCache b;  // a new process, as far as memory goes
    b.set_store(store);
    const auto loaded = b.get(spec);
    CHECK(b.stats().compiles == 0);
    CHECK(b.stats().store_hits == 1);
    CHECK(loaded->binary == compiled->binary);
    CHECK(loaded->lowered_name == compiled->lowered_name);
    CHECK(loaded->key == key_of(spec));
    b.get(spec);
    CHECK(b.stats().memory_hits == 1);

    b.clear_memory();
    b.get(spec);
    CHECK(b.stats().store_hits == 2);
  }

  TEST_CASE("disk cache: corrupt, truncated and foreign entries are misses, logged once, then replaced") {
    TempDir tmp;
    jit::DiskStore store(options_for(tmp / "cache"));
    const std::string key = "the key";
    const jit::CompiledKernel good = fake_kernel(key, 3000);
    const std::string bytes = jit::DiskStore::serialize(good);
    const std::size_t key_end = jit::kDiskHeaderBytes + key.size();
    const std::size_t meta_end = bytes.size() - good.binary.size();
    store.store(good);
    const std::string path = store.entry_path(key);
    REQUIRE(read_file(path) == bytes);

    struct Case {
      std::string name;
      std::string file;
      jit::EntryStatus status;
    };
    std::vector<Case> cases;
    for (std::size_t cut : {std::size_t(0), std::size_t(1), std::size_t(8), std::size_t(39), jit::kDiskHeaderBytes,
                            jit::kDiskHeaderBytes + 3, key_end + 5, meta_end, meta_end + 100, bytes.size() - 1})
      cases.push_back({fmt::format("truncated at {}", cut), bytes.substr(0, cut), jit::EntryStatus::short_file});
    auto flipped = [&](std::size_t at) {
      std::string b = bytes;
      b[at] = char(b[at] ^ 0x40);
      return b;
    };
    cases.push_back({"bad magic", flipped(0), jit::EntryStatus::bad_magic});
    cases.push_back({"other format version", flipped(8), jit::EntryStatus::bad_version});
    cases.push_back({"flipped payload byte", flipped(meta_end + 1234), jit::EntryStatus::bad_checksum});
    cases.push_back({"flipped last payload byte", flipped(bytes.size() - 1), jit::EntryStatus::bad_checksum});
    cases.push_back({"flipped metadata byte", flipped(key_end + 3), jit::EntryStatus::bad_checksum});
    cases.push_back({"flipped checksum", flipped(33), jit::EntryStatus::bad_checksum});
    cases.push_back({"flipped key byte", flipped(jit::kDiskHeaderBytes + 2), jit::EntryStatus::key_mismatch});
    cases.push_back({"trailing bytes", bytes + "xyz", jit::EntryStatus::long_file});
    {
      std::string b = bytes;
      b[31] = char(0x7f);  // payload length ~ 2^62
      cases.push_back({"absurd payload length", b, jit::EntryStatus::bad_header});
    }
    cases.push_back({"another key's entry under this name (a hash collision)",
                     jit::DiskStore::serialize(fake_kernel("another key", 3000)), jit::EntryStatus::key_mismatch});
    cases.push_back({"valid checksum, metadata not JSON", craft_entry(key, "{not json", good.binary),
                     jit::EntryStatus::bad_metadata});
    cases.push_back({"valid checksum, metadata without lowered_name",
                     craft_entry(key, R"({"is_ptx": false})", good.binary), jit::EntryStatus::bad_metadata});
    cases.push_back({"future format version, valid checksum",
                     craft_entry(key, R"({"lowered_name": "x", "is_ptx": false})", good.binary, 99),
                     jit::EntryStatus::bad_version});
    cases.push_back({"100 kB of garbage", std::string(100000, '\xAA'), jit::EntryStatus::bad_magic});

    for (const Case& c : cases) {
      CAPTURE(c.name);
      write_file(path, c.file);
      const jit::EntryInfo info = jit::DiskStore::read_entry(path, &key, nullptr);
      CHECK(jit::entry_status_name(info.status) == std::string(jit::entry_status_name(c.status)));
      StderrCapture cap(tmp / "stderr.txt");
      CHECK_FALSE(store.load(key).has_value());
      CHECK_FALSE(store.load(key).has_value());  // logged once, not per read
      const std::string err = cap.finish();
      CHECK(count_lines_with(err, "pagedjit:") == 1);
      CHECK(count_lines_with(err, path) == 1);
      // The tool's verify sees it too.
      const auto contents = store.scan(true, true);
      REQUIRE(contents.entries.size() == 1);
      CHECK(contents.entries[0].status != jit::EntryStatus::ok);
      // The recompiled kernel replaces the file, and the next read hits.
      store.store(good);
      const auto hit = store.load(key);
      REQUIRE(hit.has_value());
      CHECK(hit->binary == good.binary);
    }
  }

  TEST_CASE("disk cache: a corrupt entry of a real kernel is recompiled and replaced through KernelCache") {
    TempDir tmp;
    auto store = std::make_shared<jit::DiskStore>(options_for(tmp.str()));
    const jit::KernelSpec spec = small_spec();
    jit::KernelCache first;
    first.set_store(store);
    const auto original = first.get(spec);
    const std::string path = store->entry_path(key_of(spec));
    std::string bytes = read_file(path);
    bytes[bytes.size() / 2 + 100] ^= 1;
    write_file(path, bytes);

    jit::KernelCache second;
    second.set_store(store);
    StderrCapture cap(tmp / "stderr.txt");
    const auto again = second.get(spec);
    const std::string err = cap.finish();
    CHECK(second.stats().compiles == 1);
    CHECK(second.stats().store_hits == 0);
    CHECK(again->lowered_name == original->lowered_name);
    CHECK(count_lines_with(err, "pagedjit:") == 1);
    CHECK(count_lines_with(err, "bad_checksum") == 1);
    const auto contents = store->scan(true, true);
    REQUIRE(contents.entries.size() == 1);
    CHECK(contents.entries[0].status == jit::EntryStatus::ok);
  }

  TEST_CASE("disk cache: a directory that cannot be created degrades to memory-only with one warning") {
    TempDir tmp;
    write_file(tmp / "a-file", "not a directory");
    const std::string dir = tmp / "a-file/cache";  // mkdir fails (ENOTDIR), for root too
    auto store = std::make_shared<jit::DiskStore>(options_for(dir));
    jit::KernelCache cache;
    cache.set_store(store);
    StderrCapture cap(tmp / "stderr.txt");
    const auto a = cache.get(small_spec(DType::bf16));
    const auto b = cache.get(small_spec(DType::f16));
    cache.clear_memory();
    const auto c = cache.get(small_spec(DType::bf16));
    const std::string err = cap.finish();
    CHECK(a->binary.size() > 1000);
    CHECK(b->binary.size() > 1000);
    CHECK(c->lowered_name == a->lowered_name);  // (NVRTC output is not byte-reproducible: internal symbol names vary)
    CHECK(cache.stats().compiles == 3);
    CHECK_FALSE(store->writable());
    CHECK(count_lines_with(err, "pagedjit:") == 1);
    CHECK(count_lines_with(err, "memory only") == 1);
  }

  TEST_CASE("disk cache: the directory deleted while in use: calls keep working") {
    TempDir tmp;
    const std::string dir = tmp / "cache";
    jit::KernelCache cache;
    cache.set_store(std::make_shared<jit::DiskStore>(options_for(dir)));
    const auto first = cache.get(small_spec(DType::bf16));
    CHECK(!first->binary.empty());
    std::filesystem::remove_all(dir);                       // another process cleaned up under our feet
    const auto second = cache.get(small_spec(DType::f16));  // compiled, stored again or kept in memory
    CHECK(!second->binary.empty());
    CHECK(cache.get(small_spec(DType::bf16)).get() == first.get());  // the memory copy still serves
    jit::KernelCache fresh;                                          // a later process on the same path
    fresh.set_store(std::make_shared<jit::DiskStore>(options_for(dir)));
    CHECK(!fresh.get(small_spec(DType::f16))->binary.empty());
  }

  TEST_CASE("disk cache: a read-only directory serves its entries and keeps new kernels in memory, one warning") {
    TempDir tmp;
    fs::permissions(tmp.path, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                  fs::perms::others_read | fs::perms::others_exec);
    const std::string dir = tmp / "cache";
    const jit::KernelSpec cached = small_spec(DType::bf16);
    {
      jit::KernelCache fill;
      fill.set_store(std::make_shared<jit::DiskStore>(options_for(dir)));
      fill.get(cached);
      const auto plan = attention::make_plan(shape(DType::bf16, 64), {}, DeviceInfo::h100_sxm());
      fill.get(plan.decode);
    }
    const auto before = files_in(dir);
    REQUIRE(before.size() == 2);
    ::chmod(dir.c_str(), 0555);

    if (::geteuid() != 0) {
      auto store = std::make_shared<jit::DiskStore>(options_for(dir));
      jit::KernelCache cache;
      cache.set_store(store);
      StderrCapture cap(tmp / "stderr.txt");
      cache.get(cached);                  // served from the read-only cache
      cache.get(small_spec(DType::f16));  // compiled, cannot be stored
      cache.get(small_spec(DType::f32));  // compiled, no second warning
      const std::string err = cap.finish();
      CHECK(cache.stats().store_hits == 1);
      CHECK(cache.stats().compiles == 2);
      CHECK_FALSE(store->writable());
      CHECK(count_lines_with(err, "pagedjit:") == 1);
    } else {
#ifdef PAGEDJIT_CACHE_TOOL
      // Root writes through 0555, so run the tool as `nobody` to see a
      // read-only directory. Shape 1's kernel is cached, shape 2's is not
      // (planned as above: the heuristic's).
      const std::string shapes =
          write_shapes(tmp, "shapes.json",
                       json::array({{{"dtype", "bf16"}, {"head_dim", 64}}, {{"dtype", "fp16"}, {"head_dim", 64}}}));
      ::chmod(shapes.c_str(), 0644);
      const std::string out_path = tmp / "out.json", err_path = tmp / "err.txt";
      const pid_t pid = ::fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (out < 0 || err < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) ::_exit(76);
        if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(77);
        ::execl(PAGEDJIT_CACHE_TOOL, PAGEDJIT_CACHE_TOOL, "warm", "--json", "--jobs", "1", "--dir", dir.c_str(),
                "--shapes", shapes.c_str(), "--no-profile", static_cast<char*>(nullptr));
        ::_exit(78);
      }
      int st = 0;
      ::waitpid(pid, &st, 0);
      const int code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      if (code == 77 || code == 78) {
        MESSAGE("read-only directory: skipped (tests run as root, and switching to uid nobody failed, code ", code,
                "); the not-creatable-directory case above covers the degradation");
      } else {
        const std::string err = read_file(err_path);
        CAPTURE(err);
        CHECK(code == 1);  // warm reports that nothing could be stored
        const json r = json::parse(read_file(out_path));
        CHECK(r["cached"] == 1);    // shape 1's decode kernel
        CHECK(r["compiled"] == 1);  // shape 2's
        CHECK(r["failed"] == 0);
        CHECK(r["writable"] == false);
        CHECK(count_lines_with(err, "pagedjit:") == 1);
        CHECK(count_lines_with(err, "memory only") == 1);
        CHECK(files_in(dir) == before);
      }
#else
      MESSAGE(
          "read-only directory: skipped (tests run as root, where chmod does not block writes, and the "
          "pagedjit-cache tool is not built)");
#endif
    }
  }

  TEST_CASE("disk cache: no room to write (a file size limit): kernels served from memory, nothing partial, no crash") {
    // The cache directory filling up, simulated without privileges: a child
    // process may not write files past 1 kB (RLIMIT_FSIZE, `ulimit -f`); an
    // entry is about 40 kB, a lock file a few bytes.
    bool ignore_sigxfsz = true;
    SUBCASE("SIGXFSZ ignored: writing an entry fails part way with EFBIG, as with ENOSPC on a full disk") {}
    SUBCASE("SIGXFSZ at its default: the entry is not written (writing it used to kill the process)") {
      ignore_sigxfsz = false;
    }
    TempDir tmp;
    const std::string dir = tmp / "cache";
    const jit::KernelSpec cached = small_spec(DType::bf16);
    jit::DiskStore(options_for(dir)).store(*jit::KernelCache::global().get(cached));
    const std::string cached_file = jit::entry_file_name(key_of(cached));
    REQUIRE(files_in(dir) == std::vector<std::string>{cached_file});
    constexpr rlim_t kLimit = 1024;
    REQUIRE(fs::file_size(dir + "/" + cached_file) > 8 * kLimit);

    const ChildOutput out = run_child([&] {
      if (!limit_file_size(kLimit, ignore_sigxfsz)) return 3;
      child_line("@report " + full_cache_scenario(dir, cached).dump());
      return 0;
    });
    INFO("the child's exit status, -signal if killed (SIGXFSZ is ", SIGXFSZ, "): ", out.code);
    check_full_cache_child(out, dir, cached_file);
    CHECK(count_lines_with(out.err, std::strerror(EFBIG)) == 1);
    CHECK(count_lines_with(out.err, "ulimit -f") == 1);

    // Another process, with room: the cached entry is a hit, the kernels the
    // child could not store are clean misses (no warning: no file at all).
    CHECK(files_in(dir) == std::vector<std::string>{cached_file});
    {
      jit::DiskStore later(options_for(dir));
      StderrCapture cap(tmp / "stderr.txt");
      CHECK(later.load(key_of(cached)).has_value());
      CHECK_FALSE(later.load(key_of(small_spec(DType::f16))).has_value());
      CHECK_FALSE(later.load(key_of(small_spec(DType::f32))).has_value());
      CHECK(cap.finish().empty());
    }
#ifdef PAGEDJIT_CACHE_TOOL
    const json verify = tool_json(fmt::format("verify --json --dir '{}'", dir), 0);
    CHECK(verify["entries"] == 1);
    CHECK(verify["valid"] == 1);
    CHECK(verify["bad"].empty());
    CHECK(verify["temp_files"] == 0);
    CHECK(verify["lock_files"] == 0);
#endif
  }

  TEST_CASE("disk cache: the file system full (ENOSPC on a small tmpfs): kernels served from memory, nothing partial") {
    // A real ENOSPC: a 1 MiB tmpfs in a private mount namespace of a child
    // process, holding one entry, then filled up but for four pages: a lock
    // file fits, an entry (about 40 kB) is written part way (12 kB), then fails.
    TempDir tmp;
    const std::string mnt = tmp / "fs", dir = mnt + "/cache";
    fs::create_directory(mnt);
    const jit::KernelSpec cached = small_spec(DType::bf16);
    const jit::KernelCache::Kernel cached_kernel = jit::KernelCache::global().get(cached);
    const std::string cached_file = jit::entry_file_name(key_of(cached));

    const ChildOutput out = run_child([&] {
      std::string why;
      if (!mount_private_tmpfs(mnt, "size=1m,mode=0700", why)) {
        child_line("@skip " + why);
        return 0;
      }
      jit::DiskStore first(options_for(dir));
      first.store(*cached_kernel);
      if (!first.writable()) throw std::runtime_error("could not store an entry into the fresh tmpfs");
      const std::string filler = mnt + "/filler";
      const int fd = ::open(filler.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd < 0) throw std::runtime_error("cannot create the filler");
      const std::string zeros(1 << 16, '\0');
      off_t size = 0;
      for (;;) {
        const ssize_t n = ::write(fd, zeros.data(), zeros.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        size += n;
      }
      if (errno != ENOSPC) throw std::runtime_error(fmt::format("filling the tmpfs: {}", std::strerror(errno)));
      if (::ftruncate(fd, std::max<off_t>(0, (size - 16384) / 4096 * 4096)) != 0) throw std::runtime_error("ftruncate");
      ::close(fd);
      json report = full_cache_scenario(dir, cached);
      // Room again (someone cleaned up): a new process stores as usual.
      ::unlink(filler.c_str());
      jit::DiskStore again(options_for(dir));
      again.store(fake_kernel("after the clean-up", 50000));
      report["writable_after_cleanup"] = again.writable();
      report["valid_after_cleanup"] = again.load("after the clean-up").has_value();
      child_line("@report " + report.dump());
      return 0;
    });
    if (!out.skipped.empty()) {
      MESSAGE("ENOSPC on a tmpfs: SKIPPED (", out.skipped, "); the RLIMIT_FSIZE case takes the same path with EFBIG");
      return;
    }
    check_full_cache_child(out, dir, cached_file);
    CHECK(count_lines_with(out.err, std::strerror(ENOSPC)) == 1);
    CHECK(count_lines_with(out.err, "file system is full") == 1);
    CHECK(out.report["writable_after_cleanup"] == true);
    CHECK(out.report["valid_after_cleanup"] == true);
  }

  TEST_CASE("disk cache: eviction keeps the total under the cap, least recently used first") {
    TempDir tmp;
    jit::DiskStoreOptions o = options_for(tmp.str());
    const std::uint64_t one = jit::DiskStore::serialize(fake_kernel("k1", 10000)).size();
    o.max_bytes = 3 * one + one / 2;  // room for three entries
    jit::DiskStore store(o);
    for (const char* k : {"k1", "k2", "k3"}) store.store(fake_kernel(k, 10000));
    auto age = [&](const char* key, int seconds_ago) {
      struct timespec t[2];
      t[0].tv_sec = t[1].tv_sec = std::time(nullptr) - seconds_ago;
      t[0].tv_nsec = t[1].tv_nsec = 0;
      REQUIRE(::utimensat(AT_FDCWD, store.entry_path(key).c_str(), t, 0) == 0);
    };
    age("k1", 300);
    age("k2", 200);
    age("k3", 100);
    REQUIRE(store.load("k1").has_value());  // k1 becomes the most recently used
    store.store(fake_kernel("k4", 10000));  // over the cap: k2, the least recently used, goes
    CHECK(fs::exists(store.entry_path("k1")));
    CHECK_FALSE(fs::exists(store.entry_path("k2")));
    CHECK(fs::exists(store.entry_path("k3")));
    CHECK(fs::exists(store.entry_path("k4")));

    // One entry bigger than the cap: everything else goes, the new one stays.
    store.store(fake_kernel("big", 50000));
    CHECK(files_in(tmp.str()) == std::vector<std::string>{jit::entry_file_name("big")});
    CHECK(store.load("big").has_value());

    // Another process's writes count too: a fresh store over a full directory
    // trims it on its first write.
    jit::DiskStoreOptions small = o;
    small.max_bytes = 2 * one + one / 2;
    for (const char* k : {"p1", "p2", "p3"}) {
      jit::DiskStore other(options_for(tmp.str()));
      other.store(fake_kernel(k, 10000));
    }
    jit::DiskStore capped(small);
    capped.store(fake_kernel("p4", 10000));
    std::uint64_t total = 0;
    for (const auto& e : capped.scan(false, false).entries) total += e.file_bytes;
    CHECK(total <= small.max_bytes);
    CHECK(fs::exists(store.entry_path("p4")));
    CHECK_FALSE(fs::exists(store.entry_path("big")));
  }

  TEST_CASE("disk cache: lock files time out, and stale ones are broken") {
    TempDir tmp;
    jit::DiskStoreOptions o = options_for(tmp.str());
    o.lock_timeout = std::chrono::milliseconds(150);
    jit::DiskStore store(o);
    auto held = store.claim("key");
    REQUIRE(held != nullptr);
    const std::string lock = tmp / fmt::format("{:016x}.lock", jit::fnv1a64("key"));
    CHECK(fs::exists(lock));
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(store.claim("key") == nullptr);  // held by a live process: waits, then gives up
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(waited >= 0.14);
    CHECK(waited < 5.0);
    CHECK(store.claim("other key") != nullptr);  // other keys are independent
    held.reset();
    CHECK_FALSE(fs::exists(lock));
    CHECK(store.claim("key") != nullptr);

    // Left by a dead process of this host: broken at once.
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) ::_exit(0);
    ::waitpid(child, nullptr, 0);
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    write_file(lock, fmt::format("{} {}\n", child, host));
    o.lock_timeout = std::chrono::milliseconds(20000);
    jit::DiskStore patient(o);
    const auto t1 = std::chrono::steady_clock::now();
    CHECK(patient.claim("key") != nullptr);
    CHECK(std::chrono::steady_clock::now() - t1 < std::chrono::seconds(5));

    // Older than the stale age (another host, say): broken too.
    write_file(lock, "1 some-other-host\n");
    struct timespec t[2];
    t[0].tv_sec = t[1].tv_sec = std::time(nullptr) - 3600;
    t[0].tv_nsec = t[1].tv_nsec = 0;
    ::utimensat(AT_FDCWD, lock.c_str(), t, 0);
    CHECK(patient.claim("key") != nullptr);

    // No locks when disabled.
    o.use_locks = false;
    CHECK(jit::DiskStore(o).claim("key") == nullptr);
  }

  TEST_CASE("disk cache: PAGEDJIT_JIT=off makes a miss an error and still serves cached kernels") {
    TempDir tmp;
    auto store = std::make_shared<jit::DiskStore>(options_for(tmp / "cache"));
    const jit::KernelSpec spec = small_spec(DType::f16);
    {
      EnvGuard off("PAGEDJIT_JIT", "off");
      jit::KernelCache cache;
      cache.set_store(store);
      try {
        cache.get(spec);
        FAIL("a miss compiled with PAGEDJIT_JIT=off");
      } catch (const CacheError& e) {
        CHECK(e.code() == ErrorCode::jit_disabled);
        const std::string what = e.what();
        CHECK(what.find(spec.readable()) != std::string::npos);
        CHECK(what.find(tmp / "cache") != std::string::npos);
      }
      CHECK(cache.stats().compiles == 0);

      jit::KernelCache no_disk;
      try {
        no_disk.get(spec);
        FAIL("a miss compiled with PAGEDJIT_JIT=off");
      } catch (const CacheError& e) {
        CHECK(e.code() == ErrorCode::jit_disabled);
        CHECK(std::string(e.what()).find("disk cache disabled") != std::string::npos);
      }
    }
    {
      jit::KernelCache warm;  // JIT on: compile into the cache
      warm.set_store(store);
      warm.get(spec);
    }
    EnvGuard off("PAGEDJIT_JIT", "off");
    jit::KernelCache cache;
    cache.set_store(store);
    CHECK(cache.get(spec)->binary.size() > 1000);
    CHECK(cache.stats().store_hits == 1);
    CHECK(cache.stats().compiles == 0);
  }

#ifdef PAGEDJIT_CACHE_TOOL
  TEST_CASE("disk cache: pagedjit-cache --help, list, stats, clear and verify") {
    for (const char* cmd : {"", "list", "stats", "clear", "verify", "warm", "time-load", "time-compile"}) {
      CAPTURE(cmd);
      const RunResult r = run_tool(fmt::format("{} --help", cmd));
      CHECK(r.status == 0);
      CHECK(r.out.find("usage: pagedjit-cache") != std::string::npos);
    }
    CHECK(run_tool("frobnicate 2>/dev/null").status == 2);
    CHECK(run_tool("list --bogus 2>/dev/null").status == 2);

    TempDir tmp;
    const std::string dir = tmp / "cache";
    jit::DiskStore store(options_for(dir));
    store.store(fake_kernel("k1", 2000));
    store.store(fake_kernel("k2", 2000));
    const std::string bad_path = store.entry_path("k2");
    std::string bytes = read_file(bad_path);
    bytes[bytes.size() - 10] ^= 1;
    write_file(bad_path, bytes);

    const json list = json::parse(run_tool(fmt::format("--dir '{}' list --json", dir)).out);
    CHECK(list["entries"].size() == 2);
    const json stats = json::parse(run_tool(fmt::format("stats --json --dir '{}'", dir)).out);
    CHECK(stats["entries"] == 2);
    CHECK(stats["stale_entries"] == 2);  // fake keys are not this build's
    CHECK(stats["bytes"].get<std::uint64_t>() > 4000);

    const RunResult v = run_tool(fmt::format("verify --json --dir '{}'", dir));
    CHECK(v.status == 1);
    const json verify = json::parse(v.out);
    CHECK(verify["valid"] == 1);
    REQUIRE(verify["bad"].size() == 1);
    CHECK(verify["bad"][0]["status"] == "bad_checksum");
    CHECK(verify["bad"][0]["removed"] == true);
    CHECK_FALSE(fs::exists(bad_path));
    CHECK(run_tool(fmt::format("verify --dir '{}' >/dev/null", dir)).status == 0);

    const json cleared = json::parse(run_tool(fmt::format("clear --json --dir '{}'", dir)).out);
    CHECK(cleared["entries_removed"] == 1);
    CHECK(files_in(dir).empty());
  }

  TEST_CASE("disk cache: eight processes warming one directory at once leave only valid entries") {
    TempDir tmp;
    const std::string shapes = write_shapes(
        tmp, "shapes.json", {{"shapes", json::array({{{"head_dim", 64}}, {{"dtype", "fp16"}, {"head_dim", 64}}})}});
    for (const bool locks : {true, false}) {
      CAPTURE(locks);
      const std::string dir = tmp / (locks ? "with-locks" : "without-locks");
      // Without locks every process compiles every kernel: one shape keeps that short.
      const std::string shape_arg = locks ? shapes : write_shapes(tmp, "one.json", json::array({{{"head_dim", 64}}}));
      std::vector<FILE*> procs;
      for (int i = 0; i < 8; ++i) {
        const std::string cmd = fmt::format("{} '{}' warm --json --jobs 1 --dir '{}' --shapes '{}' 2>'{}'",
                                            locks ? "" : "PAGEDJIT_CACHE_LOCKS=off", PAGEDJIT_CACHE_TOOL, dir,
                                            shape_arg, tmp / fmt::format("err{}.txt", i));
        procs.push_back(::popen(cmd.c_str(), "r"));
        REQUIRE(procs.back() != nullptr);
      }
      std::size_t compiled = 0, kernels = 0;
      for (int i = 0; i < 8; ++i) {
        std::string out;
        char buf[4096];
        for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, procs[std::size_t(i)])) > 0;) out.append(buf, n);
        const int st = ::pclose(procs[std::size_t(i)]);
        CAPTURE(out);
        CAPTURE(read_file(tmp / fmt::format("err{}.txt", i)));
        CHECK((WIFEXITED(st) && WEXITSTATUS(st) == 0));
        const json r = json::parse(out);
        CHECK(r["failed"] == 0);
        CHECK(r["compiled"].get<std::size_t>() + r["cached"].get<std::size_t>() == r["kernels"].get<std::size_t>());
        compiled += r["compiled"].get<std::size_t>();
        kernels = r["kernels"].get<std::size_t>();
      }
      CHECK(kernels == (locks ? 2u : 1u));  // one decode kernel per shape
      CHECK(compiled >= kernels);
      if (locks) CHECK(compiled == kernels);  // the locks avoided every duplicate compile

      const RunResult v = run_tool(fmt::format("verify --json --dir '{}'", dir));
      CHECK(v.status == 0);
      const json verify = json::parse(v.out);
      CHECK(verify["entries"] == kernels);
      CHECK(verify["valid"] == kernels);
      CHECK(verify["bad"].empty());
      CHECK(verify["lock_files"] == 0);
      CHECK(verify["temp_files"] == 0);
    }
  }

  TEST_CASE("disk cache: processes with no room to write share the directory with one that has room") {
    // Two `warm` processes that cannot write files past 1 kB (see the file
    // size limit case above; one ignores SIGXFSZ, one does not) and one that
    // can, on one directory at once: the first two still get every kernel
    // (compiled, or read from the third's entries) and warn once if a write
    // failed; readers only ever see complete entries.
    TempDir tmp;
    const std::string dir = tmp / "cache";
    const std::string shapes =
        write_shapes(tmp, "shapes.json", json::array({{{"head_dim", 16}}, {{"dtype", "fp16"}, {"head_dim", 16}}}));
    std::vector<ToolProcess> procs;
    for (int i = 0; i < 3; ++i)
      procs.push_back(
          spawn_tool({"warm", "--json", "--jobs", "1", "--dir", dir, "--shapes", shapes}, i < 2 ? 1024 : 0, i == 0));
    for (int i = 0; i < 3; ++i) {
      const bool limited = i < 2;
      const ToolResult r = finish(procs[std::size_t(i)]);
      CAPTURE(i);
      CAPTURE(r.status);  // -signal when killed
      CAPTURE(r.out);
      CAPTURE(r.err);
      const json j = json::parse(r.out, nullptr, false);
      REQUIRE(j.is_object());
      CHECK(j["kernels"] == 2);
      CHECK(j["failed"] == 0);
      CHECK(j["compiled"].get<int>() + j["cached"].get<int>() == 2);
      CHECK(count_lines_with(r.err, "unusable") == 0);  // never a partial entry
      if (limited && j["writable"] == false) {          // it had to compile, and could not store
        CHECK(r.status == 1);
        CHECK(count_lines_with(r.err, "pagedjit:") == 1);
        CHECK(count_lines_with(r.err, "ulimit -f") == 1);
      } else {
        CHECK(r.status == 0);
        CHECK(j["writable"] == true);
        CHECK(count_lines_with(r.err, "pagedjit:") == 0);
      }
    }
    const json verify = tool_json(fmt::format("verify --json --dir '{}'", dir), 0);
    CHECK(verify["entries"] == 2);  // the writer's, both complete
    CHECK(verify["valid"] == 2);
    CHECK(verify["bad"].empty());
    CHECK(verify["temp_files"] == 0);
    CHECK(verify["lock_files"] == 0);
  }

  TEST_CASE("pagedjit-cache warm: a shapes file's numbers must be whole and in range (were converted unchecked)") {
    TempDir tmp;
    const std::string dir = tmp / "cache";
    struct Bad {
      json shape;
      std::string message;
    };
    const std::vector<Bad> bad = {
        {{{"head_dim", 128.7}}, "head_dim = 128.7 is not an integer"},
        {{{"head_dim", 1e30}}, "head_dim = 1e+30 is out of range"},
        {{{"head_dim", -64}}, "head_dim = -64 is out of range"},
        {{{"head_dim", "64"}}, "head_dim must be an integer, got \"64\" (string)"},
        {{{"head_dim", true}}, "head_dim must be an integer, got true (boolean)"},
        {{{"head_dim", 64}, {"num_heads", 4294967296.0}}, "num_heads = 4294967296.0 is out of range"},
        {{{"head_dim", 64}, {"num_kv_heads", 18446744073709551615ull}}, "num_kv_heads = 18446744073709551615 is out"},
        {{{"head_dim", 64}, {"group", 0}}, "group = 0 is out of range"},  // was a division by zero
        {{{"head_dim", 64}, {"page_size", 0}}, "page_size = 0 is out of range"},
        {{{"head_dim", 64}, {"num_seqs", 2.5}}, "num_seqs = 2.5 is not an integer"},
        {{{"head_dim", 64}, {"max_context_len", 1e300}}, "max_context_len = 1e+300 is out of range"},
        {{{"head_dim", 64}, {"ctx", {{"lengths", {100, 7.5}}}}}, "ctx.lengths[] = 7.5 is not an integer"},
        {{{"head_dim", 64}, {"num_splits", -1}}, "num_splits = -1 is out of range"},
        {{{"head_dim", 64}, {"num_kv_heads", 65536}, {"group", 65536}}, "is more than 2^31-1 heads"},
        {{{"head_dim", 64}, {"num_seqs", 65536}, {"max_context_len", 2147483647}}, "more than 2^31-1"},
        {{{"head_dim", 64}, {"pages_per_compute_block", 1000}}, "more than 4096 tokens"},
        {{{"num_heads", 8}}, "head_dim is required"},
        {json(12), "expected an object, got 12"},
    };
    for (std::size_t i = 0; i < bad.size(); ++i) {
      CAPTURE(bad[i].shape.dump());
      const std::string shapes = write_shapes(tmp, fmt::format("bad{}.json", i), json::array({bad[i].shape}));
      const RunResult r = run_tool(fmt::format("warm --dir '{}' --shapes '{}' 2>&1", dir, shapes));
      CAPTURE(r.out);
      CHECK(r.status == 2);  // a usage error, before anything is compiled
      CHECK(r.out.find(fmt::format("bad{}.json: shape 0: ", i)) != std::string::npos);
      CHECK(r.out.find(bad[i].message) != std::string::npos);
      CHECK(count_lines_with(r.out, "compiled") == 0);
    }
    CHECK_FALSE(fs::exists(dir));

    // Whole numbers written as floats are whole numbers.
    const std::string ok =
        write_shapes(tmp, "ok.json", json::array({{{"head_dim", 16.0}, {"num_heads", 8}, {"group", 2.0}}}));
    const RunResult r = run_tool(fmt::format("warm --json --jobs 1 --dir '{}' --shapes '{}'", dir, ok));
    CAPTURE(r.out);
    CHECK(r.status == 0);
    const json j = json::parse(r.out);
    CHECK(j["kernels"] == 1);
    CHECK(j["failed"] == 0);
  }

  TEST_CASE("pagedjit-cache warm: the merge mode follows --arch and --no-cluster (sm_80 has no clusters)") {
    TempDir tmp;
    const std::string dir = tmp / "cache";
    // One 1k-token sequence: 2-8 partitions merged in a cluster on the H100 preset.
    const std::string shapes = write_shapes(
        tmp, "small.json",
        json::array({{{"head_dim", 64}, {"num_heads", 8}, {"group", 8}, {"num_seqs", 1}, {"max_context_len", 1024}}}));
    const auto kernel_of = [&](const std::string& options) {
      const RunResult r =
          run_tool(fmt::format("warm --json --jobs 1 --dir '{}' --shapes '{}' {}", dir, shapes, options));
      CAPTURE(options);
      CAPTURE(r.out);
      CHECK(r.status == 0);
      const json j = json::parse(r.out);
      CHECK(j["failed"] == 0);
      REQUIRE(j["kernels"] == 1);
      return j["results"][0]["kernel"].get<std::string>();
    };
    CHECK(kernel_of("").find("merge-cluster sm_90a") != std::string::npos);
    CHECK(kernel_of("--no-cluster").find("merge-global sm_90a") != std::string::npos);
    CHECK(kernel_of("--arch sm_80").find("merge-global sm_80") != std::string::npos);  // was a failed compile
  }
#endif
}
