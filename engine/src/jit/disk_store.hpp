// The disk cache of compiled kernels: a KernelStore keeping one self-checking
// file per entry in a directory shared by every process of the user.
//
// Entry file `<fnv1a64(key) as 16 hex digits>.pjk`, integers little-endian:
//
//   offset  0  magic "PJKCACHE"
//           8  u32 file format version (kDiskFormatVersion)
//          12  u32 key length K
//          16  u32 metadata length M
//          20  u32 reserved (0)
//          24  u64 payload length P
//          32  u32 CRC-32 of bytes [0, 32), the key, the metadata and the payload
//          36  u32 reserved (0)
//          40  key text (K bytes), metadata JSON (M bytes), payload (P bytes: CUBIN or PTX)
//
// The file must be exactly 40 + K + M + P bytes. A read that finds anything
// wrong (short file, bad magic or version, other key text, bad checksum,
// unparsable metadata) is a miss, logged once; the caller recompiles and the
// new entry replaces the file. Entries are published by writing a temporary
// file in the same directory and renaming it over the entry, so a reader never
// sees a half-written entry and losing a race to another process is harmless.
// A failed write (read-only or vanished directory, full disk or quota, a file
// size limit) removes its temporary file, warns once, and leaves the process
// serving new kernels from memory; entries already on disk are still read.
// A write past RLIMIT_FSIZE while SIGXFSZ has its default action (which would
// kill the process) is not attempted.
//
// Trust: an entry is code the process will run on its GPU, and its checksum
// only catches accidents (anyone can recompute it). So the directory is used
// only when owned by this user (or root) and not writable by group or others,
// as ssh treats ~/.ssh; otherwise one warning, and the process keeps its
// kernels in memory only. An entry is read only when it is a regular file
// (opened with O_NOFOLLOW | O_NONBLOCK: a symbolic link or a FIFO is never
// followed or waited on) owned by this user or root and not writable by group
// or others; the header's lengths are bounded before anything is read.
//
// Lock files `<hash>.lock` (O_CREAT|O_EXCL, holding "<pid> <host> <boot id>")
// only keep processes from compiling the same key at the same time: waiting
// for one times out, stale ones (old, dated in the future, unreadable, or left
// by a dead process of this host and boot) are broken, and nothing depends on
// them for correctness.
//
// The total size of the entries is capped (least recently used go first; a hit
// touches the entry's mtime, which is what "used" means).
#pragma once
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "jit/kernel_cache.hpp"

namespace pagedjit::jit {

constexpr std::uint32_t kDiskFormatVersion = 1;
constexpr std::size_t kDiskHeaderBytes = 40;
constexpr const char* kEntrySuffix = ".pjk";
constexpr const char* kLockSuffix = ".lock";
constexpr const char* kTempSuffix = ".tmp";
constexpr std::uint64_t kDefaultCacheMaxBytes = 1ull << 30;

// CRC-32 (IEEE 802.3, as zlib), continuing from `crc` (0 to start).
std::uint32_t crc32(const void* data, std::size_t size, std::uint32_t crc = 0);

// "0123456789abcdef.pjk": the file name of `key`'s entry.
std::string entry_file_name(const std::string& key);

// Where the environment puts the disk cache:
//   PAGEDJIT_CACHE=off (or 0/false/no)  -> disabled
//   PAGEDJIT_CACHE_DIR set and empty    -> disabled
//   PAGEDJIT_CACHE_DIR                  -> that directory
//   $XDG_CACHE_HOME/pagedjit, else $HOME/.cache/pagedjit
struct CacheLocation {
  bool enabled = false;
  std::string dir;     // when enabled
  std::string reason;  // why disabled
};
CacheLocation cache_location_from_env();
// PAGEDJIT_CACHE_MAX_BYTES: bytes, with an optional K/M/G/T suffix (powers
// of 1024); 0 means no cap. Default 1 GiB. A bad value warns and gives the default.
std::uint64_t cache_max_bytes_from_env();
// PAGEDJIT_JIT=off (or 0/false/no): a cache miss is an error instead of a compile.
bool jit_disabled_by_env();
// Parses "1073741824", "512M", "1G", "1GiB"; nullopt when malformed.
std::optional<std::uint64_t> parse_byte_size(const std::string& text);

enum class EntryStatus {
  ok,
  unreadable,    // open or read failed (other than a missing file)
  short_file,    // smaller than its header says (truncated)
  long_file,     // bytes after the payload
  bad_magic,     // not an entry file
  bad_version,   // another file format version
  bad_header,    // lengths out of range
  key_mismatch,  // another key's entry (hash collision) or not the expected key
  bad_checksum,  // contents changed after writing
  bad_metadata,  // the metadata JSON is malformed
  not_regular,   // a symbolic link, FIFO, directory or device: never read
  untrusted,     // owned by another user, or writable by group or others
};
const char* entry_status_name(EntryStatus status);

// The effective uid of this process: whose directory and entries are trusted.
uid_t current_uid();
// Why a file or directory with this owner and mode may not be trusted by
// `user`, or "" when it may: owned by `user` or root, and not writable by
// group or others.
std::string trust_problem(uid_t file_owner, mode_t mode, uid_t user);
// Removes `path` whatever was put there (a file, a FIFO, a symbolic link or
// an empty directory); true when nothing is left.
bool remove_path(const std::string& path);

// One entry file, as read by DiskStore::read_entry.
struct EntryInfo {
  std::string path;
  std::string file_name;
  std::uint64_t file_bytes = 0;
  std::int64_t last_used = 0;  // mtime, unix seconds
  EntryStatus status = EntryStatus::ok;
  std::string detail;  // what is wrong, when status != ok
  std::string key;
  // From the metadata (when it parsed):
  std::string readable, lowered_name;
  bool is_ptx = false;
  double compile_ms = 0;
  std::int64_t created = 0;  // unix seconds
  std::uint64_t payload_bytes = 0, log_bytes = 0;
};

struct DiskStoreOptions {
  std::string dir;
  std::uint64_t max_bytes = kDefaultCacheMaxBytes;  // 0: no cap
  bool use_locks = true;
  std::chrono::milliseconds lock_timeout{30000};  // then compile without the lock
  std::chrono::seconds stale_lock_age{600};       // a lock this old is broken
  bool warnings = true;                           // log_warning on bad entries and degradation
  uid_t user = current_uid();                     // whose directory and entries are trusted (tests inject others)

