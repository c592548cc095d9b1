/* The C API of pagedjit: C99, no dependency beyond <stddef.h> and <stdint.h>,
 * usable from C, Rust, Python ctypes and anything else with a C FFI. No C++
 * exception crosses it: every function that can fail returns a status and
 * leaves a message for pagedjit_last_error().
 *
 * Structs are plain data with fixed-width fields (enum values are stored in
 * int32_t fields), so foreign declarations can mirror them exactly. */
#ifndef PAGEDJIT_PAGEDJIT_H
#define PAGEDJIT_PAGEDJIT_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define PAGEDJIT_API
#else
#define PAGEDJIT_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ status */

/* PAGEDJIT_OK, then one value per pagedjit::ErrorCode (same order), then
 * PAGEDJIT_ERROR_INTERNAL for anything else (out of memory, a bug). */
typedef enum pagedjit_status {
  PAGEDJIT_OK = 0,
  PAGEDJIT_ERROR_INVALID_ARGUMENT = 1, /* the call's arguments are wrong; nothing was launched */
  PAGEDJIT_ERROR_NOT_SUPPORTED = 2,    /* valid but not implemented (or a TPU-only option) */
  PAGEDJIT_ERROR_DRIVER_NOT_FOUND = 3, /* libcuda.so.1 could not be loaded */
  PAGEDJIT_ERROR_STUB_LIBRARY = 4,     /* the toolkit's stub libcuda was loaded instead of the driver */
  PAGEDJIT_ERROR_NO_DEVICE = 5,        /* the driver works but the requested device does not exist */
  PAGEDJIT_ERROR_DRIVER_TOO_OLD = 6,   /* the driver cannot run code built by this toolkit */
  PAGEDJIT_ERROR_DRIVER = 7,           /* any other CUDA driver failure */
  PAGEDJIT_ERROR_COMPILE = 8,          /* NVRTC rejected a kernel (the message holds the log) */
  PAGEDJIT_ERROR_CACHE = 9,            /* the kernel cache failed in a way that cannot degrade */
  PAGEDJIT_ERROR_JIT_DISABLED = 10,    /* PAGEDJIT_JIT=off and the kernel was not in the cache */
  PAGEDJIT_ERROR_DEVICE_DATA = 11,     /* the validation mode found bad device data */
  PAGEDJIT_ERROR_INTERNAL = 12         /* any other failure */
} pagedjit_status;

/* "ok", "invalid_argument", ... (pagedjit::error_code_name); "unknown" otherwise. */
PAGEDJIT_API const char* pagedjit_status_name(int status);

/* The message of the last call on this thread that returned a status: "" after
 * success. Valid until the next pagedjit call on the same thread. */
PAGEDJIT_API const char* pagedjit_last_error(void);

/* "MAJOR.MINOR.PATCH" of the library actually loaded. */
PAGEDJIT_API const char* pagedjit_version(void);

/* Number of usable CUDA devices; 0 without a driver or a device (never fails). */
PAGEDJIT_API int pagedjit_device_count(void);

/* ------------------------------------------------------------ tensors */

typedef enum pagedjit_dtype {
  PAGEDJIT_F32 = 0,
  PAGEDJIT_F16 = 1,
  PAGEDJIT_BF16 = 2,
  PAGEDJIT_I32 = 3,
  PAGEDJIT_E4M3 = 4, /* 8-bit float KV caches (OCP FP8), with k_scale / v_scale */
  PAGEDJIT_E5M2 = 5
} pagedjit_dtype;

typedef enum pagedjit_layout {
  PAGEDJIT_BLOCKS_HEADS = 0, /* [num_blocks, num_kv_heads, page_size, head_dim] (vLLM; default) */
  PAGEDJIT_HEADS_BLOCKS = 1, /* [num_kv_heads, num_blocks, page_size, head_dim] (JAX Pallas) */
  PAGEDJIT_BLOCKS_TOKENS = 2 /* [num_blocks, page_size, num_kv_heads, head_dim] (FlashInfer NHD) */
} pagedjit_layout;

