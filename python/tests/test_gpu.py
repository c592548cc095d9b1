"""GPU tests against a float64 reference: dtypes, layouts, options, lse and merging, fp8 caches, the
__cuda_array_interface__ and DLPack paths, CUDA graph capture and torch.compile. Outputs given to the engine
are poisoned (NaN) first, so an element left unwritten fails."""
import math

import pytest

import pagedjit

try:  # collected without torch too (then conftest.py skips every test here, saying why)
    import torch
except ImportError:
    torch = None

pytestmark = pytest.mark.gpu

TOL = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 3e-2}  # relative L2 error against float64


# ------------------------------------------------------------ problems and the reference

def to_blocks_heads(cache, layout):
    if layout == "heads_blocks":
        return cache.permute(1, 0, 2, 3)
    if layout == "blocks_tokens":
        return cache.permute(0, 2, 1, 3)
    return cache


def make_problem(seqs=5, heads=8, kv_heads=2, dim=128, page=16, lens=(1, 17, 300, 64, 1000), dtype="float16",
                 layout="blocks_heads", q_len=None, spare_pages=7, seed=0, cache_dtype=None):
    """A problem on the GPU; dtypes by torch name ("float16")."""
    dtype = getattr(torch, dtype)
    cache_dtype = getattr(torch, cache_dtype) if cache_dtype else None
    g = torch.Generator(device="cpu").manual_seed(seed)
    lens = list(lens)[:seqs]
    blocks = [-(-n // page) for n in lens]
    pages = sum(blocks) + spare_pages
    max_blocks = max(blocks) + 2
    qshape = (seqs, heads, dim) if q_len is None else (seqs, q_len, heads, dim)
    q = torch.randn(qshape, generator=g)
    shape = {"blocks_heads": (pages, kv_heads, page, dim), "heads_blocks": (kv_heads, pages, page, dim),
             "blocks_tokens": (pages, page, kv_heads, dim)}[layout]
    k, v = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    table = torch.full((seqs, max_blocks), -1, dtype=torch.int32)
    order = torch.randperm(pages, generator=g).tolist()  # pages in a random order
    it = iter(order)
    for s, n in enumerate(blocks):
        for b in range(n):
            table[s, b] = next(it)
    cdt = cache_dtype or dtype
    return dict(query=q.to(dtype).cuda(), key_cache=k.to(cdt).cuda(), value_cache=v.to(cdt).cuda(),
                context_lens=torch.tensor(lens, dtype=torch.int32).cuda(), block_tables=table.cuda()), layout


def reference(p, layout="blocks_heads", attn_scale=None, soft_cap=None, window=None, k_scale=None, v_scale=None):
    """(out, lse) in float64: softmax(scale q k^T [capped]) v over each sequence's pages; query token i of q_len
    sees positions up to len - q_len + i; lse is the natural-log sum-exp of the scaled (capped) logits."""
    q = p["query"].double().cpu()
    four_d = q.dim() == 4
    if not four_d:
        q = q[:, None]
    seqs, q_len, heads, dim = q.shape
    k = to_blocks_heads(p["key_cache"].cpu(), layout).double()
    v = to_blocks_heads(p["value_cache"].cpu(), layout).double()
    kv_heads, page = k.shape[1], k.shape[2]
    if k_scale is not None:
        k = k * k_scale.double().cpu().reshape(-1, 1, 1).expand(kv_heads, 1, 1)
        v = v * v_scale.double().cpu().reshape(-1, 1, 1).expand(kv_heads, 1, 1)
    scale = 1 / math.sqrt(dim) if attn_scale is None else attn_scale
    out = torch.zeros(seqs, q_len, heads, dim, dtype=torch.float64)
    lse = torch.full((seqs, q_len, heads), -math.inf, dtype=torch.float64)
    lens, table = p["context_lens"].cpu().tolist(), p["block_tables"].cpu()
    for s, n in enumerate(lens):
        used = table[s, :-(-n // page)].long()
        keys = k[used].permute(1, 0, 2, 3).reshape(kv_heads, -1, dim)[:, :n]
        vals = v[used].permute(1, 0, 2, 3).reshape(kv_heads, -1, dim)[:, :n]
        keys = keys.repeat_interleave(heads // kv_heads, 0)
        vals = vals.repeat_interleave(heads // kv_heads, 0)
        for t in range(q_len):
            last = n - q_len + t  # the last position this token sees
            start = 0 if window is None else max(0, last + 1 - window)
            logits = torch.einsum("hd,htd->ht", q[s, t], keys[:, start:last + 1]) * scale
            if soft_cap is not None:
                logits = soft_cap * torch.tanh(logits / soft_cap)
            lse[s, t] = torch.logsumexp(logits, dim=1)
            out[s, t] = torch.einsum("ht,htd->hd", torch.softmax(logits, dim=1), vals[:, start:last + 1])
    if not four_d:
        out, lse = out[:, 0], lse[:, 0]
    return out, lse


def assert_close(got, want, tol, what=""):
    got = got.double().cpu()
    assert torch.isfinite(got).all(), "%s: %d non-finite elements" % (what, (~torch.isfinite(got)).sum())
    rel = ((got - want).norm() / want.norm()).item()
    assert rel < tol, "%s: relative L2 error %.3g >= %.3g (max abs %.3g)" % (what, rel, tol,
                                                                           (got - want).abs().max().item())


def poisoned(shape, dtype):
    return torch.full(shape, float("nan"), dtype=dtype, device="cuda")


def args(p):
    return [p[n] for n in ("query", "key_cache", "value_cache", "context_lens", "block_tables")]


# ------------------------------------------------------------ the call

@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("layout", ["blocks_heads", "heads_blocks", "blocks_tokens"])
def test_dtypes_and_layouts(dtype, layout):
    p, layout = make_problem(dtype=dtype, layout=layout)
    want, _ = reference(p, layout)
    out = pagedjit.paged_attention(*args(p), layout=layout)
    assert out.shape == p["query"].shape and out.dtype == getattr(torch, dtype)
    assert_close(out, want, TOL[dtype], "%s %s" % (dtype, layout))


@pytest.mark.parametrize("num_splits", [0, 1, 3])
def test_options_lse_and_poisoned_out(num_splits):
    p, layout = make_problem(dtype="bfloat16", heads=28, kv_heads=4, lens=(2000, 5, 700, 129, 4096))
    want, want_lse = reference(p, attn_scale=0.07, soft_cap=30.0, window=512)
    out, lse = poisoned(p["query"].shape, torch.float32), poisoned(p["query"].shape[:-1], torch.float32)
    got, got_lse = pagedjit.paged_attention(*args(p), attn_scale=0.07, attn_logits_soft_cap=30.0,
                                            sliding_window=512, num_splits=num_splits, max_context_len=4096,
                                            return_lse=True, out=out, lse=lse)
    assert got is out and got_lse is lse
    assert_close(out, want, 5e-3, "bf16 in, fp32 out")
    assert_close(lse, want_lse, 1e-3, "lse")
    fresh, fresh_lse = pagedjit.paged_attention(*args(p), attn_scale=0.07, attn_logits_soft_cap=30.0,
                                                sliding_window=512, num_splits=num_splits, return_lse=True,
                                                out_dtype=torch.float32)
    assert torch.equal(fresh, out) and torch.equal(fresh_lse, lse)


def test_multi_token_query():
    p, layout = make_problem(dtype="float16", q_len=4, lens=(40, 300, 4, 17, 1000))
    want, want_lse = reference(p)
    out, lse = pagedjit.paged_attention(*args(p), return_lse=True)
    assert out.shape == p["query"].shape and lse.shape == p["query"].shape[:-1]
    assert_close(out, want, TOL["float16"], "q_len 4")
    assert_close(lse, want_lse, 1e-3, "q_len 4 lse")


@pytest.mark.parametrize("cache_dtype", ["float8_e4m3fn", "float8_e5m2"])
def test_fp8_cache_with_scales(cache_dtype):
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 caches need sm_89+")
    p, layout = make_problem(dtype="bfloat16", cache_dtype=cache_dtype, kv_heads=2)
    k_scale = torch.tensor([0.5, 2.0], dtype=torch.float32, device="cuda")
    v_scale = torch.tensor([1.5], dtype=torch.float32, device="cuda")
    want, _ = reference(p, k_scale=k_scale, v_scale=v_scale.expand(2))
    out = pagedjit.paged_attention(*args(p), k_scale=k_scale, v_scale=v_scale)
    assert_close(out, want, 3e-2, cache_dtype)


def test_batch_invariant_and_kernel_config():
    p, layout = make_problem(dtype="float16", lens=(5000, 3, 1600, 64, 9000))
    want, _ = reference(p)
    a = pagedjit.paged_attention(*args(p), batch_invariant=True)
    assert_close(a, want, TOL["float16"], "batch_invariant")
    one = dict(p, **{k: p[k][2:3] for k in ("query", "context_lens", "block_tables")})  # sequence 2 alone
    b = pagedjit.paged_attention(*args(one), batch_invariant=True)
    assert torch.equal(a[2:3], b), "batch_invariant: a sequence's output changed with the batch"
    c = pagedjit.paged_attention(*args(p), kernel_config={"tile_tokens": 32, "warps": 2, "stages": 2})
    assert_close(c, want, TOL["float16"], "kernel_config")


def test_merge_two_halves_equals_the_whole():
    """Attention over a prefix and over the rest, merged, is attention over everything."""
    p, layout = make_problem(dtype="float16", lens=(512, 256, 1024, 64, 768), page=16)
    want, want_lse = reference(p)
    prefix = {k: v.clone() for k, v in p.items()}
    suffix = {k: v.clone() for k, v in p.items()}
    lens = p["context_lens"]
    cut = (lens // 2 // 16 * 16).clamp(min=16)  # page-aligned split points
    prefix["context_lens"] = cut.to(torch.int32)
    suffix["context_lens"] = (lens - cut).to(torch.int32)
    n_pre = (cut // 16).tolist()
    table = p["block_tables"]
    shifted = torch.full_like(table, -1)
    for s, n in enumerate(n_pre):
        rest = table[s, n:]
        shifted[s, :rest.numel()] = rest
    suffix["block_tables"] = shifted
    oa, la = pagedjit.paged_attention(*args(prefix), return_lse=True)
    ob, lb = pagedjit.paged_attention(*args(suffix), return_lse=True)
    out, lse = pagedjit.merge_attention_states(oa, la, ob, lb, out_dtype=torch.float32, return_lse=True)
    assert_close(out, want, TOL["float16"], "merged")
    assert_close(lse, want_lse, 1e-3, "merged lse")
    into = poisoned(oa.shape, torch.float16)
    pagedjit.merge_attention_states(oa, la, ob, lb, out=into)
    assert_close(into, want, TOL["float16"], "merged into out")


# ------------------------------------------------------------ other frameworks' objects

class CudaArray:
    """Only __cuda_array_interface__ (as CuPy or Numba would give)."""

    def __init__(self, t):
        self.t = t
        self.__cuda_array_interface__ = t.__cuda_array_interface__


class DLPackOnly:
    def __init__(self, t):
        self.t = t

    def __dlpack__(self, stream=None):
        return self.t.__dlpack__()


@pytest.mark.parametrize("wrap", [CudaArray, DLPackOnly])
def test_cuda_array_interface_and_dlpack(wrap):
    p, layout = make_problem(dtype="float16")
    want, _ = reference(p)
    out = poisoned(p["query"].shape, torch.float16)
    ws_bytes = pagedjit.workspace_bytes(*[wrap(t) for t in args(p)], num_splits=4)
    assert isinstance(ws_bytes, int) and ws_bytes >= 0
    ws = torch.zeros(max(-(-ws_bytes // 16) * 16, 16), dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    got = pagedjit.paged_attention(*[wrap(t) for t in args(p)], out=wrap(out), num_splits=4,
                                   workspace=CudaArray(ws.view(torch.int32)) if wrap is CudaArray else None,
                                   stream=torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    assert isinstance(got, wrap)
    assert_close(out, want, TOL["float16"], wrap.__name__)


def test_errors_on_the_gpu_path():
    p, layout = make_problem()
    bad = dict(p, context_lens=p["context_lens"].to(torch.int64))
    with pytest.raises(pagedjit.InvalidArgumentError, match="context_lens"):
        pagedjit.paged_attention(*args(bad))
    with pytest.raises(pagedjit.InvalidArgumentError, match="dtype"):
        pagedjit.paged_attention(*args(dict(p, query=p["query"].double())))
    with pytest.raises(pagedjit.InvalidArgumentError, match="host memory"):
        pagedjit.paged_attention(*[t.cpu() for t in args(p)])


# ------------------------------------------------------------ torch integration

def test_opcheck():
    p, layout = make_problem(dtype="float16", lens=(300, 17))
    a = args(dict(p, **{k: p[k][:2] for k in ("query", "context_lens", "block_tables")}))
    torch.library.opcheck(torch.ops.pagedjit.paged_attention.default,
                          (*a, None, None, 0, None, None, None, 0, None, None, None, None, True, False, None, True,
                           None))


def test_cuda_graph_capture_and_replay():
    p, layout = make_problem(dtype="bfloat16", lens=(4000, 100, 2500, 17, 900))
    static = {k: v.clone() for k, v in p.items()}
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm up: compiles the kernels outside the capture
        pagedjit.paged_attention(*args(static))
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = pagedjit.paged_attention(*args(static))
    for seed in (1, 2):
        q, _ = make_problem(dtype="bfloat16", lens=(4000, 100, 2500, 17, 900), seed=seed)
        static["query"].copy_(q["query"])
        static["context_lens"].copy_(torch.tensor([3999, 1, 2500, 16, 901], dtype=torch.int32))
        graph.replay()
        torch.cuda.synchronize()
        want, _ = reference(static)
        assert_close(out, want, TOL["bfloat16"], "graph replay %d" % seed)


def test_torch_compile_without_graph_breaks():
    p, layout = make_problem(dtype="float16")

    def f(q, k, v, lens, table):
        out, lse = pagedjit.torch_ops.paged_attention(q * 2, k, v, lens, table, attn_scale=0.5 / math.sqrt(128),
                                                      return_lse=True)
        return out.float() + 1, lse

    explanation = torch._dynamo.explain(f)(*args(p))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(f, fullgraph=True)
    out, lse = compiled(*args(p))
    want, want_lse = reference(dict(p, query=p["query"] * 2), attn_scale=0.5 / math.sqrt(128))
    assert_close(out - 1, want, TOL["float16"], "compiled")
    assert_close(lse, want_lse, 1e-3, "compiled lse")
