// The call, top to bottom: validate -> plan -> kernel specs -> compile or fetch
// -> launch.
#include "pagedjit/engine.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "attention/launch.hpp"
#include "attention/merge.hpp"
#include "attention/plan_cache.hpp"
#include "attention/validate.hpp"
#include "context_scope.hpp"
#include "jit/kernel_cache.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/errors.hpp"
#include "precompile.hpp"
#include "stream_workspaces.hpp"
#include "tuning/registry.hpp"

namespace pagedjit {
namespace {

DeviceInfo query_device(const DriverApi& d, CUdevice dev, int ordinal) {
  DeviceInfo info;
  info.ordinal = ordinal;
  char name[256] = {};
  check(d.cuDeviceGetName(name, sizeof(name), dev), "cuDeviceGetName");
  info.name = name;
  auto attr = [&](CUdevice_attribute a) {
    int v = 0;
    check(d.cuDeviceGetAttribute(&v, a, dev), "cuDeviceGetAttribute");
    return v;
  };
  info.cc_major = attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
  info.cc_minor = attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
  info.sm_count = attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
  info.max_smem_per_block = attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
  info.max_smem_per_sm = attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR);
  info.regs_per_sm = attr(CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR);
  info.l2_bytes = attr(CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE);
  size_t mem = 0;
  check(d.cuDeviceTotalMem(&mem, dev), "cuDeviceTotalMem");
  info.total_memory = static_cast<long long>(mem);
  return info;
}

// A compiled kernel loaded into this engine's context.
struct LoadedKernel {
  CUlibrary library = nullptr;
  CUkernel kernel = nullptr;
  CUfunction function = nullptr;
  int smem_limit = 0;  // dynamic shared memory the kernel is currently allowed
  // CTAs of it an SM holds at `occupancy_smem` bytes of dynamic shared memory
  // (the driver's count, from its real registers): 0 until asked.
  int ctas_per_sm = 0, occupancy_smem = -1;
};

// A kernel ready to launch.
struct Launchable {
  CUfunction function = nullptr;
  int ctas_per_sm = 0;  // its occupancy at the requested shared memory
};

}  // namespace

struct Engine::Impl {
  const DriverApi& drv;
  EngineOptions options;
  DeviceInfo info;
  CUdevice dev = 0;
  CUcontext ctx = nullptr;
  std::mutex mu;
  std::map<jit::KernelSpec, LoadedKernel> kernels;
  StreamWorkspaces workspaces{drv};
  // Plans from the tuned profiles of this GPU (none: the heuristic), remembered per call shape.
  std::optional<attention::PlanCache> plans;
  bool programmatic = false;  // decode launches allow programmatic dependent launch

