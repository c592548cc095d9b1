#include "jit/disk_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <pwd.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <thread>

#include "jit/hash.hpp"
#include "json_depth.hpp"
#include "log.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/version.hpp"

namespace pagedjit::jit {
namespace {

constexpr char kMagic[8] = {'P', 'J', 'K', 'C', 'A', 'C', 'H', 'E'};
// Far above what store() writes (a kernel's CUBIN or PTX is well under a
// megabyte; the stored log is capped): a header claiming more is refused
// before anything is read (a sparse file can match any length it claims).
constexpr std::uint32_t kMaxKeyBytes = 1u << 16;
constexpr std::uint32_t kMaxMetaBytes = 1u << 20;
constexpr std::uint64_t kMaxPayloadBytes = 64ull << 20;
constexpr std::size_t kMaxStoredLogBytes = 64 * 1024;
// Temporary files older than this were left by a killed writer.
constexpr std::int64_t kStaleTempSeconds = 3600;
// Rescan the directory after this many writes of this process, so the cap
// also sees what other processes wrote.
constexpr int kWritesPerScan = 16;
// A claim writes its line right after creating the lock file: an empty or
// unreadable lock older than this was not made by a live claim.
constexpr std::int64_t kLockWriteSeconds = 5;
// Clocks of hosts sharing a directory may differ by this much; a lock dated
// further in the future was not written by any claim.
constexpr std::int64_t kClockSkewSeconds = 60;
// open() flags for files of the cache a process reads: a symbolic link is
// not followed and a FIFO does not block (fstat then refuses both).
constexpr int kReadFlags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;

// ---- CRC-32, slicing by 8 ----
struct CrcTables {
  std::uint32_t t[8][256];
  CrcTables() {
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (std::uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
  }
};
const CrcTables& crc_tables() {
  static const CrcTables tables;
  return tables;
}

// ---- little-endian fields ----
void put_u32(char* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = char((v >> (8 * i)) & 0xFF);
}
void put_u64(char* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = char((v >> (8 * i)) & 0xFF);
}
std::uint32_t get_u32(const char* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= std::uint32_t(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}
std::uint64_t get_u64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= std::uint64_t(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

bool ends_with(const std::string& s, const char* suffix) {
  const std::size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

bool is_off(const char* v) {
  if (!v) return false;
  std::string s(v);
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s == "off" || s == "0" || s == "false" || s == "no";
}

std::string errno_text(int err) {
  return std::strerror(err);
}

// True when writing a file of `bytes` bytes would end this process: past its
// file size limit (RLIMIT_FSIZE, `ulimit -f`) the kernel sends SIGXFSZ,
// whose default action kills it (core dump). Ignored or handled, the write
// fails with EFBIG instead, which store() treats like a full disk.
bool write_would_kill(std::uint64_t bytes) {
  struct rlimit lim {};
  if (::getrlimit(RLIMIT_FSIZE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY || bytes <= std::uint64_t(lim.rlim_cur))
    return false;
  struct sigaction sa {};
  return ::sigaction(SIGXFSZ, nullptr, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_DFL;
}

// Reads exactly `size` bytes at `offset`; false on error or end of file.
bool pread_all(int fd, char* out, std::size_t size, std::uint64_t offset) {
  while (size > 0) {
    const ssize_t n = ::pread(fd, out, size, off_t(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    out += n;
    size -= std::size_t(n);
    offset += std::uint64_t(n);
  }
  return true;
}

bool write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    data += n;
    size -= std::size_t(n);
  }
  return true;
}

// mkdir -p, each directory it creates 0700.
bool make_dirs(const std::string& dir, int& err) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return true;
    err = ENOTDIR;
    return false;
  }
  const auto slash = dir.find_last_of('/');
  if (slash != std::string::npos && slash > 0 && !make_dirs(dir.substr(0, slash), err)) return false;
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    err = errno;
    return false;
  }
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    err = ENOTDIR;
    return false;
  }
  return true;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

std::int64_t now_seconds() {
  return std::int64_t(std::time(nullptr));
}

// This boot of this machine: a pid recorded before a reboot names nothing.
const std::string& boot_id() {
  static const std::string id = [] {
    std::string text = "-";
    if (FILE* f = std::fopen("/proc/sys/kernel/random/boot_id", "re")) {
      char buf[64] = {};
      if (std::fgets(buf, sizeof buf, f)) text = buf;
      std::fclose(f);
    }
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    return text.empty() ? std::string("-") : text;
  }();
  return id;
}

// Why the directory `dir` is not used, and how to fix it.
std::string untrusted_dir_message(const std::string& dir, const std::string& why) {
  if (why == "not a directory") return fmt::format("the kernel cache directory {} is not a directory", dir);
  return fmt::format(
      "the kernel cache directory {} is not used: it is {}, so another user could make this process run their "
      "code (make it yours and `chmod go-w` it, or set PAGEDJIT_CACHE_DIR)",
      dir, why);
}

const char* file_kind(mode_t mode) {
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "not a regular file";
}

// A held lock file; removed on release unless someone broke it meanwhile.
struct LockToken {
  std::string path;
  dev_t dev = 0;
  ino_t ino = 0;
  ~LockToken() {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && st.st_dev == dev && st.st_ino == ino) ::unlink(path.c_str());
  }
};

// What a claim writes into its lock file.
std::string lock_line() {
  return fmt::format("{} {} {}\n", ::getpid(), host_name(), boot_id());
}

// True when the lock file at `path` cannot be a live claim's: older than
// `stale_age`, dated in the future, not a regular file, without a readable
// owner line once it had the time to get one, or left by a process of this
// host that is gone (or was of an earlier boot). The mtime alone is never
// trusted to keep a lock: anyone can set it.
bool lock_is_stale(const std::string& path, std::chrono::seconds stale_age) {
  const int fd = ::open(path.c_str(), kReadFlags);
  if (fd < 0) return errno == ELOOP;  // a symbolic link is nobody's claim; gone: just retry
  char buf[512] = {};
  struct stat st {};
  const bool is_file = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  const ssize_t n = is_file ? ::read(fd, buf, sizeof buf - 1) : 0;
  ::close(fd);
  if (!is_file) return true;
  const std::int64_t age = now_seconds() - std::int64_t(st.st_mtime);
  if (age > stale_age.count() || age < -kClockSkewSeconds) return true;
  long pid = 0;
  char host[256] = {}, boot[64] = {};
  const int fields = n > 0 ? std::sscanf(buf, "%ld %255s %63s", &pid, host, boot) : 0;
  if (fields < 2 || pid <= 0) return age > kLockWriteSeconds;  // being written right now, or never will be
  if (host_name() != host) return false;                       // can't tell: wait for the age
  if (fields == 3 && boot_id() != boot) return true;
  return ::kill(pid_t(pid), 0) != 0 && errno == ESRCH;
}

// An integer field of an entry's metadata (`fallback` when absent). A float
// outside T's range is malformed metadata: converting it would be undefined.
template <class T>
T meta_integer(const nlohmann::json& meta, const char* name, T fallback) {
  const auto it = meta.find(name);
  if (it == meta.end()) return fallback;
  if (it->is_number_float()) {
    const double d = it->template get<double>();
    if (!(d >= double(std::numeric_limits<T>::min()) && d < double(std::numeric_limits<T>::max())))
      throw std::range_error(fmt::format("{} = {} is out of range", name, d));
  }
  return it->template get<T>();
}

}  // namespace

// ---------------------------------------------------------------- helpers

std::uint32_t crc32(const void* data, std::size_t size, std::uint32_t crc) {
  const auto& t = crc_tables().t;
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  while (size >= 8) {
    const std::uint32_t a =
        crc ^ (std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24);
    crc = t[7][a & 0xFF] ^ t[6][(a >> 8) & 0xFF] ^ t[5][(a >> 16) & 0xFF] ^ t[4][a >> 24] ^ t[3][p[4]] ^ t[2][p[5]] ^
          t[1][p[6]] ^ t[0][p[7]];
    p += 8;
    size -= 8;
  }
  while (size--) crc = t[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

std::string entry_file_name(const std::string& key) {
  return fmt::format("{:016x}{}", fnv1a64(key), kEntrySuffix);
}

CacheLocation cache_location_from_env() {
  CacheLocation loc;
  if (is_off(std::getenv("PAGEDJIT_CACHE"))) {
    loc.reason = "PAGEDJIT_CACHE=off";
    return loc;
  }
  if (const char* dir = std::getenv("PAGEDJIT_CACHE_DIR")) {
    if (!*dir) {
      loc.reason = "PAGEDJIT_CACHE_DIR is set to the empty string";
      return loc;
    }
    loc.enabled = true;
    loc.dir = dir;
  } else if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg == '/') {
    loc.enabled = true;
    loc.dir = std::string(xdg) + "/pagedjit";
  } else {
    std::string home;
    if (const char* h = std::getenv("HOME"); h && *h) home = h;
    if (home.empty())
      if (const passwd* pw = ::getpwuid(::geteuid()); pw && pw->pw_dir) home = pw->pw_dir;
    if (home.empty()) {
      loc.reason = "no PAGEDJIT_CACHE_DIR, XDG_CACHE_HOME or home directory";
      return loc;
    }
    loc.enabled = true;
    loc.dir = home + "/.cache/pagedjit";
  }
  while (loc.dir.size() > 1 && loc.dir.back() == '/') loc.dir.pop_back();
  return loc;
}

std::optional<std::uint64_t> parse_byte_size(const std::string& text) {
  std::size_t i = 0;
  std::uint64_t v = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    const std::uint64_t d = std::uint64_t(text[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return std::nullopt;
    v = v * 10 + d;
    ++i;
  }
  if (i == 0) return std::nullopt;
  std::string suffix = text.substr(i);
  for (auto& c : suffix) c = char(std::tolower(static_cast<unsigned char>(c)));
  int shift = 0;
  if (suffix.empty() || suffix == "b")
    shift = 0;
  else if (suffix == "k" || suffix == "kb" || suffix == "kib")
    shift = 10;
  else if (suffix == "m" || suffix == "mb" || suffix == "mib")
    shift = 20;
  else if (suffix == "g" || suffix == "gb" || suffix == "gib")
    shift = 30;
  else if (suffix == "t" || suffix == "tb" || suffix == "tib")
    shift = 40;
  else
    return std::nullopt;
  if (shift && v > (UINT64_MAX >> shift)) return std::nullopt;
  return v << shift;
}

std::uint64_t cache_max_bytes_from_env() {
  const char* v = std::getenv("PAGEDJIT_CACHE_MAX_BYTES");
  if (!v || !*v) return kDefaultCacheMaxBytes;
  if (auto n = parse_byte_size(v)) return *n;
  static std::once_flag once;
  std::call_once(once, [&] {
    log_warning(fmt::format("PAGEDJIT_CACHE_MAX_BYTES='{}' is not a size (e.g. 1073741824, 512M, 2G); using 1G", v));
  });
  return kDefaultCacheMaxBytes;
}

bool jit_disabled_by_env() {
  return is_off(std::getenv("PAGEDJIT_JIT"));
}

const char* entry_status_name(EntryStatus status) {
  switch (status) {
    case EntryStatus::ok:
      return "ok";
    case EntryStatus::unreadable:
      return "unreadable";
    case EntryStatus::short_file:
      return "short_file";
    case EntryStatus::long_file:
      return "long_file";
    case EntryStatus::bad_magic:
      return "bad_magic";
    case EntryStatus::bad_version:
      return "bad_version";
    case EntryStatus::bad_header:
      return "bad_header";
    case EntryStatus::key_mismatch:
      return "key_mismatch";
    case EntryStatus::bad_checksum:
      return "bad_checksum";
    case EntryStatus::bad_metadata:
      return "bad_metadata";
    case EntryStatus::not_regular:
      return "not_regular";
    case EntryStatus::untrusted:
      return "untrusted";
  }
  return "unknown";
}

uid_t current_uid() {
  return ::geteuid();
}

std::string trust_problem(uid_t file_owner, mode_t mode, uid_t user) {
  if (file_owner != user && file_owner != 0)
    return fmt::format("owned by uid {}, not by this user (uid {}) or root", file_owner, user);
  if (mode & (S_IWGRP | S_IWOTH))
    return fmt::format("writable by {} (mode {:04o})", (mode & S_IWOTH) ? "others" : "its group", mode & 07777);
  return {};
}

bool remove_path(const std::string& path) {
  if (::unlink(path.c_str()) == 0 || errno == ENOENT) return true;
  return (errno == EISDIR || errno == EPERM) && (::rmdir(path.c_str()) == 0 || errno == ENOENT);
}

DiskStoreOptions DiskStoreOptions::from_env(std::string dir) {
  DiskStoreOptions o;
  o.dir = std::move(dir);
  o.max_bytes = cache_max_bytes_from_env();
  o.use_locks = !is_off(std::getenv("PAGEDJIT_CACHE_LOCKS"));
  return o;
}

// ---------------------------------------------------------------- DiskStore

DiskStore::DiskStore(DiskStoreOptions options) : options_(std::move(options)) {
  while (options_.dir.size() > 1 && options_.dir.back() == '/') options_.dir.pop_back();
}

std::shared_ptr<DiskStore> DiskStore::from_environment() {
  const CacheLocation loc = cache_location_from_env();
  if (!loc.enabled) return nullptr;
  return std::make_shared<DiskStore>(DiskStoreOptions::from_env(loc.dir));
}

std::string DiskStore::entry_path(const std::string& key) const {
  return options_.dir + "/" + entry_file_name(key);
}

bool DiskStore::writable() const {
  std::lock_guard<std::mutex> lock(mu_);
  return writable_;
}

std::string DiskStore::serialize(const CompiledKernel& k) {
  nlohmann::json meta = {
      {"lowered_name", k.lowered_name},
      {"readable", k.readable},
      {"compile_ms", k.compile_ms},
      {"is_ptx", k.is_ptx},
      {"created", now_seconds()},
      {"nvrtc_log_bytes", k.log.size()},
      {"nvrtc_log", k.log.size() <= kMaxStoredLogBytes ? k.log : k.log.substr(0, kMaxStoredLogBytes)},
      {"payload_bytes", k.binary.size()},
      {"pagedjit_version", kVersion},
  };
  // Invalid UTF-8 in the log is replaced rather than thrown on.
  const std::string meta_text = meta.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::string out(kDiskHeaderBytes, '\0');
  std::memcpy(out.data(), kMagic, 8);
  put_u32(out.data() + 8, kDiskFormatVersion);
  put_u32(out.data() + 12, std::uint32_t(k.key.size()));
  put_u32(out.data() + 16, std::uint32_t(meta_text.size()));
  put_u64(out.data() + 24, k.binary.size());
  std::uint32_t crc = crc32(out.data(), 32);
  crc = crc32(k.key.data(), k.key.size(), crc);
  crc = crc32(meta_text.data(), meta_text.size(), crc);
  crc = crc32(k.binary.data(), k.binary.size(), crc);
  put_u32(out.data() + 32, crc);
  out.reserve(out.size() + k.key.size() + meta_text.size() + k.binary.size());
  out += k.key;
  out += meta_text;
  out += k.binary;
  return out;
}

EntryInfo DiskStore::read_entry(const std::string& path, const std::string* expected_key, CompiledKernel* kernel,
                                bool verify, uid_t user) {
  EntryInfo info;
  info.path = path;
  const auto slash = path.find_last_of('/');
  info.file_name = slash == std::string::npos ? path : path.substr(slash + 1);
  auto fail = [&](EntryStatus s, std::string detail) {
    info.status = s;
    info.detail = std::move(detail);
    return info;
  };

  const int fd = ::open(path.c_str(), kReadFlags);
  if (fd < 0) {
    if (errno == ELOOP) return fail(EntryStatus::not_regular, file_kind(S_IFLNK));
    return fail(EntryStatus::unreadable, fmt::format("open: {}", errno_text(errno)));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(EntryStatus::unreadable, fmt::format("fstat: {}", errno_text(errno)));
  info.last_used = std::int64_t(st.st_mtime);
  if (!S_ISREG(st.st_mode)) return fail(EntryStatus::not_regular, file_kind(st.st_mode));
  info.file_bytes = std::uint64_t(st.st_size);
  if (std::string why = trust_problem(st.st_uid, st.st_mode, user); !why.empty())
    return fail(EntryStatus::untrusted, why);

  char header[kDiskHeaderBytes];
  if (info.file_bytes < kDiskHeaderBytes)
    return fail(EntryStatus::short_file, fmt::format("{} bytes, less than the header", info.file_bytes));
  if (!pread_all(fd, header, kDiskHeaderBytes, 0)) return fail(EntryStatus::unreadable, "read of the header failed");
  if (std::memcmp(header, kMagic, 8) != 0) return fail(EntryStatus::bad_magic, "not a pagedjit cache entry");
  const std::uint32_t version = get_u32(header + 8);
  if (version != kDiskFormatVersion)
    return fail(EntryStatus::bad_version, fmt::format("format version {}, expected {}", version, kDiskFormatVersion));
  const std::uint32_t key_len = get_u32(header + 12), meta_len = get_u32(header + 16);
  const std::uint64_t payload_len = get_u64(header + 24);
  const std::uint32_t stored_crc = get_u32(header + 32);
  if (key_len > kMaxKeyBytes || meta_len > kMaxMetaBytes || payload_len > kMaxPayloadBytes)
    return fail(EntryStatus::bad_header,
                fmt::format("lengths out of range (key {}, metadata {}, payload {})", key_len, meta_len, payload_len));
  const std::uint64_t want = kDiskHeaderBytes + std::uint64_t(key_len) + meta_len + payload_len;
  if (info.file_bytes < want)
    return fail(EntryStatus::short_file, fmt::format("{} bytes, the header says {}", info.file_bytes, want));
  if (info.file_bytes > want)
    return fail(EntryStatus::long_file, fmt::format("{} bytes, the header says {}", info.file_bytes, want));

  std::string text(std::size_t(key_len) + meta_len, '\0');
  if (!pread_all(fd, text.data(), text.size(), kDiskHeaderBytes))
    return fail(EntryStatus::unreadable, "read of key and metadata failed");
  info.key = text.substr(0, key_len);
  info.payload_bytes = payload_len;
  if (expected_key && info.key != *expected_key)
    return fail(EntryStatus::key_mismatch, "the file holds another key (hash collision or a foreign file)");

  std::string payload;
  if (verify || kernel) {
    payload.resize(std::size_t(payload_len));
    if (!pread_all(fd, payload.data(), payload.size(), kDiskHeaderBytes + text.size()))
      return fail(EntryStatus::unreadable, "read of the payload failed");
    std::uint32_t crc = crc32(header, 32);
    crc = crc32(text.data(), text.size(), crc);
    crc = crc32(payload.data(), payload.size(), crc);
    if (crc != stored_crc)
      return fail(EntryStatus::bad_checksum, fmt::format("CRC-32 {:08x}, stored {:08x}", crc, stored_crc));
  }

  try {
    if (json_too_deep(std::string_view(text).substr(key_len)))
      return fail(EntryStatus::bad_metadata, fmt::format("JSON nested more than {} levels deep", kMaxJsonDepth));
    const auto meta = nlohmann::json::parse(text.begin() + key_len, text.end());
    info.lowered_name = meta.at("lowered_name").get<std::string>();
    info.readable = meta.value("readable", std::string());
    info.is_ptx = meta.at("is_ptx").get<bool>();
    info.compile_ms = meta.value("compile_ms", 0.0);
    info.created = meta_integer(meta, "created", std::int64_t(0));
    info.log_bytes = meta_integer(meta, "nvrtc_log_bytes", std::uint64_t(0));
    if (info.lowered_name.empty()) return fail(EntryStatus::bad_metadata, "empty lowered_name");
    if (kernel) {
      kernel->key = info.key;
      kernel->readable = info.readable;
      kernel->lowered_name = info.lowered_name;
      kernel->is_ptx = info.is_ptx;
      kernel->compile_ms = info.compile_ms;
      kernel->log = meta.value("nvrtc_log", std::string());
      kernel->binary = std::move(payload);
    }
  } catch (const std::exception& e) {
    return fail(EntryStatus::bad_metadata, e.what());
  }
  return info;
}

void DiskStore::warn_bad_once(const std::string& path, const EntryInfo& info, const char* consequence) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!options_.warnings || !warned_.insert(path).second) return;
  }
  log_warning(fmt::format("kernel cache entry {} is unusable ({}: {}); {}", path, entry_status_name(info.status),
                          info.detail, consequence));
}

std::optional<CompiledKernel> DiskStore::load(const std::string& key) {
  const std::string path = entry_path(key);
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return std::nullopt;  // the common miss: no file
  if (!dir_trusted()) return std::nullopt;
  CompiledKernel kernel;
  const EntryInfo info = read_entry(path, &key, &kernel, true, options_.user);
  if (info.status != EntryStatus::ok) {
    warn_bad_once(path, info);
    return std::nullopt;
  }
  // A hit makes the entry most recently used (fails harmlessly on a read-only cache).
  ::utimensat(AT_FDCWD, path.c_str(), nullptr, AT_SYMLINK_NOFOLLOW);
  return kernel;
}

std::string DiskStore::directory_problem() const {
  struct stat st {};
  if (::stat(options_.dir.c_str(), &st) != 0) return {};  // missing: nothing to use yet; else opendir tells
  if (!S_ISDIR(st.st_mode)) return "not a directory";
  return trust_problem(st.st_uid, st.st_mode, options_.user);
}

void DiskStore::require_usable() const {
  if (const std::string why = directory_problem(); !why.empty())
    throw CacheError(ErrorCode::cache_error, untrusted_dir_message(options_.dir, why));
}

bool DiskStore::dir_trusted() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (trust_ != Trust::unknown) return trust_ == Trust::trusted;
  }
  struct stat st {};
  if (::stat(options_.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return false;  // nothing to read (yet)
  const std::string why = trust_problem(st.st_uid, st.st_mode, options_.user);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (trust_ != Trust::unknown) return trust_ == Trust::trusted;
    trust_ = why.empty() ? Trust::trusted : Trust::refused;
    if (why.empty()) return true;
    writable_ = false;
    if (!options_.warnings) return false;
  }
  log_warning(untrusted_dir_message(options_.dir, why) + "; kernels are kept in memory only");
  return false;
}

bool DiskStore::ensure_dir() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!writable_) return false;
    if (dir_ready_) return true;
  }
  int err = 0;
  if (!make_dirs(options_.dir, err)) {
    degrade("cannot create the kernel cache directory", err);
    return false;
  }
  if (!dir_trusted()) return false;
  std::lock_guard<std::mutex> lock(mu_);
  dir_ready_ = true;
  return true;
}