#define PAGEDJIT_MAX_RANK 4

/* A non-owning view of device (or, for pagedjit_validate, any) memory. */
typedef struct pagedjit_tensor {
  void* data;
  int32_t dtype; /* pagedjit_dtype */
  int32_t rank;  /* 0..4; 0 with data NULL: absent */
  int64_t shape[PAGEDJIT_MAX_RANK];
  int64_t strides[PAGEDJIT_MAX_RANK]; /* in elements */
} pagedjit_tensor;

/* Fills `t` as a contiguous row-major view; shape may be NULL when rank is 0. */
PAGEDJIT_API pagedjit_status pagedjit_tensor_init(pagedjit_tensor* t, void* data, int32_t dtype, int32_t rank,
                                                  const int64_t* shape);

/* ------------------------------------------------------------ a call */

/* The tensors of one call (docs/contract.md describes each). Zero-initialize, then fill. */
typedef struct pagedjit_args {
  pagedjit_tensor query;        /* [num_seqs, num_heads, head_dim] or [num_seqs, q_len, num_heads, head_dim] */
  pagedjit_tensor key_cache;    /* 4-D, see `layout` */
  pagedjit_tensor value_cache;  /* same shape and dtype as key_cache */
  pagedjit_tensor context_lens; /* [num_seqs] int32 */
  pagedjit_tensor block_tables; /* [num_seqs, max_blocks] int32, -1 padded */
  pagedjit_tensor output;       /* the query's shape */
  pagedjit_tensor lse;          /* the query's leading dims, fp32, written when options.return_lse */
  int32_t layout;               /* pagedjit_layout */
  int32_t reserved0;            /* 0 */
  /* Optional scratch for split partials (pagedjit_workspace_bytes tells the
   * size; zero-filled before first use and before a call of another shape).
   * NULL: the engine keeps a buffer per stream. */
  void* workspace;
  int64_t workspace_bytes;
  /* fp8 caches only: fp32 [1] or [num_kv_heads] dequantization scales (rank 0: 1). */
  pagedjit_tensor k_scale;
  pagedjit_tensor v_scale;
  /* Optional fp32 [num_heads]: attention sinks, a logit per query head that
   * joins each softmax denominator only (rank 0: none). */
  pagedjit_tensor sinks;
} pagedjit_args;

/* Options. Call pagedjit_options_init first: it sets the defaults. A field
 * guarded by a has_* flag is used only when the flag is non-zero. */
typedef struct pagedjit_options {
  int64_t max_context_len; /* host hint sizing the split grid */
  int64_t sliding_window;  /* attend the last W tokens */
  float attn_scale;        /* default 1/sqrt(head_dim) */
  float attn_logits_soft_cap;
  float mask_value;   /* logit of masked positions; default -2.381976426469702e38 */
  int32_t num_splits; /* 0: engine chooses; 1: none; n: n partitions */
  int32_t pages_per_compute_block;
  int32_t has_attn_scale;
  int32_t has_max_context_len;
  int32_t has_attn_logits_soft_cap;
  int32_t has_sliding_window;
  int32_t has_pages_per_compute_block;
  int32_t return_lse;        /* write args.lse */
  int32_t inline_seq_dim;    /* default 1; 0 is NOT_SUPPORTED */
  int32_t batch_invariant;   /* fixed-length partitions: a sequence's output is bitwise the same in any batch */
  int32_t reserved0;         /* 0 */
  const char* megacore_mode; /* TPU only: NULL, anything else is NOT_SUPPORTED */
  /* Tuning override (pagedjit::KernelConfig), used when has_kernel_config; 0 = engine chooses. */
  int32_t has_kernel_config;
  int32_t tile_tokens;
  int32_t warps;
  int32_t stages;
  int32_t chunk_tokens;
  int32_t v_dims;
} pagedjit_options;