  // Defaults, with max_bytes from PAGEDJIT_CACHE_MAX_BYTES and use_locks off
  // when PAGEDJIT_CACHE_LOCKS=off.
  static DiskStoreOptions from_env(std::string dir);
};

class DiskStore final : public KernelStore {
 public:
  explicit DiskStore(DiskStoreOptions options);
  // The store the environment asks for (see cache_location_from_env), or
  // nullptr when disk caching is disabled. Does no I/O: the directory is
  // created by the first write.
  static std::shared_ptr<DiskStore> from_environment();

  // KernelStore
  std::optional<CompiledKernel> load(const std::string& key) override;
  void store(const CompiledKernel& kernel) override;
  std::shared_ptr<void> claim(const std::string& key) override;
  std::string location() const override { return options_.dir; }

  const DiskStoreOptions& options() const { return options_; }
  const std::string& dir() const { return options_.dir; }
  std::string entry_path(const std::string& key) const;
  // False once a write failed or the directory was refused: the process then
  // keeps new kernels in memory only.
  bool writable() const;
  // Why the directory may not be used (not a directory, or not trusted: see
  // trust_problem), or "" when it may or does not exist yet.
  std::string directory_problem() const;
  // Throws CacheError naming the directory_problem, if any.
  void require_usable() const;

  // Reads the entry file at `path`. With `expected_key`, other key text is
  // key_mismatch. With `kernel`, fills it (payload included) on success. With
  // `verify` false, only the header, key and metadata are read (no checksum).
  // A file `user` may not trust is `untrusted`, and nothing of it is read.
  static EntryInfo read_entry(const std::string& path, const std::string* expected_key, CompiledKernel* kernel,
                              bool verify = true, uid_t user = current_uid());
  // The serialized entry for `kernel` (what store() writes).
  static std::string serialize(const CompiledKernel& kernel);

  // Management (the pagedjit-cache tool).
  struct DirContents {
    std::vector<EntryInfo> entries;  // sorted most recently used first
    std::vector<std::string> locks, temps;
  };
  // Calls require_usable first: a tool never reports on a directory the
  // engine would ignore.
  DirContents scan(bool read_entries, bool verify) const;
  // Removes least recently used entries until the total is at most `max_bytes`
  // (never `keep`). Returns the bytes removed.
  std::uint64_t evict_to(std::uint64_t max_bytes, const std::string& keep = {});

 private:
  bool ensure_dir();
  // True when the directory exists and may be used; the first refusal warns
  // and makes the process memory-only.
  bool dir_trusted();
  bool publish(const std::string& tmp, const std::string& path);
  void degrade(const std::string& what, int err);
  void warn_bad_once(const std::string& path, const EntryInfo& info,
                     const char* consequence = "recompiling and replacing it");
  void after_write(const std::string& path, std::uint64_t bytes);

  DiskStoreOptions options_;
  mutable std::mutex mu_;
  bool dir_ready_ = false;
  bool writable_ = true;
  enum class Trust { unknown, trusted, refused } trust_ = Trust::unknown;
  std::set<std::string> warned_;
  // Size accounting for the cap: a directory scan now and then, plus what this
  // process wrote since.
  bool scanned_ = false;
  std::uint64_t approx_bytes_ = 0;
  int writes_since_scan_ = 0;
};

}  // namespace pagedjit::jit