void DiskStore::degrade(const std::string& what, int err) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!writable_) return;
    writable_ = false;
    if (!options_.warnings) return;
  }
  std::string why = errno_text(err);
  if (err == ENOSPC)
    why += ": the file system is full";
  else if (err == EDQUOT)
    why += ": the user's disk quota is full";
  else if (err == EFBIG)
    why += ": an entry is larger than this process's file size limit (ulimit -f)";
  log_warning(fmt::format("{} {} ({}); kernels compiled from now on are kept in memory only", what, options_.dir, why));
}

void DiskStore::store(const CompiledKernel& kernel) {
  if (kernel.binary.size() > kMaxPayloadBytes) return;  // read_entry would refuse it: keep it in memory only
  if (!ensure_dir()) return;
  static std::atomic<unsigned> counter{0};
  const std::string name = entry_file_name(kernel.key);
  const std::string path = options_.dir + "/" + name;
  const std::string tmp = fmt::format("{}/.{}.{}.{}{}", options_.dir, name, ::getpid(), counter++, kTempSuffix);
  const std::string bytes = serialize(kernel);
  if (write_would_kill(bytes.size())) {  // SIGXFSZ would end the process part way
    degrade("cannot write to the kernel cache directory", EFBIG);
    return;
  }

  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    degrade("cannot write to the kernel cache directory", errno);
    return;
  }
  // No fsync: a crash can lose or truncate an entry, and the checksum turns
  // that into a miss that gets rebuilt.
  const bool wrote = write_all(fd, bytes.data(), bytes.size());
  int err = errno;
  if (::close(fd) != 0 && wrote) {
    err = errno;
    ::unlink(tmp.c_str());
    degrade("cannot write to the kernel cache directory", err);
    return;
  }
  if (!wrote) {
    ::unlink(tmp.c_str());
    degrade("cannot write to the kernel cache directory", err);
    return;
  }
  if (!publish(tmp, path)) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    warned_.erase(path);  // a new file: warn again if it goes bad
  }
  after_write(path, bytes.size());
}

