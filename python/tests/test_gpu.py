"""GPU tests against a float64 reference: dtypes, layouts, options, lse and merging, fp8 caches, the
__cuda_array_interface__ and DLPack paths, CUDA graph capture and torch.compile; ragged steps with sinks,
append_kv and a captured serving step. Outputs given to the engine
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
                          (*a, None, None, None, 0, None, None, None, 0, None, None, None, None, True, False, None,
                           True, None))


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


# ------------------------------------------------------------ ragged steps, sinks and append_kv

def make_ragged(q_lens, lens, dtype="float16", layout="blocks_heads", heads=8, kv_heads=2, dim=128, seed=0,
                cache_dtype=None):
    """A ragged step: make_problem's caches and tables for context lengths `lens` (this step's tokens included),
    a packed query of sum(q_lens) rows and query_start."""
    p, layout = make_problem(seqs=len(lens), heads=heads, kv_heads=kv_heads, dim=dim, lens=lens, dtype=dtype,
                             layout=layout, seed=seed, cache_dtype=cache_dtype)
    g = torch.Generator(device="cpu").manual_seed(seed + 100)
    starts = [0]
    for n in q_lens:
        starts.append(starts[-1] + n)
    p["query"] = torch.randn(starts[-1], heads, dim, generator=g).to(getattr(torch, dtype)).cuda()
    p["query_start"] = torch.tensor(starts, dtype=torch.int32, device="cuda")
    return p, layout


def ragged_args(p):
    return [p[n] for n in ("query", "query_start", "key_cache", "value_cache", "context_lens", "block_tables")]


def reference_ragged(p, layout="blocks_heads", sinks=None, attn_scale=None, seqs=None):
    """(out, lse) in float64 for a ragged step: query token i of sequence s (q_len rows) sits at position
    context_len - q_len + i and sees the keys up to it; a sink joins each softmax denominator. Rows of sequences
    past `seqs` stay 0 / -inf."""
    q = p["query"].double().cpu()
    tokens, heads, dim = q.shape
    k = to_blocks_heads(p["key_cache"].cpu(), layout).double()
    v = to_blocks_heads(p["value_cache"].cpu(), layout).double()
    kv_heads, page = k.shape[1], k.shape[2]
    scale = 1 / math.sqrt(dim) if attn_scale is None else attn_scale
    out = torch.zeros(tokens, heads, dim, dtype=torch.float64)
    lse = torch.full((tokens, heads), -math.inf, dtype=torch.float64)
    starts, lens = p["query_start"].cpu().tolist(), p["context_lens"].cpu().tolist()
    table = p["block_tables"].cpu()
    for s, n in enumerate(lens[:seqs]):
        a, b = starts[s], starts[s + 1]
        if a == b:
            continue
        used = table[s, :-(-n // page)].long()
        keys = k[used].permute(1, 0, 2, 3).reshape(kv_heads, -1, dim)[:, :n].repeat_interleave(heads // kv_heads, 0)
        vals = v[used].permute(1, 0, 2, 3).reshape(kv_heads, -1, dim)[:, :n].repeat_interleave(heads // kv_heads, 0)
        logits = torch.einsum("thd,hnd->htn", q[a:b], keys) * scale  # [heads, q_len, n]
        pos = n - (b - a) + torch.arange(b - a)
        logits.masked_fill_(torch.arange(n)[None, :] > pos[:, None], -math.inf)
        full = logits
        if sinks is not None:
            full = torch.cat([logits, sinks.double().cpu()[:, None, None].expand(heads, b - a, 1)], dim=2)
        l_ = torch.logsumexp(full, dim=2)  # [heads, q_len]
        out[a:b] = torch.einsum("htn,hnd->thd", torch.exp(logits - l_[..., None]), vals)
        lse[a:b] = l_.T
    return out, lse


Q_LENS, LENS = (1, 0, 300, 4, 7, 1), (17, 64, 350, 1000, 7, 2000)  # a decode, an idle slot, a chunk, drafts, ...


@pytest.mark.parametrize("dtype,with_sinks", [("float16", False), ("bfloat16", True), ("float32", True)])
def test_ragged_against_the_reference(dtype, with_sinks):
    p, layout = make_ragged(Q_LENS, LENS, dtype=dtype)
    sinks = torch.linspace(-2.0, 3.0, 8, device="cuda") if with_sinks else None
    want, want_lse = reference_ragged(p, sinks=sinks)
    out, lse = poisoned(p["query"].shape, getattr(torch, dtype)), poisoned(p["query"].shape[:-1], torch.float32)
    got, got_lse = pagedjit.ragged_paged_attention(*ragged_args(p), sinks=sinks, max_query_len=max(Q_LENS),
                                                   return_lse=True, out=out, lse=lse)
    assert got is out and got_lse is lse
    assert_close(out, want, TOL[dtype], "ragged %s" % dtype)
    assert_close(lse, want_lse, 1e-3, "ragged lse %s" % dtype)
    fresh = pagedjit.ragged_paged_attention(*ragged_args(p), sinks=sinks, out_dtype=torch.float32)
    assert fresh.dtype == torch.float32 and fresh.shape == p["query"].shape
    assert_close(fresh, want, TOL[dtype], "ragged %s, fp32 out, no max_query_len" % dtype)


def test_ragged_layouts_and_the_cuda_array_interface():
    p, layout = make_ragged((3, 1, 40), (3, 90, 41), layout="blocks_tokens")
    want, _ = reference_ragged(p, layout)
    assert_close(pagedjit.ragged_paged_attention(*ragged_args(p), layout=layout), want, TOL["float16"], layout)
    out = poisoned(p["query"].shape, torch.float16)
    wrapped = [CudaArray(t) for t in ragged_args(p)]
    ws_bytes = pagedjit.ragged_workspace_bytes(*wrapped, layout=layout, num_splits=4)
    ws = torch.zeros(max(-(-ws_bytes // 16) * 16, 16), dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    got = pagedjit.ragged_paged_attention(*wrapped, layout=layout, num_splits=4, out=CudaArray(out),
                                          workspace=CudaArray(ws.view(torch.int32)),
                                          stream=torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    assert isinstance(got, CudaArray)
    assert_close(out, want, TOL["float16"], "ragged through __cuda_array_interface__")


def test_ragged_decode_step_matches_paged_attention():
    p, layout = make_problem(dtype="bfloat16", lens=(4000, 100, 2500, 17, 900))
    sinks = torch.full((8,), 0.5, device="cuda")
    paged, paged_lse = pagedjit.paged_attention(*args(p), sinks=sinks, return_lse=True)
    want, _ = reference_ragged(dict(p, query_start=torch.arange(6, dtype=torch.int32)), sinks=sinks)
    assert_close(paged, want, TOL["bfloat16"], "paged_attention with sinks")
    starts = torch.arange(6, dtype=torch.int32, device="cuda")
    ragged, ragged_lse = pagedjit.ragged_paged_attention(p["query"], starts, *args(p)[1:], sinks=sinks,
                                                         max_query_len=1, return_lse=True)
    assert_close(ragged, paged.double().cpu(), TOL["bfloat16"], "ragged decode vs paged")
    assert_close(ragged_lse, paged_lse.double().cpu(), 1e-4, "ragged decode lse vs paged")


def cache_slot(cache, layout, page, slot):
    """The [num_kv_heads, head_dim] view of one token's slot."""
    if layout == "heads_blocks":
        return cache[:, page, slot]
    if layout == "blocks_tokens":
        return cache[page, slot]
    return cache[page, :, slot]