PAGEDJIT_API void pagedjit_options_init(pagedjit_options* options);

/* ------------------------------------------------------------ the engine */

typedef struct pagedjit_engine pagedjit_engine;

/* Binds an engine to CUDA device `device` (its primary context, made current
 * on this thread if the thread has none). On failure *out is NULL and the
 * status tells a missing driver, the stub library, no such device, ... */
PAGEDJIT_API pagedjit_status pagedjit_engine_create(int device, pagedjit_engine** out);
/* NULL is fine. */
PAGEDJIT_API void pagedjit_engine_destroy(pagedjit_engine* engine);

/* Runs paged attention on `cuda_stream` (a CUstream / cudaStream_t; NULL: the
 * legacy default stream). Asynchronous. `options` NULL: the defaults. */
PAGEDJIT_API pagedjit_status pagedjit_paged_attention(pagedjit_engine* engine, const pagedjit_args* args,
                                                      const pagedjit_options* options, void* cuda_stream);

/* Scratch bytes a call needs in args->workspace (0: none). */
PAGEDJIT_API pagedjit_status pagedjit_workspace_bytes(const pagedjit_engine* engine, const pagedjit_args* args,
                                                      const pagedjit_options* options, int64_t* bytes);

/* Checks a call's shapes, dtypes, strides, alignment and options without a
 * device (pointers are not dereferenced). */
PAGEDJIT_API pagedjit_status pagedjit_validate(const pagedjit_args* args, const pagedjit_options* options);

/* ------------------------------------------------------------ ragged steps */

/* One call for a serving step mixing decodes, draft verifications and prefill
 * chunks (pagedjit::RaggedAttentionArgs; docs/contract.md). Zero-initialize,
 * then fill. */
typedef struct pagedjit_ragged_args {
  pagedjit_tensor query;        /* [total_tokens, num_heads, head_dim], every sequence's new tokens packed */
  pagedjit_tensor query_start;  /* [num_seqs + 1] int32: sequence s owns rows query_start[s] .. query_start[s+1] */
  pagedjit_tensor key_cache;    /* 4-D, see `layout` */
  pagedjit_tensor value_cache;  /* same shape and dtype as key_cache */
  pagedjit_tensor context_lens; /* [num_seqs] int32: cached tokens including this step's */
  pagedjit_tensor block_tables; /* [num_seqs, max_blocks] int32 */
  pagedjit_tensor output;       /* the query's shape */
  pagedjit_tensor lse;          /* [total_tokens, num_heads] fp32, written when options.return_lse */
  pagedjit_tensor k_scale;      /* fp8 caches: as in pagedjit_args */
  pagedjit_tensor v_scale;
  pagedjit_tensor sinks;     /* optional fp32 [num_heads] */
  pagedjit_tensor seq_count; /* optional int32 [1]: sequences this step has (later ones skipped) */
  int32_t layout;            /* pagedjit_layout */
  int32_t reserved0;         /* 0 */
  int64_t max_query_len;     /* host bound on every q_len; 0: total_tokens */
  void* workspace;           /* optional scratch, as in pagedjit_args */
  int64_t workspace_bytes;
} pagedjit_ragged_args;

/* Runs ragged paged attention on `cuda_stream`. Asynchronous; reads no device
 * data on the host (graph-capturable). `options` NULL: the defaults. */
PAGEDJIT_API pagedjit_status pagedjit_ragged_paged_attention(pagedjit_engine* engine, const pagedjit_ragged_args* args,
                                                             const pagedjit_options* options, void* cuda_stream);

/* Scratch bytes a ragged call needs in args->workspace (0: none). */
PAGEDJIT_API pagedjit_status pagedjit_ragged_workspace_bytes(const pagedjit_engine* engine,
                                                             const pagedjit_ragged_args* args,
                                                             const pagedjit_options* options, int64_t* bytes);

