// The disk cache against a hostile directory: files that are not regular
// (FIFOs, links, directories), entries and directories another user could
// write, planted lock files, forged lengths, deep JSON, the size cap evicting
// what `warm` just wrote, and the kernel source override. CPU only.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../tools/common/cases.hpp"
#include "attention/plan_cache.hpp"
#include "attention/planner.hpp"
#include "disk_cache_support.hpp"
#include "jit/disk_store.hpp"
#include "jit/hash.hpp"
#include "jit/source_set.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/errors.hpp"
#include "precompile.hpp"
#include "tuning/registry.hpp"

using namespace pagedjit;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using namespace pjtest::disk;

// Sets the file's access and modification times to now + `seconds`.
void set_mtime(const std::string& path, std::int64_t seconds_from_now) {
  struct timespec t[2];
  t[0].tv_sec = t[1].tv_sec = std::time(nullptr) + seconds_from_now;
  t[0].tv_nsec = t[1].tv_nsec = 0;
  REQUIRE(::utimensat(AT_FDCWD, path.c_str(), t, AT_SYMLINK_NOFOLLOW) == 0);
}

std::string this_boot() {
  std::string id = read_file("/proc/sys/kernel/random/boot_id");
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id.empty() ? "-" : id;
}

std::string this_host() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return host;
}

std::string lock_path(const std::string& dir, const std::string& key) {
  return dir + "/" + fmt::format("{:016x}.lock", jit::fnv1a64(key));
}

// JSON nested `depth` levels: [[[...]]].
std::string deep_json(int depth) {
  return std::string(std::size_t(depth), '[') + std::string(std::size_t(depth), ']');
}

