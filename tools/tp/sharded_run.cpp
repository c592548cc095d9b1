#include "sharded_run.hpp"

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <set>

#include "check.hpp"
#include "shard.hpp"

namespace pjtp {

const char* gather_name(Gather g) {
  switch (g) {
    case Gather::none:
      return "none";
    case Gather::nccl:
      return "nccl";
    case Gather::copies:
      return "copies";
  }
  return "?";
}

bool nccl_built() {
#ifdef PAGEDJIT_TP_NCCL
  return true;
#else
  return false;
#endif
}

std::string nccl_version() {
#ifdef PAGEDJIT_TP_NCCL
  int v = 0;
  TP_NCCL(ncclGetVersion(&v));
  // Since 2.9 the code is MAJOR * 10000 + MINOR * 100 + PATCH.
  return v >= 10000 ? fmt::format("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100)
                    : fmt::format("{}.{}.{}", v / 1000, (v % 1000) / 100, v % 100);
#else
  return "";
#endif
}

namespace {

// A device allocation, freed on destruction (by the thread of its device).
struct DeviceMemory {
  void* ptr = nullptr;
  std::size_t bytes = 0;
  DeviceMemory() = default;
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  ~DeviceMemory() {
    if (ptr) cudaFree(ptr);
  }
  void allocate(std::size_t n) {
    bytes = std::max<std::size_t>(n, 16);
    TP_CUDA(cudaMalloc(&ptr, bytes));
  }
  void upload(const void* src, std::size_t n) {
    allocate(n);
    if (n) TP_CUDA(cudaMemcpy(ptr, src, n, cudaMemcpyHostToDevice));
  }
  std::uint8_t* bytes_at(std::size_t offset) const { return static_cast<std::uint8_t*>(ptr) + offset; }
};

double elapsed_ms(cudaEvent_t from, cudaEvent_t to) {
  float ms = 0;
  TP_CUDA(cudaEventElapsedTime(&ms, from, to));
  return double(ms);
}

}  // namespace

struct ShardedRun::Shard {
  int device = 0;
  DeviceMemory q, k, v, lens, table, out;  // out: the whole output; this shard writes its slice
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, attention_done = nullptr, done = nullptr;
  std::unique_ptr<pagedjit::Engine> engine;
  pagedjit::PagedAttentionArgs args;

  ~Shard() {
    engine.reset();  // synchronizes its context, frees its workspaces
    for (cudaEvent_t e : {start, attention_done, done})
      if (e) cudaEventDestroy(e);
    if (stream) cudaStreamDestroy(stream);
  }
};

#ifdef PAGEDJIT_TP_NCCL
struct ShardedRun::Comms {
  std::vector<ncclComm_t> comms;
  ~Comms() {
    for (ncclComm_t c : comms)
      if (c) ncclCommDestroy(c);
  }
};
#else
struct ShardedRun::Comms {};
#endif

ShardedRun::ShardedRun(const pagedjit::testing::HostProblem& host, std::vector<int> devices, Gather gather)
    : devices_(std::move(devices)), gather_(gather) {
  const auto& cfg = host.config();
  const int N = shards();
  check_shardable(cfg, N);
  const bool distinct = std::set<int>(devices_.begin(), devices_.end()).size() == devices_.size();
  if (gather_ == Gather::nccl && !nccl_built())
    throw ToolError("ShardedRun: NCCL gather requested, but pagedjit-tp was built without NCCL");
  if (gather_ == Gather::nccl && !distinct)
    throw ToolError("ShardedRun: NCCL needs one device per rank; use the copies gather for shards sharing a device");
  out_bytes_ = output_bytes(cfg);
  slice_bytes_ = slice_bytes(cfg, N);

  pool_ = std::make_unique<DevicePool>(devices_);
  shards_.resize(std::size_t(N));
  // Each thread slices and uploads its shard, makes its stream and events, and
  // binds its engine (its device's primary context is current on the thread).
  pool_->run([&](int s) {
    auto sh = std::make_unique<Shard>();
    sh->device = devices_[std::size_t(s)];
    {
      const ShardData data = slice_shard(host, N, s);
      sh->q.upload(data.q.data(), data.q.size());
      sh->k.upload(data.k.data(), data.k.size());
      sh->v.upload(data.v.data(), data.v.size());
    }
    sh->lens.upload(host.lens.data(), host.lens.size() * 4);
    sh->table.upload(host.table.data(), host.table.size() * 4);
    sh->out.allocate(out_bytes_);
    TP_CUDA(cudaStreamCreateWithFlags(&sh->stream, cudaStreamNonBlocking));
    TP_CUDA(cudaEventCreate(&sh->start));
    TP_CUDA(cudaEventCreate(&sh->attention_done));
    TP_CUDA(cudaEventCreate(&sh->done));
    sh->engine = std::make_unique<pagedjit::Engine>(sh->device);
    sh->args = shard_args(cfg, host.num_blocks(), N, s, sh->q.ptr, sh->k.ptr, sh->v.ptr, sh->lens.ptr, sh->table.ptr,
                          sh->out.ptr);
    // cudaMemcpy from pageable memory may return before its DMA is done, and
    // the shard's non-blocking stream does not wait for the legacy stream.
    TP_CUDA(cudaDeviceSynchronize());
    shards_[std::size_t(s)] = std::move(sh);
  });

  if (gather_ == Gather::copies && distinct) {
    // Peer access between shard 0's device and each other one, both ways, where the hardware allows it.
    peer_access_ = true;
    auto enable = [](int from, int to) {
      int can = 0;
      TP_CUDA(cudaDeviceCanAccessPeer(&can, from, to));
      if (!can) return false;
      TP_CUDA(cudaSetDevice(from));
      const cudaError_t r = cudaDeviceEnablePeerAccess(to, 0);
      if (r == cudaErrorPeerAccessAlreadyEnabled)
        (void)cudaGetLastError();  // clears it
      else
        TP_CUDA(r);
      return true;
    };
    for (int s = 1; s < N; ++s) {
      const bool a = enable(devices_[0], devices_[std::size_t(s)]);
      const bool b = enable(devices_[std::size_t(s)], devices_[0]);
      peer_access_ = peer_access_ && a && b;
    }
  }
#ifdef PAGEDJIT_TP_NCCL
  if (gather_ == Gather::nccl) {
    comms_ = std::make_unique<Comms>();
    comms_->comms.assign(std::size_t(N), nullptr);
    TP_NCCL(ncclCommInitAll(comms_->comms.data(), N, devices_.data()));
  }
#endif
}

ShardedRun::~ShardedRun() {
  comms_.reset();
  if (pool_) {
    try {
      pool_->run([this](int s) { shards_[std::size_t(s)].reset(); });  // each freed by its device's thread
    } catch (...) {
    }
  }
  shards_.clear();
}

StepTimes ShardedRun::step(const pagedjit::PagedAttentionOptions& options) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  Shard& root = *shards_[0];
  pool_->run([&](int s) {
    Shard& sh = *shards_[std::size_t(s)];
    TP_CUDA(cudaEventRecord(sh.start, sh.stream));
    sh.engine->paged_attention(sh.args, options, sh.stream);
    TP_CUDA(cudaEventRecord(sh.attention_done, sh.stream));
    if (gather_ == Gather::copies && s > 0) {
      const std::size_t off = std::size_t(s) * slice_bytes_;
      TP_CUDA(cudaMemcpyPeerAsync(root.out.bytes_at(off), root.device, sh.out.bytes_at(off), sh.device, slice_bytes_,
                                  sh.stream));
    }
    if (gather_ == Gather::none || (gather_ == Gather::copies && s > 0)) TP_CUDA(cudaEventRecord(sh.done, sh.stream));
  });
  // The gather, issued once every shard's attention is enqueued.
  if (gather_ == Gather::nccl) {
#ifdef PAGEDJIT_TP_NCCL
    TP_NCCL(ncclGroupStart());
    for (int s = 0; s < shards(); ++s) {
      Shard& sh = *shards_[std::size_t(s)];
      TP_NCCL(ncclAllGather(sh.out.bytes_at(std::size_t(s) * slice_bytes_), sh.out.ptr, slice_bytes_, ncclUint8,
                            comms_->comms[std::size_t(s)], sh.stream));
    }
    TP_NCCL(ncclGroupEnd());
    for (auto& sh : shards_) {
      TP_CUDA(cudaSetDevice(sh->device));
      TP_CUDA(cudaEventRecord(sh->done, sh->stream));
    }
#endif
  } else if (gather_ == Gather::copies) {
    TP_CUDA(cudaSetDevice(root.device));
    for (int s = 1; s < shards(); ++s) TP_CUDA(cudaStreamWaitEvent(root.stream, shards_[std::size_t(s)]->done, 0));
    TP_CUDA(cudaEventRecord(root.done, root.stream));
  }
  for (auto& sh : shards_) TP_CUDA(cudaStreamSynchronize(sh->stream));
  StepTimes t;
  t.host_ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
  for (auto& sh : shards_) {
    t.event_ms = std::max(t.event_ms, elapsed_ms(sh->start, sh->done));
    t.attention_ms = std::max(t.attention_ms, elapsed_ms(sh->start, sh->attention_done));
  }
  return t;
}

void ShardedRun::poison() {
  pool_->run([this](int s) {
    Shard& sh = *shards_[std::size_t(s)];
    TP_CUDA(cudaMemsetAsync(sh.out.ptr, 0xff, out_bytes_, sh.stream));  // NaN in every float format
    TP_CUDA(cudaStreamSynchronize(sh.stream));
  });
}

std::vector<std::uint8_t> ShardedRun::gathered(int shard) const {
  std::vector<std::uint8_t> out(out_bytes_);
  pool_->run([&](int s) {
    if (s == shard)
      TP_CUDA(cudaMemcpy(out.data(), shards_[std::size_t(s)]->out.ptr, out_bytes_, cudaMemcpyDeviceToHost));
  });
  return out;
}

std::vector<int> ShardedRun::holders() const {
  std::vector<int> h{0};
  if (gather_ == Gather::nccl)
    for (int s = 1; s < shards(); ++s) h.push_back(s);
  return h;
}

pagedjit::LaunchInfo ShardedRun::plan(const pagedjit::PagedAttentionOptions& options) const {
  return shards_[0]->engine->plan(shards_[0]->args, options);
}

}  // namespace pjtp
