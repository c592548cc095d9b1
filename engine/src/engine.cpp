// The call, top to bottom: validate -> plan -> kernel specs -> compile or fetch
// -> launch.
#include "pagedjit/engine.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "attention/append.hpp"
#include "attention/launch.hpp"
#include "attention/merge.hpp"
#include "attention/plan_cache.hpp"
#include "attention/prefill.hpp"
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
                  options.cluster_merge, options.device_schedule, options.specialize);
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
  void check_ragged_data(const RaggedAttentionArgs& args, const ProblemShape& s, CUstream stream);
  LaunchInfo run(const PagedAttentionArgs& args, const PagedAttentionOptions& call_options, const ProblemShape& shape,
                 const RaggedAttentionArgs* ragged, CUstream stream);
  // The prefill kernel's plan where a ragged call has long queries it takes;
  // otherwise the decode kernel runs the call.
  std::optional<attention::PrefillPlan> prefill_plan(const ProblemShape& shape,
                                                     const PagedAttentionOptions& call_options) const {
    if (!attention::long_queries(shape)) return std::nullopt;
    attention::PrefillPlan prefill = attention::plan_prefill(shape, call_options, info);
    if (!prefill.supported) return std::nullopt;
    return prefill;
  }
  LaunchInfo run_prefill(const RaggedAttentionArgs& args, const PagedAttentionOptions& call_options,
                         const ProblemShape& shape, const attention::PrefillPlan& prefill, CUstream stream);
  void launch_decode(CUfunction f, const LaunchInfo& launch, pj::DecodeParams& dp, CUstream stream);
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

// Query rows of the ragged call: query_start ascending inside the packed
// rows, each q_len within its context and the host's max_query_len bound.
void Engine::Impl::check_ragged_data(const RaggedAttentionArgs& a, const ProblemShape& s, CUstream stream) {
  check(drv.cuStreamSynchronize(stream), "cuStreamSynchronize");
  std::vector<int> starts(size_t(s.num_seqs) + 1), lens(size_t(s.num_seqs));
  check(drv.cuMemcpyDtoH(starts.data(), reinterpret_cast<CUdeviceptr>(a.query_start.data), starts.size() * 4),
        "cuMemcpyDtoH(query_start)");
  check(drv.cuMemcpyDtoH(lens.data(), reinterpret_cast<CUdeviceptr>(a.context_lens.data), lens.size() * 4),
        "cuMemcpyDtoH(context_lens)");
  if (starts[0] < 0) throw DeviceDataError(0, fmt::format("query_start[0] = {} is negative", starts[0]));
  for (int i = 0; i < s.num_seqs; ++i) {
    const std::int64_t b = starts[size_t(i)], e = starts[size_t(i) + 1], q = e - b;
    if (e < b || e > s.total_tokens)
      throw DeviceDataError(i, fmt::format("query_start[{}..{}] = {}..{} is not an ascending range inside the {} "
                                           "packed rows",
                                           i, i + 1, b, e, s.total_tokens));
    if (q > s.q_len)
      throw DeviceDataError(i, fmt::format("sequence {} has {} query tokens, more than max_query_len {}; the rest "
                                           "would not be computed",
                                           i, q, s.q_len));
    if (q > lens[size_t(i)])
      throw DeviceDataError(i, fmt::format("sequence {} has {} query tokens but context_len {} (which counts them)", i,
                                           q, lens[size_t(i)]));
  }
}

// One launch of the decode kernel with the plan's grid, programmatic
// serialization where enabled, and the plan's cluster.
void Engine::Impl::launch_decode(CUfunction f, const LaunchInfo& launch, pj::DecodeParams& dp, CUstream stream) {
  void* decode_args[] = {&dp};
  const auto& g = launch.grid;
  CUlaunchConfig cfg{};
  cfg.gridDimX = unsigned(g[0]), cfg.gridDimY = unsigned(g[1]), cfg.gridDimZ = unsigned(g[2]);
  cfg.blockDimX = unsigned(launch.threads), cfg.blockDimY = 1, cfg.blockDimZ = 1;
  cfg.sharedMemBytes = unsigned(launch.smem_bytes);
  cfg.hStream = stream;
  CUlaunchAttribute attrs[2] = {};
  unsigned n = 0;
  if (programmatic) {
    attrs[n].id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attrs[n++].value.programmaticStreamSerializationAllowed = 1;
  }
  if (launch.cluster > 1) {
    attrs[n].id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
    attrs[n].value.clusterDim.x = 1, attrs[n].value.clusterDim.y = 1;
    attrs[n++].value.clusterDim.z = unsigned(launch.cluster);
  }
  cfg.attrs = attrs, cfg.numAttrs = n;
  check(drv.cuLaunchKernelEx(&cfg, f, decode_args, nullptr), "cuLaunchKernelEx(paged_decode)");
}

// Long queries of fp16/bf16 calls: the tensor-core prefill kernel, one
// launch over every sequence's query blocks (found on the device), no
// partitions and no workspace.
LaunchInfo Engine::Impl::run_prefill(const RaggedAttentionArgs& args, const PagedAttentionOptions& call_options,
                                     const ProblemShape& shape, const attention::PrefillPlan& prefill,
                                     CUstream stream) {
  const LaunchInfo launch = prefill.launch_info(call_options);
  if (shape.num_seqs == 0 || shape.total_tokens == 0) return launch;
  ContextScope scope(drv, ctx);
  if (options.validate_device_data) {
    check_device_data(paged_view(args), shape, stream);
    check_ragged_data(args, shape, stream);
  }
  const Launchable k = kernel(prefill.spec, prefill.smem_bytes, prefill.threads);
  pj::DecodeParams dp = attention::prefill_params(args, call_options, shape, prefill);
  launch_decode(k.function, launch, dp, stream);
  return launch;
}