// Another user's uid for the owner checks: root can give files away; others
// make the store trust another uid instead (its own files then look foreign).
constexpr uid_t kOtherUid = 4242;

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("disk cache: a FIFO, a symbolic link or a directory in an entry's place never blocks, is never followed") {
    TempDir tmp;
    const std::string dir = tmp / "cache";
    jit::DiskStore store(options_for(dir));
    store.store(fake_kernel("valid", 2000));
    const std::string fifo = store.entry_path("fifo"), lock = lock_path(dir, "fifo");
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    REQUIRE(::mkfifo(lock.c_str(), 0600) == 0);

    // Every reader of a FIFO used to block forever: a child, killed by an alarm if it does.
    const ChildOutput out = run_child([&] {
      ::alarm(60);
      jit::DiskStoreOptions o = options_for(dir);
      o.lock_timeout = std::chrono::milliseconds(20000);
      o.warnings = false;
      jit::DiskStore s(o);
      const jit::EntryInfo info = jit::DiskStore::read_entry(fifo, nullptr, nullptr);
      const bool loaded = s.load("fifo").has_value();
      const auto contents = s.scan(true, true);
      const bool claimed = s.claim("fifo") != nullptr;  // the FIFO lock is nobody's claim: broken
      s.store(fake_kernel("fifo", 2000));               // and the entry replaced
      child_line("@report " + json({{"status", jit::entry_status_name(info.status)},
                                    {"detail", info.detail},
                                    {"loaded", loaded},
                                    {"entries", contents.entries.size()},
                                    {"claimed", claimed},
                                    {"replaced", s.load("fifo").has_value()}})
                                  .dump());
      return 0;
    });
    INFO("the child's exit status, -signal if killed (SIGALRM is ", SIGALRM, "): ", out.code);
    CAPTURE(out.err);
    REQUIRE(out.code == 0);
    CHECK(out.report["status"] == "not_regular");
    CHECK(out.report["detail"] == "a FIFO");
    CHECK(out.report["loaded"] == false);
    CHECK(out.report["entries"] == 2);
    CHECK(out.report["claimed"] == true);
    CHECK(out.report["replaced"] == true);

#ifdef PAGEDJIT_CACHE_TOOL
    // The tools too: list, stats and verify (which removes it) come back.
    REQUIRE(::unlink(fifo.c_str()) == 0);
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    for (const char* cmd : {"list --json", "stats --json", "verify --json"}) {
      CAPTURE(cmd);
      const RunResult r = run_tool(fmt::format("{} --dir '{}' 2>&1", cmd, dir), "timeout 60");
      CAPTURE(r.out);
      CHECK(r.status == (std::string(cmd) == "verify --json" ? 1 : 0));
    }
    CHECK_FALSE(fs::exists(fs::symlink_status(fifo)));
#endif

    // A symbolic link to a valid entry elsewhere (another user's file, say) is not followed.
    TempDir other;
    jit::DiskStore elsewhere(options_for(other.str()));
    elsewhere.store(fake_kernel("linked", 2000));
    const std::string link = store.entry_path("linked");
    fs::create_symlink(elsewhere.entry_path("linked"), link);
    CHECK(jit::DiskStore::read_entry(link, nullptr, nullptr).status == jit::EntryStatus::not_regular);
    {
      StderrCapture cap(tmp / "stderr.txt");
      CHECK_FALSE(store.load("linked").has_value());
      CHECK(count_lines_with(cap.finish(), "symbolic link") == 1);
    }
    store.store(fake_kernel("linked", 2000));  // replaces the link, not its target
    CHECK(fs::is_regular_file(fs::symlink_status(link)));
    CHECK(jit::DiskStore::read_entry(elsewhere.entry_path("linked"), nullptr, nullptr).status == jit::EntryStatus::ok);

    // A directory in an entry's place: an empty one is replaced; one that
    // cannot be removed costs that kernel its entry, not the store its writes.
    fs::create_directory(store.entry_path("empty dir"));
    fs::create_directories(store.entry_path("full dir") + "/inside");
    StderrCapture cap(tmp / "stderr.txt");
    store.store(fake_kernel("empty dir", 2000));
    store.store(fake_kernel("full dir", 2000));
    store.store(fake_kernel("full dir", 2000));
    store.store(fake_kernel("after", 2000));
    const std::string err = cap.finish();
    CHECK(store.load("empty dir").has_value());
    CHECK_FALSE(store.load("full dir").has_value());
    CHECK(store.load("after").has_value());
    CHECK(store.writable());
    CHECK(count_lines_with(err, "pagedjit:") == 1);
    CHECK(count_lines_with(err, "memory only") == 1);
    CHECK(count_lines_with(err, store.entry_path("full dir")) == 1);
  }

  TEST_CASE("disk cache trust: the owner and mode rule") {
    const uid_t me = 1000;
    CHECK(jit::trust_problem(me, S_IFDIR | 0700, me).empty());
    CHECK(jit::trust_problem(me, S_IFDIR | 0755, me).empty());
    CHECK(jit::trust_problem(0, S_IFDIR | 0755, me).empty());  // root's: root can change anything anyway
    CHECK(jit::trust_problem(me, S_IFREG | 0644, me).empty());
    CHECK(jit::trust_problem(me, S_IFDIR | 0770, me) == "writable by its group (mode 0770)");
    CHECK(jit::trust_problem(me, S_IFDIR | 0757, me) == "writable by others (mode 0757)");
    CHECK(jit::trust_problem(me, S_IFDIR | 01777, me) == "writable by others (mode 1777)");
    CHECK(jit::trust_problem(me, S_IFREG | 0666, me) == "writable by others (mode 0666)");
    CHECK(jit::trust_problem(1001, S_IFDIR | 0700, me) == "owned by uid 1001, not by this user (uid 1000) or root");
    CHECK(jit::trust_problem(0, S_IFDIR | 0777, 0) == "writable by others (mode 0777)");
  }

  TEST_CASE("disk cache trust: a directory another user can write is refused: memory only, one warning") {
    TempDir tmp;
    const std::string dir = tmp / "cache";
    jit::DiskStore(options_for(dir)).store(fake_kernel("forged", 2000));  // as if planted by another user

    struct Case {
      const char* name;
      mode_t mode;
      bool give_away;  // owned by another user
      const char* why;
    };
    for (const Case& c : {Case{"mode 0777", 0777, false, "writable by others (mode 0777)"},
                          Case{"mode 0770", 0770, false, "writable by its group (mode 0770)"},
                          Case{"another user's", 0755, true, "owned by uid"}}) {
      CAPTURE(c.name);
      REQUIRE(::chmod(dir.c_str(), c.mode) == 0);
      jit::DiskStoreOptions o = options_for(dir);
      if (c.give_away && ::geteuid() == 0)
        REQUIRE(::chown(dir.c_str(), kOtherUid, kOtherUid) == 0);
      else if (c.give_away)
        o.user = ::geteuid() + 1;
      jit::DiskStore store(o);
      StderrCapture cap(tmp / "stderr.txt");
      CHECK_FALSE(store.load("forged").has_value());
      store.store(fake_kernel("new", 2000));
      CHECK(store.claim("new") == nullptr);
      CHECK_FALSE(store.load("forged").has_value());
      const std::string err = cap.finish();
      CHECK(count_lines_with(err, "pagedjit:") == 1);
      CHECK(count_lines_with(err, c.why) == 1);
      CHECK(count_lines_with(err, "memory only") == 1);
      CHECK_FALSE(store.writable());
      CHECK_FALSE(fs::exists(store.entry_path("new")));
      CHECK_THROWS_AS(store.scan(false, false), CacheError);
#ifdef PAGEDJIT_CACHE_TOOL
      if (!c.give_away || ::geteuid() == 0)  // (the tool trusts this process's uid)
        for (const char* cmd : {"list", "stats", "verify", "clear", "warm --jobs 1"}) {
          CAPTURE(cmd);
          const RunResult r = run_tool(fmt::format("{} --dir '{}' 2>&1", cmd, dir));
          CAPTURE(r.out);
          CHECK(r.status == 1);
          CHECK(r.out.find("is not used") != std::string::npos);
        }
      CHECK(fs::exists(store.entry_path("forged")));
#endif
      REQUIRE(::chown(dir.c_str(), ::geteuid(), ::getegid()) == 0);
    }
    REQUIRE(::chmod(dir.c_str(), 0700) == 0);
    CHECK(jit::DiskStore(options_for(dir)).load("forged").has_value());  // trusted again
  }

  TEST_CASE("disk cache trust: an entry another user can write, or owns, is not read") {
    TempDir tmp;
    jit::DiskStore store(options_for(tmp.str()));
    store.store(fake_kernel("k", 2000));
    const std::string path = store.entry_path("k");

    REQUIRE(::chmod(path.c_str(), 0666) == 0);
    jit::EntryInfo info = jit::DiskStore::read_entry(path, nullptr, nullptr);
    CHECK(info.status == jit::EntryStatus::untrusted);
    CHECK(info.detail == "writable by others (mode 0666)");
    {
      StderrCapture cap(tmp / "stderr.txt");
      CHECK_FALSE(store.load("k").has_value());
      CHECK(count_lines_with(cap.finish(), "untrusted") == 1);
    }
    REQUIRE(::chmod(path.c_str(), 0644) == 0);
    CHECK(store.load("k").has_value());

    if (::geteuid() == 0) {
      REQUIRE(::chown(path.c_str(), kOtherUid, kOtherUid) == 0);
      info = jit::DiskStore::read_entry(path, nullptr, nullptr);
      CHECK_FALSE(store.load("k").has_value());
    } else {
      info = jit::DiskStore::read_entry(path, nullptr, nullptr, true, ::geteuid() + 1);
    }
    CHECK(info.status == jit::EntryStatus::untrusted);
    CHECK(info.detail.find("owned by uid") != std::string::npos);
  }

  TEST_CASE("disk cache: a header claiming a huge payload is refused before reading (a sparse file matches it)") {
    TempDir tmp;
    const std::string key = "sparse";
    const std::string meta = R"({"lowered_name": "x", "is_ptx": false})";
    const std::uint64_t claimed = 1ull << 30;
    std::string file = pjtest::craft_entry(key, meta, "");
    for (int i = 0; i < 8; ++i) file[24 + std::size_t(i)] = char((claimed >> (8 * i)) & 0xFF);
    const std::string path = tmp / jit::entry_file_name(key);
    write_file(path, file);
    fs::resize_file(path, file.size() + claimed);  // sparse: the size the header claims
    const auto t0 = std::chrono::steady_clock::now();
    const jit::EntryInfo info = jit::DiskStore::read_entry(path, &key, nullptr);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(info.status == jit::EntryStatus::bad_header);
    CHECK(s < 0.5);
  }

  TEST_CASE("disk cache: planted lock files (dated in the future, empty, unparsable, of another boot) are broken") {
    TempDir tmp;
    jit::DiskStoreOptions o = options_for(tmp.str());
    o.lock_timeout = std::chrono::milliseconds(3000);
    jit::DiskStore store(o);
    const std::string lock = lock_path(tmp.str(), "key");
    struct Case {
      const char* name;
      std::string text;
      std::int64_t mtime;  // seconds from now
    };
    // pid 1 is alive: without the other signs these would be live claims.
    for (const Case& c : {Case{"dated a day ahead", fmt::format("1 {} {}\n", this_host(), this_boot()), 86400},
                          Case{"empty, dated a day ahead", "", 86400}, Case{"empty, 10 s old", "", -10},
                          Case{"unparsable, 10 s old", "garbage", -10},
                          Case{"of an earlier boot", fmt::format("1 {} not-this-boot\n", this_host()), 0}}) {
      CAPTURE(c.name);
      write_file(lock, c.text);
      set_mtime(lock, c.mtime);
      const auto t0 = std::chrono::steady_clock::now();
      auto claim = store.claim("key");
      CHECK(claim != nullptr);
      CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
    }
    // A claim being written right now, and one of a live process on another host, are waited for.
    o.lock_timeout = std::chrono::milliseconds(300);
    jit::DiskStore impatient(o);
    for (const std::string& text : {std::string(), std::string("1 some-other-host some-boot\n")}) {
      CAPTURE(text);
      write_file(lock, text);
      CHECK(impatient.claim("key") == nullptr);
    }
  }

  TEST_CASE("disk cache: JSON nested too deep is refused, not a crash (entry metadata, case files)") {
    const std::string deep = deep_json(100000);
    TempDir tmp;
    const std::string path = tmp / "entry.pjk";
    write_file(path, pjtest::craft_entry("k", "{\"x\": " + deep + "}", "payload"));
    const jit::EntryInfo info = jit::DiskStore::read_entry(path, nullptr, nullptr);
    CHECK(info.status == jit::EntryStatus::bad_metadata);
    CHECK(info.detail.find("nested more than") != std::string::npos);

    try {
      pjbench::parse_cases_json("{\"cases\": [" + deep + "]}", "deep.json");
      FAIL("parsed");
    } catch (const std::exception& e) {
      CHECK(std::string(e.what()).find("nested more than") != std::string::npos);
    }
    CHECK(json_nesting_depth("{\"a\": \"[[[[\", \"b\": [[1]]}") == 3);  // strings do not count
    CHECK(json_nesting_depth(deep, 40) == 41);                          // stops past the limit
  }

  TEST_CASE("PAGEDJIT_KERNEL_DIR: a missing path, a file or a directory without kernel sources is refused") {
    TempDir tmp;
    write_file(tmp / "a-file", "x");
    fs::create_directory(tmp / "empty");
    fs::create_directory(tmp / "unreadable");
    const jit::SourceSet embedded = jit::SourceSet::embedded();
    fs::create_directory(tmp.path / "unreadable" / embedded.main_name);  // a directory by the main file's name
    for (const std::string& dir : {tmp / "missing", tmp / "a-file", tmp / "empty", tmp / "unreadable"}) {
      CAPTURE(dir);
      try {
        jit::SourceSet::from_directory(dir);
        FAIL("the embedded sources were used silently");
      } catch (const Error& e) {
        CHECK(std::string(e.what()).find(dir) != std::string::npos);
        CHECK(std::string(e.what()).find("PAGEDJIT_KERNEL_DIR") != std::string::npos);
      }
    }
    fs::create_directory(tmp / "one");
    write_file(tmp.path / "one" / embedded.main_name, embedded.main_text + "\n// edited\n");
    const jit::SourceSet one = jit::SourceSet::from_directory(tmp / "one");
    CHECK(one.main_text == embedded.main_text + "\n// edited\n");
    CHECK(one.hash.rfind("override-", 0) == 0);
  }

  TEST_CASE("precompile() compiles what an engine with default options launches: the GPU's tuned profile") {
    // A shape the shipped H100 profile plans differently from the heuristic.
    const DeviceInfo h100 = DeviceInfo::h100_sxm();
    const ProblemShape s = pjtest::test_shape(4, 32, 8, 32768, 128, DType::bf16);
    const attention::PlanCache engine_plans(h100, tuning::ProfileRegistry::global().for_device(h100, false), true);
    const attention::Plan tuned = engine_plans.make(s, {});
    REQUIRE_FALSE(tuned.info.profile.empty());
    REQUIRE(tuned.decode.readable() != attention::make_plan(s, {}, h100).decode.readable());
    const LaunchInfo info = precompile(s, {}, h100);
    CHECK(info.decode_kernel == tuned.info.decode_kernel);
    CHECK(info.profile == tuned.info.profile);
  }

