// The C API (pagedjit/pagedjit.h) over the C++ engine. Every entry point
// catches everything, maps it to a status and keeps the message per thread.
#include "pagedjit/pagedjit.h"

#include <cstddef>
#include <exception>
#include <new>
#include <string>

#include "attention/append.hpp"
#include "attention/merge.hpp"
#include "attention/validate.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/version.hpp"

struct pagedjit_engine {
  pagedjit::Engine engine;
  explicit pagedjit_engine(int device) : engine(device) {}
};

namespace {

using namespace pagedjit;

static_assert(int(ErrorCode::invalid_argument) + 1 == PAGEDJIT_ERROR_INVALID_ARGUMENT &&
                  int(ErrorCode::device_data) + 1 == PAGEDJIT_ERROR_DEVICE_DATA,
              "pagedjit_status mirrors pagedjit::ErrorCode, in the same order");

// The struct layouts foreign mirrors copy (python/pagedjit/_capi.py): change them knowingly.
static_assert(sizeof(pagedjit_tensor) == 80 && sizeof(pagedjit_args) == 824 && sizeof(pagedjit_options) == 104,
              "the C API's struct layouts changed");
static_assert(sizeof(pagedjit_ragged_args) == 992 && offsetof(pagedjit_ragged_args, max_query_len) == 968,
              "the C API's struct layouts changed");
static_assert(offsetof(pagedjit_options, megacore_mode) == 72 && offsetof(pagedjit_args, workspace) == 568,
              "the C API's struct layouts changed");
static_assert(sizeof(pagedjit_merge_args) == 480, "the C API's struct layouts changed");
static_assert(sizeof(pagedjit_append_args) == 808 && offsetof(pagedjit_append_args, k_scale) == 568,
              "the C API's struct layouts changed");

thread_local std::string last_error;

pagedjit_status to_status(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument:
      return PAGEDJIT_ERROR_INVALID_ARGUMENT;
    case ErrorCode::not_supported:
      return PAGEDJIT_ERROR_NOT_SUPPORTED;
    case ErrorCode::driver_not_found:
      return PAGEDJIT_ERROR_DRIVER_NOT_FOUND;
    case ErrorCode::stub_library:
      return PAGEDJIT_ERROR_STUB_LIBRARY;
    case ErrorCode::no_device:
      return PAGEDJIT_ERROR_NO_DEVICE;
    case ErrorCode::driver_too_old:
      return PAGEDJIT_ERROR_DRIVER_TOO_OLD;
    case ErrorCode::driver_error:
      return PAGEDJIT_ERROR_DRIVER;
    case ErrorCode::compile_error:
      return PAGEDJIT_ERROR_COMPILE;
    case ErrorCode::cache_error:
      return PAGEDJIT_ERROR_CACHE;
    case ErrorCode::jit_disabled:
      return PAGEDJIT_ERROR_JIT_DISABLED;
    case ErrorCode::device_data:
      return PAGEDJIT_ERROR_DEVICE_DATA;
  }
  return PAGEDJIT_ERROR_INTERNAL;
}

pagedjit_status fail(pagedjit_status status, const char* message) noexcept {
  try {
    last_error = message;
  } catch (...) {
    last_error.clear();  // no memory for the message: the status still tells
  }
  return status;
}