def new_token_slots(p, q_lens, layout):
    """[(row, page, slot)] where each new token of the step goes."""
    page_size = to_blocks_heads(p["key_cache"], layout).shape[2]
    table, lens = p["block_tables"].cpu(), p["context_lens"].cpu().tolist()
    rows, row = [], 0
    for s, (ql, n) in enumerate(zip(q_lens, lens)):
        for i in range(ql):
            t = n - ql + i
            rows.append((row, int(table[s, t // page_size]), t % page_size))
            row += 1
    return rows


@pytest.mark.parametrize("layout", ["blocks_heads", "heads_blocks", "blocks_tokens"])
def test_append_kv_then_attention_round_trip(layout):
    """The step's keys and values taken out of a full cache and appended back give the same cache bit for bit, and
    the attention over it the same output."""
    q_lens, lens = (1, 0, 300, 4), (17, 64, 350, 1000)
    full, layout = make_ragged(q_lens, lens, layout=layout)
    slots = new_token_slots(full, q_lens, layout)
    kc, vc = full["key_cache"].cpu(), full["value_cache"].cpu()
    keys = torch.stack([cache_slot(kc, layout, pg, sl) for _, pg, sl in slots]).cuda()
    values = torch.stack([cache_slot(vc, layout, pg, sl) for _, pg, sl in slots]).cuda()
    for _, pg, sl in slots:  # what the step has not written yet
        cache_slot(kc, layout, pg, sl).fill_(float("nan"))
        cache_slot(vc, layout, pg, sl).fill_(float("nan"))
    step = dict(full, key_cache=kc.cuda(), value_cache=vc.cuda())
    assert pagedjit.append_kv(keys, values, step["query_start"], step["context_lens"], step["block_tables"],
                              step["key_cache"], step["value_cache"], layout=layout) is None
    assert torch.equal(step["key_cache"], full["key_cache"]) and torch.equal(step["value_cache"], full["value_cache"])
    decode = {k: step[k] for k in ("key_cache", "value_cache", "context_lens", "block_tables")}
    decode["query"] = torch.randn(len(lens), 8, 128, device="cuda").half()
    want, _ = reference(decode, layout)
    assert_close(pagedjit.paged_attention(*args(decode), layout=layout), want, TOL["float16"], "after append_kv")
    want, _ = reference_ragged(step, layout)
    assert_close(pagedjit.ragged_paged_attention(*ragged_args(step), layout=layout), want, TOL["float16"],
                 "ragged after append_kv")


def test_append_kv_fp8_with_scales_and_seq_count():
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 caches need sm_89+")
    q_lens, lens = (2, 5, 1), (40, 5, 33)
    p, layout = make_ragged(q_lens, lens, dtype="bfloat16", cache_dtype="float8_e4m3fn")
    tokens = sum(q_lens)
    g = torch.Generator(device="cpu").manual_seed(7)
    keys = torch.randn(tokens, 2, 128, generator=g).bfloat16().cuda()
    values = torch.randn(tokens, 2, 128, generator=g).bfloat16().cuda()
    k_scale = torch.tensor([0.5, 2.0], device="cuda")
    v_scale = torch.tensor([1.5], device="cuda")
    before_k, before_v = p["key_cache"].clone(), p["value_cache"].clone()
    seq_count = torch.tensor([2], dtype=torch.int32, device="cuda")  # the third sequence is not written
    pagedjit.append_kv(keys, values, p["query_start"], p["context_lens"], p["block_tables"], p["key_cache"],
                       p["value_cache"], k_scale=k_scale, v_scale=v_scale, seq_count=seq_count)
    want_k, want_v = before_k.view(torch.uint8).clone(), before_v.view(torch.uint8).clone()
    qk = (keys.float() / k_scale[None, :, None]).to(torch.float8_e4m3fn).view(torch.uint8)
    qv = (values.float() / v_scale).to(torch.float8_e4m3fn).view(torch.uint8)
    for row, pg, sl in new_token_slots(p, q_lens, layout)[:q_lens[0] + q_lens[1]]:
        want_k[pg, :, sl], want_v[pg, :, sl] = qk[row], qv[row]
    assert torch.equal(p["key_cache"].view(torch.uint8), want_k)
    assert torch.equal(p["value_cache"].view(torch.uint8), want_v)


def test_cuda_graph_of_a_ragged_step_replayed_with_new_starts_and_lengths():
    """append_kv + ragged attention captured once (bf16, max_query_len 64), replayed with other query_start,
    context_lens and seq_count; rows of the sequences seq_count leaves out keep what was there."""
    q_lens, lens = (1, 64, 0, 5), (900, 300, 400, 300)  # replays stay within each sequence's pages
    p, layout = make_ragged(q_lens, lens, dtype="bfloat16")
    tokens = p["query"].shape[0]
    static = {k: v.clone() for k, v in p.items()}
    static["keys"] = torch.zeros(tokens, 2, 128, dtype=torch.bfloat16, device="cuda")
    static["values"] = torch.zeros_like(static["keys"])
    static["seq_count"] = torch.tensor([4], dtype=torch.int32, device="cuda")
    static["sinks"] = torch.full((8,), 1.0, device="cuda")
    out = torch.empty_like(static["query"])

    def step():
        pagedjit.append_kv(static["keys"], static["values"], static["query_start"], static["context_lens"],
                           static["block_tables"], static["key_cache"], static["value_cache"],
                           seq_count=static["seq_count"])
        pagedjit.ragged_paged_attention(*ragged_args(static), max_query_len=64, seq_count=static["seq_count"],
                                        sinks=static["sinks"], out=out)

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm up: compiles the kernels outside the capture
        step()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    g = torch.Generator(device="cpu").manual_seed(3)
    for new_q_lens, new_lens, count in (((2, 3, 64, 1), (700, 3, 120, 18), 4), ((64, 0, 1, 4), (64, 51, 300, 21), 3)):
        starts = [0]
        for n in new_q_lens:
            starts.append(starts[-1] + n)
        used = starts[count]
        static["query"].copy_(torch.randn(tokens, 8, 128, generator=g).bfloat16())
        static["keys"].copy_(torch.randn(tokens, 2, 128, generator=g).bfloat16())
        static["values"].copy_(torch.randn(tokens, 2, 128, generator=g).bfloat16())
        static["query_start"].copy_(torch.tensor(starts, dtype=torch.int32))
        static["context_lens"].copy_(torch.tensor(new_lens, dtype=torch.int32))
        static["seq_count"].fill_(count)
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        check = {k: static[k] for k in ("query", "query_start", "key_cache", "value_cache", "context_lens",
                                        "block_tables")}
        for row, pg, sl in new_token_slots(check, new_q_lens, layout)[:used]:
            assert torch.equal(static["key_cache"][pg, :, sl], static["keys"][row]), ("append_kv replay", row)
        want, _ = reference_ragged(check, sinks=static["sinks"], seqs=count)
        assert_close(out[:used], want[:used], TOL["bfloat16"], "graph replay %s" % (new_q_lens,))
        assert torch.isnan(out[used:].float()).all(), "rows of sequences past seq_count were written"


def test_opcheck_ragged_and_append_kv():
    p, layout = make_ragged((3, 1, 20), (3, 40, 41))
    ragged = ragged_args(p)
    torch.library.opcheck(torch.ops.pagedjit.ragged_paged_attention.default,
                          (*ragged, None, None, None, None, 0, 20, None, None, None, 0, None, None, None, None, True,
                           False, None, True, None))
    keys = torch.randn(24, 2, 128, device="cuda").half()
    torch.library.opcheck(torch.ops.pagedjit.append_kv.default,
                          (keys, keys.clone(), p["query_start"], p["context_lens"], p["block_tables"],
                           p["key_cache"], p["value_cache"], None, None, None, 0))