#ifdef PAGEDJIT_CACHE_TOOL
  TEST_CASE("pagedjit-cache warm: plans with the GPU's tuned profile (--no-profile: the heuristic), --gpu all") {
    const DeviceInfo h100 = DeviceInfo::h100_sxm();
    const ProblemShape s = pjtest::test_shape(4, 32, 8, 32768, 128, DType::bf16);
    const attention::Plan tuned =
        attention::PlanCache(h100, tuning::ProfileRegistry::global().for_device(h100, false), true).make(s, {});
    const attention::Plan heuristic = attention::make_plan(s, {}, h100);
    REQUIRE(tuned.decode.readable() != heuristic.decode.readable());
    TempDir tmp;
    const std::string shapes = write_shapes(tmp, "shapes.json",
                                            json::array({{{"dtype", "bf16"},
                                                          {"head_dim", 128},
                                                          {"num_heads", 32},
                                                          {"num_kv_heads", 8},
                                                          {"batch", 4},
                                                          {"max_context_len", 32768}}}));
    // The global cache's directory: the kernels precompile() built are found there.
    const std::string dir = jit::cache_location_from_env().dir;
    for (const bool profile : {true, false}) {
      CAPTURE(profile);
      const RunResult r = run_tool(fmt::format("warm --json --jobs 1 --dir '{}' --shapes '{}' --gpu h100{}", dir,
                                               shapes, profile ? "" : " --no-profile"));
      CAPTURE(r.out);
      REQUIRE(r.status == 0);
      const json j = json::parse(r.out);
      REQUIRE(j["results"].size() == 1);
      CHECK(j["results"][0]["kernel"] == (profile ? tuned : heuristic).decode.readable());
    }
    const RunResult all = run_tool(fmt::format("warm --json --jobs 1 --dir '{}' --shapes '{}' --gpu all", dir, shapes));
    CAPTURE(all.out);
    CHECK(json::parse(all.out)["gpu"].get<std::string>().find(", ") != std::string::npos);
  }

  TEST_CASE("pagedjit-cache warm: fails when the size cap evicts kernels it warmed") {
    TempDir tmp;
    const std::string dir = tmp / "cache";
    const std::string shapes =
        write_shapes(tmp, "shapes.json",
                     json::array({{{"dtype", "bf16"}, {"head_dim", 64}}, {{"dtype", "fp16"}, {"head_dim", 64}}}));
    const json j = tool_json(fmt::format("warm --json --jobs 1 --dir '{}' --shapes '{}'", dir, shapes), 1,
                             "PAGEDJIT_CACHE_MAX_BYTES=1");
    CHECK(j["kernels"] == 2);
    CHECK(j["failed"] == 0);
    CHECK(j["missing"] == 1);
    CHECK(j["missing_reason"].get<std::string>().find("PAGEDJIT_CACHE_MAX_BYTES") != std::string::npos);
    CHECK(files_in(dir).size() == 1);
    // With room, the same run succeeds.
    CHECK(run_tool(fmt::format("warm --jobs 1 --dir '{}' --shapes '{}' >/dev/null", dir, shapes)).status == 0);
  }

  TEST_CASE("pagedjit-cache: clear counts what it removed; a file for a directory is an error; deep shapes") {
    TempDir tmp;
    const std::string dir = tmp / "cache";
    jit::DiskStore store(options_for(dir));
    store.store(fake_kernel("k1", 2000));
    fs::create_directories(store.entry_path("k2") + "/inside");  // cannot be removed, by root either
    const json cleared = tool_json(fmt::format("clear --json --dir '{}'", dir), 1);
    CHECK(cleared["entries_removed"] == 1);
    CHECK(cleared["failed"] == 1);

    write_file(tmp / "a-file", "not a directory");
    for (const char* cmd : {"list", "stats", "verify", "clear", "warm"}) {
      CAPTURE(cmd);
      const RunResult f = run_tool(fmt::format("{} --dir '{}' 2>&1", cmd, tmp / "a-file"));
      CAPTURE(f.out);
      CHECK(f.status == 1);
      CHECK(f.out.find("is not a directory") != std::string::npos);
    }

    write_file(tmp / "deep.json", deep_json(100000));
    const RunResult deep = run_tool(fmt::format("warm --dir '{}' --shapes '{}' 2>&1", dir, tmp / "deep.json"));
    CAPTURE(deep.out);
    CHECK(deep.status == 2);
    CHECK(deep.out.find("nested more than") != std::string::npos);
  }
#endif
}