LaunchInfo Engine::Impl::run(const PagedAttentionArgs& args, const PagedAttentionOptions& call_options,
                             const ProblemShape& shape, const RaggedAttentionArgs* ragged, CUstream stream) {
  const std::shared_ptr<const attention::Plan> planned = plans->plan(shape, call_options);
  const attention::Plan& plan = *planned;
  if (shape.num_seqs == 0 || (shape.ragged && shape.total_tokens == 0)) return plan.info;

  ContextScope scope(drv, ctx);
  if (options.validate_device_data) {
    check_device_data(args, shape, stream);
    if (ragged) check_ragged_data(*ragged, shape, stream);
  }

  const Launchable decode = kernel(plan.decode, plan.info.smem_bytes, plan.info.threads);
  LaunchInfo launch = plan.info;
  if (launch.work_items > 0) {
    // Device schedule: as many work items as the compiled kernel's real
    // occupancy takes (the plan's bound counted shared memory alone).
    launch.work_items = std::min(
        launch.work_items,
        attention::work_items_for(launch.work_waves, info.sm_count, std::max(1, decode.ctas_per_sm), launch.grid[0]));
    launch.grid[1] = shape.num_seqs + launch.work_items;
  }
  // The engine's own workspace: locked from acquiring it through the launch
  // and its event record, so that no other call regrows or evicts it (freeing
  // it in stream order) before this launch is enqueued. A caller's workspace,
  // or none: the launch reads nothing shared that changes (the plan is held,
  // the kernel stays loaded), so concurrent calls launch in parallel.
  std::unique_lock<std::mutex> lock(mu, std::defer_lock);
  if (launch.workspace_bytes && !args.workspace) lock.lock();
  const WorkspaceLease ws = launch.workspace_bytes ? workspace(args, stream, plan) : WorkspaceLease{};

  pj::DecodeParams dp =
      attention::decode_params(args, call_options, shape, plan, ws.scratch.counters, ws.scratch.partials);
  if (ragged) attention::apply_ragged(dp, *ragged, call_options, shape);
  dp.work_items = launch.work_items;
  launch_decode(decode.function, launch, dp, stream);
  if (ws.done) check(drv.cuEventRecord(ws.done, stream), "cuEventRecord");
  return launch;
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
  return impl_->run(args, options, validate_call(args, options), nullptr, stream);
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

LaunchInfo Engine::ragged_paged_attention(const RaggedAttentionArgs& args, const PagedAttentionOptions& options,
                                          CUstream stream) {
  const ProblemShape shape = validate_ragged(args, options);
  if (const auto prefill = impl_->prefill_plan(shape, options))
    return impl_->run_prefill(args, options, shape, *prefill, stream);
  return impl_->run(paged_view(args), options, shape, &args, stream);
}

std::int64_t Engine::workspace_bytes(const RaggedAttentionArgs& args, const PagedAttentionOptions& options) const {
  return plan(args, options).workspace_bytes;
}

LaunchInfo Engine::plan(const RaggedAttentionArgs& args, const PagedAttentionOptions& options) const {
  const ProblemShape shape = validate_ragged(args, options);
  if (const auto prefill = impl_->prefill_plan(shape, options)) return prefill->launch_info(options);
  return impl_->plans->plan(shape, options)->info;
}

void Engine::append_kv(const AppendKvArgs& args, CUstream stream) {
  const attention::AppendShape shape = attention::validate_append(args);
  if (shape.total_tokens == 0 || shape.num_seqs == 0) return;
  Impl& m = *impl_;
  if (is_fp8(shape.kv_dtype) && m.info.cc_major * 10 + m.info.cc_minor < 89)
    throw NotSupported("key_cache",
                       fmt::format("{} caches need an sm_89+ GPU (fp8 conversions); {} is sm_{}{}",
                                   dtype_name(shape.kv_dtype), m.info.name, m.info.cc_major, m.info.cc_minor));
  jit::KernelSpec spec;
  spec.kind = jit::KernelKind::append;
  spec.q_dtype = shape.src_dtype;
  spec.kv_dtype = shape.kv_dtype;
  spec.arch = jit::clamp_arch(m.info.arch());
  ContextScope scope(m.drv, m.ctx);
  if (m.options.validate_device_data) attention::check_append_data(m.drv, args, shape, stream);
  attention::AppendLaunch l = attention::append_launch(args, shape);
  CUfunction f = m.kernel(spec, 0, int(l.block[0] * l.block[1])).function;
  void* params[] = {&l.params};
  check(m.drv.cuLaunchKernel(f, l.grid[0], l.grid[1], 1, l.block[0], l.block[1], 1, 0, stream, params, nullptr),
        "cuLaunchKernel(append_kv)");
}

LaunchInfo precompile(const ProblemShape& shape, const PagedAttentionOptions& options, const DeviceInfo& device,
                      bool cluster_merge, bool device_schedule, KernelSpecialization specialize) {
  const attention::Plan plan = attention::PlanCache(device, tuning::ProfileRegistry::global().for_device(device, false),
                                                    cluster_merge, device_schedule, specialize)
                                   .make(shape, options);
  jit::KernelCache::global().get(plan.decode);
  return plan.info;
}

}  // namespace pagedjit