// Renames the written temporary file over the entry. A directory in the
// entry's place (rename cannot replace it) is removed when empty; one that is
// not costs this kernel its entry, with one warning, and nothing more.
bool DiskStore::publish(const std::string& tmp, const std::string& path) {
  if (::rename(tmp.c_str(), path.c_str()) == 0) return true;
  const int err = errno;
  if (err != EISDIR && err != ENOTEMPTY && err != EEXIST) {
    ::unlink(tmp.c_str());
    degrade("cannot publish an entry in the kernel cache directory", err);
    return false;
  }
  if (remove_path(path) && ::rename(tmp.c_str(), path.c_str()) == 0) return true;
  EntryInfo info;
  info.status = EntryStatus::not_regular;
  info.detail = fmt::format("a directory that cannot be removed: {}", errno_text(errno));
  ::unlink(tmp.c_str());
  warn_bad_once(path, info, "this kernel is kept in memory only");
  return false;
}

void DiskStore::after_write(const std::string& path, std::uint64_t bytes) {
  if (options_.max_bytes == 0) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    approx_bytes_ += bytes;
    if (scanned_ && approx_bytes_ <= options_.max_bytes && ++writes_since_scan_ < kWritesPerScan) return;
  }
  evict_to(options_.max_bytes, path);
}