  Impl(int ordinal, EngineOptions opts) : drv(driver()), options(opts) {
    int count = 0;
    check(drv.cuDeviceGetCount(&count), "cuDeviceGetCount");
    if (ordinal < 0 || ordinal >= count)
      throw DriverError(ErrorCode::no_device, 0, "cuDeviceGet",
                        fmt::format("no CUDA device {} (this machine has {})", ordinal, count));
    check(drv.cuDeviceGet(&dev, ordinal), "cuDeviceGet");
    info = query_device(drv, dev, ordinal);
    check(drv.cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");
    // Like the runtime API: a thread with no current context gets this
    // device's primary context, so the caller's own allocations just work.
    CUcontext cur = nullptr;
    check(drv.cuCtxGetCurrent(&cur), "cuCtxGetCurrent");
    if (!cur) check(drv.cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
    plans.emplace(info,
                  options.use_profiles ? tuning::ProfileRegistry::global().for_device(info) : tuning::DeviceProfiles(),
                  options.cluster_merge, options.device_schedule);
    programmatic = options.programmatic_launch && info.cc_major >= 9;
  }

  ~Impl() {
    std::vector<CUlibrary> libraries;
    try {
      for (auto& [spec, k] : kernels)
        if (k.library) libraries.push_back(k.library);
    } catch (...) {  // no memory: the libraries stay loaded, nothing escapes the destructor
    }
    release_engine(drv, ctx, workspaces, libraries);
    drv.cuDevicePrimaryCtxRelease(dev);
  }

  // The loaded kernel for `spec`, allowed `smem` bytes of dynamic shared
  // memory. Compiles outside the lock, so calls needing different kernels
  // compile in parallel (the process-wide cache compiles each key once).
  Launchable kernel(const jit::KernelSpec& spec, int smem, int threads) {
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = kernels.find(spec);
      if (it != kernels.end() && (smem <= 48 * 1024 || smem <= it->second.smem_limit) &&
          it->second.occupancy_smem == smem)
        return {it->second.function, it->second.ctas_per_sm};
    }
    auto compiled = jit::KernelCache::global().get(spec);
    std::lock_guard<std::mutex> lock(mu);
    auto it = kernels.find(spec);
    if (it == kernels.end()) {
      LoadedKernel k;
      check(drv.cuLibraryLoadData(&k.library, compiled->binary.data(), nullptr, nullptr, 0, nullptr, nullptr, 0),
            "cuLibraryLoadData");
      check(drv.cuLibraryGetKernel(&k.kernel, k.library, compiled->lowered_name.c_str()), "cuLibraryGetKernel");
      check(drv.cuKernelGetFunction(&k.function, k.kernel), "cuKernelGetFunction");
      it = kernels.emplace(spec, k).first;
    }
    LoadedKernel& k = it->second;
    if (smem > 48 * 1024 && smem > k.smem_limit) {
      check(drv.cuKernelSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem, k.kernel, dev),
            "cuKernelSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)");
      k.smem_limit = smem;
    }
    if (k.occupancy_smem != smem) {
      check(drv.cuOccupancyMaxActiveBlocksPerMultiprocessor(&k.ctas_per_sm, k.function, threads, size_t(smem)),
            "cuOccupancyMaxActiveBlocksPerMultiprocessor");
      k.occupancy_smem = smem;
    }
    return {k.function, k.ctas_per_sm};
  }

  // Scratch for split partials: the caller's buffer (counters first), else
  // buffers kept per stream so concurrent streams never share them (the
  // engine does not allocate while the stream is being captured: the graph
  // would own an allocation the engine reuses).
  WorkspaceLease workspace(const PagedAttentionArgs& args, CUstream stream, const attention::Plan& plan) {
    const std::int64_t bytes = plan.info.workspace_bytes;
    if (args.workspace) {
      if (args.workspace_bytes < bytes)
        throw InvalidArgument("workspace_bytes", fmt::format(">= {} (Engine::workspace_bytes)", bytes),
                              std::to_string(args.workspace_bytes));
      const auto base = reinterpret_cast<CUdeviceptr>(args.workspace);
      return {{base, base}, nullptr};
    }
    return workspaces.acquire(stream, bytes, plan.counters_bytes);
  }

  void check_device_data(const PagedAttentionArgs& args, const ProblemShape& s, CUstream stream);
};