/* Checks a ragged call without a device (pointers are not dereferenced). */
PAGEDJIT_API pagedjit_status pagedjit_validate_ragged(const pagedjit_ragged_args* args,
                                                      const pagedjit_options* options);

/* ------------------------------------------------------------ merging two partial results */

/* Two attention results over disjoint parts of the same contexts (a shared
 * prefix and each sequence's own suffix, say), each with the natural-log
 * sum-exp that paged_attention's `lse` gives (pagedjit::MergeStatesArgs).
 * Leading dims are rows (e.g. [num_seqs, num_heads]); the last is head_dim, a
 * multiple of 4. Zero-initialize, then fill. */
typedef struct pagedjit_merge_args {
  pagedjit_tensor out_a; /* [rows..., head_dim], fp32/fp16/bf16 */
  pagedjit_tensor lse_a; /* fp32 [rows...] */
  pagedjit_tensor out_b; /* out_a's shape and dtype */
  pagedjit_tensor lse_b; /* fp32 [rows...] */
  pagedjit_tensor out;   /* out_a's shape, any float dtype; may alias out_a or out_b */
  pagedjit_tensor lse;   /* optional (data NULL: not written): log(exp(lse_a) + exp(lse_b)) */
} pagedjit_merge_args;

/* out = (e^lse_a out_a + e^lse_b out_b) / (e^lse_a + e^lse_b) on `cuda_stream`.
 * Asynchronous; graph-capturable (no allocation, no synchronization). */
PAGEDJIT_API pagedjit_status pagedjit_merge_attention_states(pagedjit_engine* engine, const pagedjit_merge_args* args,
                                                             void* cuda_stream);

/* Checks a merge's shapes, dtypes and strides without a device. */
PAGEDJIT_API pagedjit_status pagedjit_validate_merge(const pagedjit_merge_args* args);

/* ------------------------------------------------------------ writing new tokens into the cache */

/* A step's new keys and values (pagedjit::AppendKvArgs; docs/contract.md).
 * Zero-initialize, then fill. */
typedef struct pagedjit_append_args {
  pagedjit_tensor keys;         /* [total_tokens, num_kv_heads, head_dim], fp32/fp16/bf16: packed rows */
  pagedjit_tensor values;       /* keys' shape and dtype */
  pagedjit_tensor query_start;  /* [num_seqs + 1] int32: sequence s owns rows query_start[s] .. [s + 1] */
  pagedjit_tensor context_lens; /* [num_seqs] int32, including the new tokens */
  pagedjit_tensor block_tables; /* [num_seqs, max_blocks] int32 */
  pagedjit_tensor key_cache;    /* 4-D, see `layout`: the keys' dtype, or e4m3 / e5m2 */
  pagedjit_tensor value_cache;  /* key_cache's shape and dtype */
  int32_t layout;               /* pagedjit_layout */
  int32_t reserved0;            /* 0 */
  /* fp8 caches only: fp32 [1] or [num_kv_heads]; the cache gets value / scale (rank 0: 1). */
  pagedjit_tensor k_scale;
  pagedjit_tensor v_scale;
  pagedjit_tensor seq_count; /* optional [1] int32: only the first *seq_count sequences are written */
} pagedjit_append_args;

/* Writes each sequence's new keys and values to positions context_len - q_len
 * .. context_len - 1 of its pages on `cuda_stream`. Asynchronous;
 * graph-capturable (one launch, no synchronization, no host read). */
PAGEDJIT_API pagedjit_status pagedjit_append_kv(pagedjit_engine* engine, const pagedjit_append_args* args,
                                                void* cuda_stream);

/* Checks an append's shapes, dtypes, strides and alignment without a device. */
PAGEDJIT_API pagedjit_status pagedjit_validate_append(const pagedjit_append_args* args);

#ifdef __cplusplus
}
#endif

#endif /* PAGEDJIT_PAGEDJIT_H */