std::uint64_t DiskStore::evict_to(std::uint64_t max_bytes, const std::string& keep) {
  // Stats of the entries only: a full read of every file is not needed here.
  struct Item {
    std::string path;
    std::uint64_t bytes;
    struct timespec mtime;
  };
  std::vector<Item> items;
  std::uint64_t total = 0;
  if (DIR* d = ::opendir(options_.dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      const std::string path = options_.dir + "/" + name;
      struct stat st {};
      if (ends_with(name, kEntrySuffix) && name[0] != '.') {
        if (::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
          items.push_back({path, std::uint64_t(st.st_size), st.st_mtim});
          total += std::uint64_t(st.st_size);
        }
      } else if (name[0] == '.' && ends_with(name, kTempSuffix)) {
        if (::lstat(path.c_str(), &st) == 0 && now_seconds() - std::int64_t(st.st_mtime) > kStaleTempSeconds)
          ::unlink(path.c_str());  // left by a killed writer
      }
    }
    ::closedir(d);
  }
  std::uint64_t removed = 0;
  if (max_bytes && total > max_bytes) {
    std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
      return a.mtime.tv_sec != b.mtime.tv_sec ? a.mtime.tv_sec < b.mtime.tv_sec : a.mtime.tv_nsec < b.mtime.tv_nsec;
    });
    for (const Item& it : items) {
      if (total <= max_bytes) break;
      if (it.path == keep) continue;
      if (::unlink(it.path.c_str()) == 0 || errno == ENOENT) {
        total -= it.bytes;
        removed += it.bytes;
      }
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  scanned_ = true;
  approx_bytes_ = total;
  writes_since_scan_ = 0;
  return removed;
}