// Runs `body`, maps whatever it throws to a status and records the message.
template <typename F>
pagedjit_status guarded(F&& body) noexcept {
  try {
    body();
    last_error.clear();
    return PAGEDJIT_OK;
  } catch (const Error& e) {
    return fail(to_status(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    return fail(PAGEDJIT_ERROR_INTERNAL, "out of host memory");
  } catch (const std::exception& e) {
    return fail(PAGEDJIT_ERROR_INTERNAL, e.what());
  } catch (...) {
    return fail(PAGEDJIT_ERROR_INTERNAL, "unknown exception");
  }
}

void require(const void* p, const char* name) {
  if (!p) throw InvalidArgument(name, "a non-null pointer", "NULL");
}

TensorView to_view(const pagedjit_tensor& t, const std::string& name) {
  if (t.rank < 0 || t.rank > kMaxRank) throw InvalidArgument(name + ".rank", "0..4", std::to_string(t.rank));
  if (t.dtype < PAGEDJIT_F32 || t.dtype > PAGEDJIT_E5M2)
    throw InvalidArgument(name + ".dtype", "a pagedjit_dtype (0..5)", std::to_string(t.dtype));
  TensorView v;
  v.data = t.data;
  v.dtype = static_cast<DType>(t.dtype);
  v.rank = t.rank;
  for (int i = 0; i < t.rank; ++i) {
    v.shape[i] = t.shape[i];
    v.strides[i] = t.strides[i];
  }
  return v;
}

// The layout and reserved fields every argument struct has.
template <class C>
CacheLayout checked_layout(const C* a) {
  require(a, "args");
  if (a->layout < PAGEDJIT_BLOCKS_HEADS || a->layout > PAGEDJIT_BLOCKS_TOKENS)
    throw InvalidArgument("args.layout", "a pagedjit_layout (0..2)", std::to_string(a->layout));
  // Reserved for later fields: a caller that sets them expects something this version does not do.
  if (a->reserved0 != 0) throw InvalidArgument("args.reserved0", "0", std::to_string(a->reserved0));
  return static_cast<CacheLayout>(a->layout);
}

// The fields the decode and the ragged call share, which their C structs
// name alike.
template <class C, class R>
void attention_fields(const C* a, R& r) {
  r.layout = checked_layout(a);
  r.query = to_view(a->query, "query");
  r.key_cache = to_view(a->key_cache, "key_cache");
  r.value_cache = to_view(a->value_cache, "value_cache");
  r.context_lens = to_view(a->context_lens, "context_lens");
  r.block_tables = to_view(a->block_tables, "block_tables");
  r.output = to_view(a->output, "output");
  r.lse = to_view(a->lse, "lse");
  r.k_scale = to_view(a->k_scale, "k_scale");
  r.v_scale = to_view(a->v_scale, "v_scale");
  r.sinks = to_view(a->sinks, "sinks");
  r.workspace = a->workspace;
  r.workspace_bytes = a->workspace_bytes;
}

PagedAttentionArgs to_args(const pagedjit_args* a) {
  PagedAttentionArgs r;
  attention_fields(a, r);
  return r;
}

RaggedAttentionArgs to_ragged_args(const pagedjit_ragged_args* a) {
  RaggedAttentionArgs r;
  attention_fields(a, r);
  r.query_start = to_view(a->query_start, "query_start");
  r.seq_count = to_view(a->seq_count, "seq_count");
  r.max_query_len = a->max_query_len;
  return r;
}

PagedAttentionOptions to_options(const pagedjit_options* o) {
  PagedAttentionOptions r;
  if (!o) return r;
  if (o->reserved0 != 0) throw InvalidArgument("options.reserved0", "0", std::to_string(o->reserved0));
  if (o->has_attn_scale) r.attn_scale = o->attn_scale;
  if (o->has_max_context_len) r.max_context_len = o->max_context_len;
  r.num_splits = o->num_splits;
  r.mask_value = o->mask_value;
  if (o->has_attn_logits_soft_cap) r.attn_logits_soft_cap = o->attn_logits_soft_cap;
  if (o->has_sliding_window) r.sliding_window = o->sliding_window;
  if (o->has_pages_per_compute_block) r.pages_per_compute_block = o->pages_per_compute_block;
  if (o->megacore_mode) r.megacore_mode = std::string(o->megacore_mode);
  r.inline_seq_dim = o->inline_seq_dim != 0;
  r.return_lse = o->return_lse != 0;
  r.batch_invariant = o->batch_invariant != 0;
  if (o->has_kernel_config) {
    KernelConfig c;
    c.tile_tokens = o->tile_tokens;
    c.warps = o->warps;
    c.stages = o->stages;
    c.chunk_tokens = o->chunk_tokens;
    c.v_dims = o->v_dims;
    r.kernel_config = c;
  }
  return r;
}

MergeStatesArgs to_merge_args(const pagedjit_merge_args* a) {
  require(a, "args");
  MergeStatesArgs r;
  r.out_a = to_view(a->out_a, "out_a");
  r.lse_a = to_view(a->lse_a, "lse_a");
  r.out_b = to_view(a->out_b, "out_b");
  r.lse_b = to_view(a->lse_b, "lse_b");
  r.out = to_view(a->out, "out");
  r.lse = to_view(a->lse, "lse");
  return r;
}

AppendKvArgs to_append_args(const pagedjit_append_args* a) {
  AppendKvArgs r;
  r.layout = checked_layout(a);
  r.keys = to_view(a->keys, "keys");
  r.values = to_view(a->values, "values");
  r.query_start = to_view(a->query_start, "query_start");
  r.context_lens = to_view(a->context_lens, "context_lens");
  r.block_tables = to_view(a->block_tables, "block_tables");
  r.key_cache = to_view(a->key_cache, "key_cache");
  r.value_cache = to_view(a->value_cache, "value_cache");
  r.k_scale = to_view(a->k_scale, "k_scale");
  r.v_scale = to_view(a->v_scale, "v_scale");
  r.seq_count = to_view(a->seq_count, "seq_count");
  return r;
}

}  // namespace

extern "C" {

const char* pagedjit_status_name(int status) {
  if (status == PAGEDJIT_OK) return "ok";
  if (status == PAGEDJIT_ERROR_INTERNAL) return "internal";
  if (status < PAGEDJIT_ERROR_INVALID_ARGUMENT || status > PAGEDJIT_ERROR_DEVICE_DATA) return "unknown";
  return error_code_name(static_cast<ErrorCode>(status - 1));
}

const char* pagedjit_last_error(void) {
  return last_error.c_str();
}

const char* pagedjit_version(void) {
  return kVersion;
}

int pagedjit_device_count(void) {
  return device_count();
}

pagedjit_status pagedjit_tensor_init(pagedjit_tensor* t, void* data, int32_t dtype, int32_t rank,
                                     const int64_t* shape) {
  return guarded([&] {
    require(t, "tensor");
    if (rank < 0 || rank > kMaxRank) throw InvalidArgument("rank", "0..4", std::to_string(rank));
    if (rank > 0) require(shape, "shape");
    if (dtype < PAGEDJIT_F32 || dtype > PAGEDJIT_E5M2)
      throw InvalidArgument("dtype", "a pagedjit_dtype (0..5)", std::to_string(dtype));
    pagedjit_tensor r{};
    r.data = data;
    r.dtype = dtype;
    r.rank = rank;
    int64_t stride = 1;
    for (int i = rank - 1; i >= 0; --i) {
      if (shape[i] < 0) throw InvalidArgument("shape", "non-negative sizes", std::to_string(shape[i]));
      r.shape[i] = shape[i];
      r.strides[i] = stride;
      if (__builtin_mul_overflow(stride, shape[i], &stride))
        throw InvalidArgument("shape", "sizes whose product fits in 64 bits", std::to_string(shape[i]));
    }
    *t = r;
  });
}

void pagedjit_options_init(pagedjit_options* options) {
  if (!options) return;
  *options = pagedjit_options{};
  options->mask_value = kDefaultMaskValue;
  options->inline_seq_dim = 1;
}

pagedjit_status pagedjit_engine_create(int device, pagedjit_engine** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    require(out, "out");
    *out = new pagedjit_engine(device);
  });
}

