/* The C API from C: version, option defaults, refused calls and their
 * messages, the driver status without a GPU and, with one, the seed example
 * in fp32 checked against a CPU computation.
 *
 * usage: pagedjit-c-api-test [--expect-driver STATUS_NAME]
 *   --expect-driver: engine creation must fail with exactly this status (run
 *   with PAGEDJIT_LIBCUDA pointing at a missing file or the stub library). */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pagedjit/pagedjit.h"

static int failures = 0, checks = 0;

#define CHECK(cond)                                                      \
  do {                                                                   \
    ++checks;                                                            \
    if (!(cond)) {                                                       \
      ++failures;                                                        \
      fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                    \
  } while (0)

static int contains(const char* text, const char* part) {
  return text && strstr(text, part) != NULL;
}

/* ------------------------------------------------------------ the seed example */

enum { SEQS = 4, HEADS = 8, DIM = 64, PAGE = 16, PAGES = 100, MAX_BLOCKS = 8 };
static const int kLens[SEQS] = {32, 64, 48, 80};

typedef struct host_problem {
  float q[SEQS * HEADS * DIM];
  float k[PAGES * HEADS * PAGE * DIM]; /* blocks_heads: [page, head, slot, dim] */
  float v[PAGES * HEADS * PAGE * DIM];
  int lens[SEQS];
  int table[SEQS * MAX_BLOCKS];
} host_problem;

static unsigned rng = 2026u;
static float uniform(void) { /* in [-1, 1) */
  rng = rng * 1664525u + 1013904223u;
  return (float)((rng >> 8) & 0xffffff) / 8388608.0f - 1.0f;
}

static void fill(host_problem* p) {
  int perm[PAGES], next = 0;
  for (int i = 0; i < PAGES; ++i) perm[i] = i;
  for (int i = PAGES - 1; i > 0; --i) { /* pages in a random order */
    rng = rng * 1664525u + 1013904223u;
    int j = (int)((rng >> 8) % (unsigned)(i + 1)), t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  for (int i = 0; i < SEQS * HEADS * DIM; ++i) p->q[i] = uniform();
  for (int i = 0; i < PAGES * HEADS * PAGE * DIM; ++i) p->k[i] = uniform(), p->v[i] = uniform();
  for (int s = 0; s < SEQS; ++s) {
    p->lens[s] = kLens[s];
    for (int b = 0; b < MAX_BLOCKS; ++b) p->table[s * MAX_BLOCKS + b] = b * PAGE < kLens[s] ? perm[next++] : -1;
  }
}

/* softmax(q k^T / sqrt(d)) v in double, one (sequence, head) at a time. */
static void reference(const host_problem* p, double* out) {
  double logits[MAX_BLOCKS * PAGE];
  for (int s = 0; s < SEQS; ++s)
    for (int h = 0; h < HEADS; ++h) {
      const float* q = p->q + (s * HEADS + h) * DIM;
      double max = -INFINITY, sum = 0;
      for (int t = 0; t < p->lens[s]; ++t) {
        const int page = p->table[s * MAX_BLOCKS + t / PAGE];
        const float* k = p->k + ((page * HEADS + h) * PAGE + t % PAGE) * DIM;
        double dot = 0;
        for (int d = 0; d < DIM; ++d) dot += (double)q[d] * k[d];
        logits[t] = dot / sqrt((double)DIM);
        if (logits[t] > max) max = logits[t];
      }
      double* o = out + (s * HEADS + h) * DIM;
      for (int d = 0; d < DIM; ++d) o[d] = 0;
      for (int t = 0; t < p->lens[s]; ++t) {
        const int page = p->table[s * MAX_BLOCKS + t / PAGE];
        const float* v = p->v + ((page * HEADS + h) * PAGE + t % PAGE) * DIM;
        const double w = exp(logits[t] - max);
        sum += w;
        for (int d = 0; d < DIM; ++d) o[d] += w * v[d];
      }
      for (int d = 0; d < DIM; ++d) o[d] /= sum;
    }
}

/* The call's descriptors over five buffers (device pointers or fake ones). */
static pagedjit_args seed_args(void* q, void* k, void* v, void* lens, void* table, void* out) {
  const int64_t q_shape[3] = {SEQS, HEADS, DIM}, kv_shape[4] = {PAGES, HEADS, PAGE, DIM};
  const int64_t lens_shape[1] = {SEQS}, table_shape[2] = {SEQS, MAX_BLOCKS};
  pagedjit_args a;
  memset(&a, 0, sizeof a);
  pagedjit_tensor_init(&a.query, q, PAGEDJIT_F32, 3, q_shape);
  pagedjit_tensor_init(&a.key_cache, k, PAGEDJIT_F32, 4, kv_shape);
  pagedjit_tensor_init(&a.value_cache, v, PAGEDJIT_F32, 4, kv_shape);
  pagedjit_tensor_init(&a.context_lens, lens, PAGEDJIT_I32, 1, lens_shape);
  pagedjit_tensor_init(&a.block_tables, table, PAGEDJIT_I32, 2, table_shape);
  pagedjit_tensor_init(&a.output, out, PAGEDJIT_F32, 3, q_shape);
  a.layout = PAGEDJIT_BLOCKS_HEADS;
  return a;
}

/* ------------------------------------------------------------ CPU-only checks */

static void test_version_and_names(void) {
  const char* v = pagedjit_version();
  int major = -1, minor = -1, patch = -1;
  printf("pagedjit_version() = %s\n", v);
  CHECK(sscanf(v, "%d.%d.%d", &major, &minor, &patch) == 3 && major >= 0 && minor >= 0 && patch >= 0);
  CHECK(strcmp(pagedjit_status_name(PAGEDJIT_OK), "ok") == 0);
  CHECK(strcmp(pagedjit_status_name(PAGEDJIT_ERROR_INVALID_ARGUMENT), "invalid_argument") == 0);
  CHECK(strcmp(pagedjit_status_name(PAGEDJIT_ERROR_DEVICE_DATA), "device_data") == 0);
  CHECK(strcmp(pagedjit_status_name(PAGEDJIT_ERROR_INTERNAL), "internal") == 0);
  CHECK(strcmp(pagedjit_status_name(99), "unknown") == 0);
}

static void test_options_defaults(void) {
  pagedjit_options o;
  memset(&o, 0x5a, sizeof o); /* init must overwrite everything */
  pagedjit_options_init(&o);
  CHECK(o.num_splits == 0 && o.inline_seq_dim == 1 && o.return_lse == 0 && o.batch_invariant == 0);
  CHECK(o.mask_value == -2.381976426469702e38f);
  CHECK(!o.has_attn_scale && !o.has_max_context_len && !o.has_attn_logits_soft_cap && !o.has_sliding_window);
  CHECK(!o.has_pages_per_compute_block && !o.has_kernel_config && o.megacore_mode == NULL);
}

static void test_refused_calls(void) {
  /* Validation reads no data: made-up addresses, 16-byte aligned as required
   * (the output past the 3.2 MB caches: what the kernel writes may not overlap what it reads). */
  void *q = (void*)0x100000, *kv = (void*)0x200000, *lens = (void*)0x300000, *table = (void*)0x400000;
  void* out = (void*)0x1000000;
  pagedjit_args a = seed_args(q, kv, kv, lens, table, out);
  pagedjit_options o;
  pagedjit_options_init(&o);
  CHECK(pagedjit_validate(&a, &o) == PAGEDJIT_OK);
  CHECK(strcmp(pagedjit_last_error(), "") == 0);
  CHECK(pagedjit_validate(&a, NULL) == PAGEDJIT_OK);

  a.query.rank = 2; /* the query must be [num_seqs, num_heads, head_dim] */
  CHECK(pagedjit_validate(&a, &o) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
  printf("refused: %s\n", pagedjit_last_error());
  CHECK(contains(pagedjit_last_error(), "'query'"));

  a = seed_args(q, kv, kv, lens, table, out);
  a.key_cache.shape[2] = a.value_cache.shape[2] = 12; /* page size not a power of two */
  CHECK(pagedjit_validate(&a, &o) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
  CHECK(contains(pagedjit_last_error(), "'key_cache'") && contains(pagedjit_last_error(), "page_size"));

  a = seed_args(q, kv, kv, lens, table, out);
  a.output.dtype = 17;
  CHECK(pagedjit_validate(&a, &o) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
  CHECK(contains(pagedjit_last_error(), "'output.dtype'"));

  a = seed_args(q, kv, kv, lens, table, out);
  a.layout = 3;
  CHECK(pagedjit_validate(&a, &o) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
  CHECK(contains(pagedjit_last_error(), "'args.layout'"));

  a = seed_args(q, kv, kv, lens, table, out);
  o.num_splits = -3;
  CHECK(pagedjit_validate(&a, &o) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
  CHECK(contains(pagedjit_last_error(), "'options.num_splits'"));

  pagedjit_options_init(&o);
  o.megacore_mode = "parallel";
  CHECK(pagedjit_validate(&a, &o) == PAGEDJIT_ERROR_NOT_SUPPORTED);
  CHECK(contains(pagedjit_last_error(), "'options.megacore_mode'"));

  pagedjit_options_init(&o);
  o.return_lse = 1; /* without an lse tensor */
  CHECK(pagedjit_validate(&a, &o) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
  CHECK(contains(pagedjit_last_error(), "'lse'"));

  CHECK(pagedjit_validate(NULL, NULL) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
  CHECK(contains(pagedjit_last_error(), "'args'"));
  CHECK(pagedjit_paged_attention(NULL, &a, NULL, NULL) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
  CHECK(contains(pagedjit_last_error(), "'engine'"));
  int64_t bytes = -1;
  CHECK(pagedjit_workspace_bytes(NULL, &a, NULL, &bytes) == PAGEDJIT_ERROR_INVALID_ARGUMENT && bytes == 0);
  CHECK(pagedjit_engine_create(0, NULL) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
  CHECK(contains(pagedjit_last_error(), "'out'"));

  pagedjit_tensor t;
  const int64_t shape5[5] = {1, 1, 1, 1, 1};
  CHECK(pagedjit_tensor_init(&t, q, PAGEDJIT_F32, 5, shape5) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
  CHECK(pagedjit_tensor_init(&t, q, PAGEDJIT_F32, 3, shape5) == PAGEDJIT_OK);
  CHECK(t.strides[0] == 1 && t.strides[2] == 1 && t.rank == 3);
  pagedjit_engine_destroy(NULL);
}

/* ------------------------------------------------------------ with a GPU */

/* The few driver calls the test needs, taken from libcuda itself (the engine
 * has made its device's primary context current on this thread). */
typedef int (*mem_alloc_fn)(unsigned long long*, size_t);
typedef int (*mem_free_fn)(unsigned long long);
typedef int (*htod_fn)(unsigned long long, const void*, size_t);
typedef int (*dtoh_fn)(void*, unsigned long long, size_t);
typedef int (*sync_fn)(void);

static void* symbol(void* lib, const char* name) {
  void* p = dlsym(lib, name);
  if (!p) fprintf(stderr, "libcuda has no %s\n", name);
  return p;
}

static int run_seed_example(pagedjit_engine* engine) {
  const char* path = getenv("PAGEDJIT_LIBCUDA");
  void* lib = dlopen(path && *path ? path : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  mem_alloc_fn alloc;
  mem_free_fn release;
  htod_fn htod;
  dtoh_fn dtoh;
  sync_fn sync;
  void* p;
  if (!lib) return fprintf(stderr, "dlopen libcuda: %s\n", dlerror()), 0;
  /* memcpy: ISO C has no cast from object to function pointers. */
  if (!(p = symbol(lib, "cuMemAlloc_v2"))) return 0;
  memcpy(&alloc, &p, sizeof p);
  if (!(p = symbol(lib, "cuMemFree_v2"))) return 0;
  memcpy(&release, &p, sizeof p);
  if (!(p = symbol(lib, "cuMemcpyHtoD_v2"))) return 0;
  memcpy(&htod, &p, sizeof p);
  if (!(p = symbol(lib, "cuMemcpyDtoH_v2"))) return 0;
  memcpy(&dtoh, &p, sizeof p);
  if (!(p = symbol(lib, "cuCtxSynchronize"))) return 0;
  memcpy(&sync, &p, sizeof p);

  static host_problem h;
  static float got[SEQS * HEADS * DIM];
  static double want[SEQS * HEADS * DIM];
  fill(&h);
  reference(&h, want);
  const size_t sizes[6] = {sizeof h.q, sizeof h.k, sizeof h.v, sizeof h.lens, sizeof h.table, sizeof got};
  const void* src[5] = {h.q, h.k, h.v, h.lens, h.table};
  unsigned long long dev[6] = {0};
  int ok = 1;
  for (int i = 0; i < 6 && ok; ++i)
    ok = alloc(&dev[i], sizes[i]) == 0 && (i == 5 || htod(dev[i], src[i], sizes[i]) == 0);
  CHECK(ok);
  for (int splits = 0; ok && splits <= 2; splits += 2) {
    pagedjit_args a = seed_args((void*)(size_t)dev[0], (void*)(size_t)dev[1], (void*)(size_t)dev[2],
                                (void*)(size_t)dev[3], (void*)(size_t)dev[4], (void*)(size_t)dev[5]);
    pagedjit_options o;
    pagedjit_options_init(&o);
    o.num_splits = splits;
    const pagedjit_status st = pagedjit_paged_attention(engine, &a, &o, NULL);
    if (st != PAGEDJIT_OK)
      fprintf(stderr, "paged_attention: %s: %s\n", pagedjit_status_name(st), pagedjit_last_error());
    CHECK(st == PAGEDJIT_OK);
    CHECK(sync() == 0 && dtoh(got, dev[5], sizeof got) == 0);
    double err = 0, norm = 0;
    int nonfinite = 0;
    for (int i = 0; i < SEQS * HEADS * DIM; ++i) {
      nonfinite += !isfinite(got[i]);
      err += (got[i] - want[i]) * (got[i] - want[i]);
      norm += want[i] * want[i];
    }
    const double rel = sqrt(err / norm);
    printf("seed example fp32, num_splits=%d: rel L2 %.2e, non-finite %d vs CPU -> %s\n", splits, rel, nonfinite,
           st == PAGEDJIT_OK && nonfinite == 0 && rel < 1e-4 ? "PASS" : "FAIL");
    CHECK(st == PAGEDJIT_OK && nonfinite == 0 && rel < 1e-4);
  }
  for (int i = 0; i < 6; ++i)
    if (dev[i]) release(dev[i]);
  return 1;
}

static void test_engine(const char* expect_driver) {
  pagedjit_engine* engine = (pagedjit_engine*)&failures; /* must be reset on failure */
  const pagedjit_status st = pagedjit_engine_create(0, &engine);
  const int devices = pagedjit_device_count();
  printf("pagedjit_device_count() = %d, pagedjit_engine_create(0) = %s%s%s\n", devices, pagedjit_status_name(st),
         st ? ": " : "", pagedjit_last_error());
  if (expect_driver) {
    CHECK(strcmp(pagedjit_status_name(st), expect_driver) == 0);
    CHECK(engine == NULL && pagedjit_last_error()[0] != 0);
    return;
  }
  if (devices == 0) {
    CHECK(st == PAGEDJIT_ERROR_DRIVER_NOT_FOUND || st == PAGEDJIT_ERROR_STUB_LIBRARY ||
          st == PAGEDJIT_ERROR_NO_DEVICE || st == PAGEDJIT_ERROR_DRIVER_TOO_OLD || st == PAGEDJIT_ERROR_DRIVER);
    CHECK(engine == NULL && pagedjit_last_error()[0] != 0);
    printf("GPU part: SKIPPED (no GPU)\n");
    return;
  }
  CHECK(st == PAGEDJIT_OK && engine != NULL);
  if (st == PAGEDJIT_OK) {
    CHECK(run_seed_example(engine));
    pagedjit_engine_destroy(engine);
  }
}

/* pagedjit_merge_attention_states' arguments, checked without a device. */
static void test_merge_validation(void) {
  const int64_t rows_dim[3] = {SEQS, HEADS, DIM};
  pagedjit_merge_args m;
  memset(&m, 0, sizeof m);
  pagedjit_tensor_init(&m.out_a, (void*)0x100000, PAGEDJIT_BF16, 3, rows_dim);
  pagedjit_tensor_init(&m.out_b, (void*)0x200000, PAGEDJIT_BF16, 3, rows_dim);
  pagedjit_tensor_init(&m.out, (void*)0x300000, PAGEDJIT_F32, 3, rows_dim);
  pagedjit_tensor_init(&m.lse_a, (void*)0x400000, PAGEDJIT_F32, 2, rows_dim);
  pagedjit_tensor_init(&m.lse_b, (void*)0x500000, PAGEDJIT_F32, 2, rows_dim);
  CHECK(pagedjit_validate_merge(&m) == PAGEDJIT_OK);
  m.out_b.dtype = PAGEDJIT_F16; /* out_b must have out_a's dtype */
  CHECK(pagedjit_validate_merge(&m) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
  CHECK(contains(pagedjit_last_error(), "'out_b'"));
  m.out_b.dtype = PAGEDJIT_BF16;
  m.lse_b.shape[1] = HEADS + 1;
  CHECK(pagedjit_validate_merge(&m) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
  CHECK(contains(pagedjit_last_error(), "'lse_b'"));
  CHECK(pagedjit_validate_merge(NULL) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
  CHECK(pagedjit_merge_attention_states(NULL, &m, NULL) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
  CHECK(contains(pagedjit_last_error(), "'engine'"));
}

int main(int argc, char** argv) {
  const char* expect_driver = NULL;
  if (argc == 3 && strcmp(argv[1], "--expect-driver") == 0) expect_driver = argv[2];
  test_version_and_names();
  test_options_defaults();
  test_refused_calls();
  test_merge_validation();
  test_engine(expect_driver);
  printf("%d checks, %d failed: %s\n", checks, failures, failures ? "FAILED" : "OK");
  return failures ? 1 : 0;
}