std::shared_ptr<void> DiskStore::claim(const std::string& key) {
  if (!options_.use_locks || !ensure_dir()) return nullptr;
  const std::string path = options_.dir + "/" + fmt::format("{:016x}{}", fnv1a64(key), kLockSuffix);
  const std::string who = lock_line();
  if (write_would_kill(who.size())) return nullptr;  // no lock: compile anyway
  const auto deadline = std::chrono::steady_clock::now() + options_.lock_timeout;
  auto pause = std::chrono::milliseconds(2);
  for (;;) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) {
      const bool ok = write_all(fd, who.data(), who.size());
      auto token = std::make_shared<LockToken>();
      token->path = path;
      struct stat st {};
      if (::fstat(fd, &st) == 0) {
        token->dev = st.st_dev;
        token->ino = st.st_ino;
      }
      ::close(fd);
      if (!ok) return nullptr;  // the token's destructor removes the file
      return token;
    }
    if (errno != EEXIST) return nullptr;  // cannot lock here (read-only, ...): compile anyway
    if (lock_is_stale(path, options_.stale_lock_age)) {
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) return nullptr;  // cannot break it: compile anyway
      continue;
    }
    if (std::chrono::steady_clock::now() >= deadline) return nullptr;  // give up waiting: compile anyway
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(25));
  }
}