void pagedjit_engine_destroy(pagedjit_engine* engine) {
  try {
    delete engine;
  } catch (...) {  // a destructor that throws would end the process: never let it out
  }
}

pagedjit_status pagedjit_paged_attention(pagedjit_engine* engine, const pagedjit_args* args,
                                         const pagedjit_options* options, void* cuda_stream) {
  return guarded([&] {
    require(engine, "engine");
    engine->engine.paged_attention(to_args(args), to_options(options), static_cast<CUstream>(cuda_stream));
  });
}

pagedjit_status pagedjit_workspace_bytes(const pagedjit_engine* engine, const pagedjit_args* args,
                                         const pagedjit_options* options, int64_t* bytes) {
  if (bytes) *bytes = 0;
  return guarded([&] {
    require(engine, "engine");
    require(bytes, "bytes");
    *bytes = engine->engine.workspace_bytes(to_args(args), to_options(options));
  });
}

pagedjit_status pagedjit_validate(const pagedjit_args* args, const pagedjit_options* options) {
  return guarded([&] { validate_call(to_args(args), to_options(options)); });
}

pagedjit_status pagedjit_ragged_paged_attention(pagedjit_engine* engine, const pagedjit_ragged_args* args,
                                                const pagedjit_options* options, void* cuda_stream) {
  return guarded([&] {
    require(engine, "engine");
    engine->engine.ragged_paged_attention(to_ragged_args(args), to_options(options),
                                          static_cast<CUstream>(cuda_stream));
  });
}

pagedjit_status pagedjit_ragged_workspace_bytes(const pagedjit_engine* engine, const pagedjit_ragged_args* args,
                                                const pagedjit_options* options, int64_t* bytes) {
  if (bytes) *bytes = 0;
  return guarded([&] {
    require(engine, "engine");
    require(bytes, "bytes");
    *bytes = engine->engine.workspace_bytes(to_ragged_args(args), to_options(options));
  });
}

pagedjit_status pagedjit_validate_ragged(const pagedjit_ragged_args* args, const pagedjit_options* options) {
  return guarded([&] { validate_ragged(to_ragged_args(args), to_options(options)); });
}

pagedjit_status pagedjit_merge_attention_states(pagedjit_engine* engine, const pagedjit_merge_args* args,
                                                void* cuda_stream) {
  return guarded([&] {
    require(engine, "engine");
    engine->engine.merge_attention_states(to_merge_args(args), static_cast<CUstream>(cuda_stream));
  });
}

pagedjit_status pagedjit_validate_merge(const pagedjit_merge_args* args) {
  return guarded([&] { attention::validate_merge(to_merge_args(args)); });
}

pagedjit_status pagedjit_append_kv(pagedjit_engine* engine, const pagedjit_append_args* args, void* cuda_stream) {
  return guarded([&] {
    require(engine, "engine");
    engine->engine.append_kv(to_append_args(args), static_cast<CUstream>(cuda_stream));
  });
}

pagedjit_status pagedjit_validate_append(const pagedjit_append_args* args) {
  return guarded([&] { attention::validate_append(to_append_args(args)); });
}

}  // extern "C"