void Engine::Impl::check_device_data(const PagedAttentionArgs& a, const ProblemShape& s, CUstream stream) {
  check(drv.cuStreamSynchronize(stream), "cuStreamSynchronize");
  std::vector<int> lens(size_t(s.num_seqs));
  check(drv.cuMemcpyDtoH(lens.data(), reinterpret_cast<CUdeviceptr>(a.context_lens.data), lens.size() * 4),
        "cuMemcpyDtoH(context_lens)");
  std::vector<int> row(size_t(s.max_blocks));
  const std::int64_t capacity = std::int64_t(s.max_blocks) * s.page_size;
  for (int i = 0; i < s.num_seqs; ++i) {
    if (lens[size_t(i)] < 0)
      throw DeviceDataError(i, fmt::format("context_lens[{}] = {} is negative", i, lens[size_t(i)]));
    if (lens[size_t(i)] > capacity)
      throw DeviceDataError(i, fmt::format("context_lens[{}] = {} exceeds the block table's capacity {} "
                                           "(max_blocks {} x page_size {}); the excess tokens would be ignored",
                                           i, lens[size_t(i)], capacity, s.max_blocks, s.page_size));
    const int used = int((std::int64_t(lens[size_t(i)]) + s.page_size - 1) / s.page_size);
    if (used == 0) continue;
    const auto base = reinterpret_cast<CUdeviceptr>(a.block_tables.data) +
                      CUdeviceptr(std::int64_t(i) * a.block_tables.strides[0] * 4);
    check(drv.cuMemcpyDtoH(row.data(), base, size_t(used) * 4), "cuMemcpyDtoH(block_tables)");
    for (int j = 0; j < used; ++j)
      if (row[size_t(j)] < 0 || row[size_t(j)] >= s.num_blocks)
        throw DeviceDataError(i, fmt::format("block_tables[{}][{}] = {} is outside [0, {}) but holds tokens of the "
                                             "sequence (context_len {}); those tokens would be masked",
                                             i, j, row[size_t(j)], s.num_blocks, lens[size_t(i)]));
  }
}

Engine::Engine(int ordinal, EngineOptions options) : impl_(std::make_unique<Impl>(ordinal, options)) {}
Engine::~Engine() = default;

const DeviceInfo& Engine::device() const {
  return impl_->info;
}

std::int64_t Engine::workspace_bytes(const PagedAttentionArgs& args, const PagedAttentionOptions& options) const {
  return plan(args, options).workspace_bytes;
}

LaunchInfo Engine::plan(const PagedAttentionArgs& args, const PagedAttentionOptions& options) const {
  return impl_->plans->plan(validate_call(args, options), options)->info;
}

LaunchInfo Engine::paged_attention(const PagedAttentionArgs& args, const PagedAttentionOptions& options,
                                   CUstream stream) {
  const ProblemShape shape = validate_call(args, options);
  const std::shared_ptr<const attention::Plan> planned = impl_->plans->plan(shape, options);
  const attention::Plan& plan = *planned;
  if (shape.num_seqs == 0) return plan.info;

  Impl& m = *impl_;
  ContextScope scope(m.drv, m.ctx);
  if (m.options.validate_device_data) m.check_device_data(args, shape, stream);

  const Launchable decode = m.kernel(plan.decode, plan.info.smem_bytes, plan.info.threads);
  LaunchInfo info = plan.info;
  if (info.work_items > 0) {
    // Device schedule: as many work items as the compiled kernel's real
    // occupancy takes (the plan's bound counted shared memory alone).
    info.work_items = std::min(
        info.work_items,
        attention::work_items_for(info.work_waves, m.info.sm_count, std::max(1, decode.ctas_per_sm), info.grid[0]));
    info.grid[1] = shape.num_seqs + info.work_items;
  }
  // The engine's own workspace: locked from acquiring it through the launch
  // and its event record, so that no other call regrows or evicts it (freeing
  // it in stream order) before this launch is enqueued. A caller's workspace,
  // or none: the launch reads nothing shared that changes (the plan is held,
  // the kernel stays loaded), so concurrent calls launch in parallel.
  std::unique_lock<std::mutex> lock(m.mu, std::defer_lock);
  if (info.workspace_bytes && !args.workspace) lock.lock();
  const WorkspaceLease ws = info.workspace_bytes ? m.workspace(args, stream, plan) : WorkspaceLease{};

  pj::DecodeParams dp = attention::decode_params(args, options, shape, plan, ws.scratch.counters, ws.scratch.partials);
  dp.work_items = info.work_items;
  void* decode_args[] = {&dp};
  const auto& g = info.grid;
  CUlaunchConfig cfg{};
  cfg.gridDimX = unsigned(g[0]), cfg.gridDimY = unsigned(g[1]), cfg.gridDimZ = unsigned(g[2]);
  cfg.blockDimX = unsigned(plan.info.threads), cfg.blockDimY = 1, cfg.blockDimZ = 1;
  cfg.sharedMemBytes = unsigned(plan.info.smem_bytes);
  cfg.hStream = stream;
  CUlaunchAttribute attrs[2] = {};
  unsigned n = 0;
  if (m.programmatic) {
    attrs[n].id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attrs[n++].value.programmaticStreamSerializationAllowed = 1;
  }
  if (plan.info.cluster > 1) {
    attrs[n].id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
    attrs[n].value.clusterDim.x = 1, attrs[n].value.clusterDim.y = 1;
    attrs[n++].value.clusterDim.z = unsigned(plan.info.cluster);
  }
  cfg.attrs = attrs, cfg.numAttrs = n;
  check(m.drv.cuLaunchKernelEx(&cfg, decode.function, decode_args, nullptr), "cuLaunchKernelEx(paged_decode)");
  if (ws.done) check(m.drv.cuEventRecord(ws.done, stream), "cuEventRecord");
  return info;
}