DiskStore::DirContents DiskStore::scan(bool read_entries, bool verify) const {
  DirContents out;
  require_usable();
  DIR* d = ::opendir(options_.dir.c_str());
  if (!d) {
    if (errno == ENOENT) return out;  // not created yet: empty
    throw CacheError(ErrorCode::cache_error,
                     fmt::format("cannot read the kernel cache directory {}: {}", options_.dir, errno_text(errno)));
  }
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const std::string path = options_.dir + "/" + name;
    if (name[0] == '.' && ends_with(name, kTempSuffix)) {
      out.temps.push_back(path);
    } else if (ends_with(name, kLockSuffix)) {
      out.locks.push_back(path);
    } else if (name[0] != '.' && ends_with(name, kEntrySuffix)) {
      EntryInfo info;
      if (read_entries) {
        info = read_entry(path, nullptr, nullptr, verify, options_.user);
        // The name must be the hash of the key it holds.
        if (info.status == EntryStatus::ok && entry_file_name(info.key) != name) {
          info.status = EntryStatus::key_mismatch;
          info.detail = fmt::format("holds a key whose entry is named {}", entry_file_name(info.key));
        }
      } else {
        info.path = path;
        info.file_name = name;
        struct stat st {};
        if (::lstat(path.c_str(), &st) == 0) {
          info.file_bytes = std::uint64_t(st.st_size);
          info.last_used = std::int64_t(st.st_mtime);
        }
      }
      out.entries.push_back(std::move(info));
    }
  }
  std::stable_sort(out.entries.begin(), out.entries.end(),
                   [](const EntryInfo& a, const EntryInfo& b) { return a.last_used > b.last_used; });
  return out;
}

}  // namespace pagedjit::jit