void Engine::merge_attention_states(const MergeStatesArgs& args, CUstream stream) {
  const attention::MergeShape shape = attention::validate_merge(args);
  if (shape.rows == 0) return;
  Impl& m = *impl_;
  jit::KernelSpec spec;
  spec.kind = jit::KernelKind::merge;
  spec.q_dtype = args.out_a.dtype;
  spec.out_dtype = args.out.dtype;
  spec.arch = jit::clamp_arch(m.info.arch());
  ContextScope scope(m.drv, m.ctx);
  CUfunction f = m.kernel(spec, 0, pj::kMergeThreads).function;
  pj::MergeParams p{};
  p.out_a = args.out_a.data;
  p.out_b = args.out_b.data;
  p.lse_a = static_cast<const float*>(args.lse_a.data);
  p.lse_b = static_cast<const float*>(args.lse_b.data);
  p.out = args.out.data;
  p.lse = static_cast<float*>(args.lse.data);
  p.a_row_stride = shape.a_stride, p.b_row_stride = shape.b_stride, p.out_row_stride = shape.out_stride;
  p.lse_a_stride = shape.lse_a_stride, p.lse_b_stride = shape.lse_b_stride, p.lse_stride = shape.lse_stride;
  p.rows = shape.rows;
  p.head_dim = shape.head_dim;
  const std::int64_t threads = shape.rows * (shape.head_dim / 4);
  const std::int64_t blocks = (threads + pj::kMergeThreads - 1) / pj::kMergeThreads;
  if (blocks > 0x7fffffff) throw NotSupported("out_a", "more rows than one launch covers");
  void* params[] = {&p};
  check(m.drv.cuLaunchKernel(f, unsigned(blocks), 1, 1, pj::kMergeThreads, 1, 1, 0, stream, params, nullptr),
        "cuLaunchKernel(merge_states)");
}

LaunchInfo Engine::ragged_paged_attention(const RaggedAttentionArgs&, const PagedAttentionOptions&, CUstream) {
  throw NotSupported("ragged_paged_attention", "not built yet");
}

std::int64_t Engine::workspace_bytes(const RaggedAttentionArgs&, const PagedAttentionOptions&) const {
  throw NotSupported("ragged_paged_attention", "not built yet");
}

LaunchInfo Engine::plan(const RaggedAttentionArgs&, const PagedAttentionOptions&) const {
  throw NotSupported("ragged_paged_attention", "not built yet");
}

void Engine::append_kv(const AppendKvArgs&, CUstream) {
  throw NotSupported("append_kv", "not built yet");
}

LaunchInfo precompile(const ProblemShape& shape, const PagedAttentionOptions& options, const DeviceInfo& device,
                      bool cluster_merge, bool device_schedule) {
  const attention::Plan plan = attention::PlanCache(device, tuning::ProfileRegistry::global().for_device(device, false),
                                                    cluster_merge, device_schedule)
                                   .make(shape, options);
  jit::KernelCache::global().get(plan.decode);
  return plan.info;
}

}  // namespace pagedjit
