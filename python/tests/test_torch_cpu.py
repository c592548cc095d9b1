"""The torch layer without a GPU: dtype mapping, descriptors of torch tensors, the custom ops' fake
implementations (shapes, dtypes, the engine's validation while tracing) on meta tensors, and torch.compile
tracing them without graph breaks. Skips visibly without torch."""
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (the ctypes layer is tested without it)")
import pagedjit  # noqa: E402
from pagedjit import _capi, _tensors  # noqa: E402

S, H, KVH, D, P, N, MB = 4, 8, 2, 64, 16, 100, 8


def meta(shape, dtype=torch.float16):
    return torch.empty(shape, dtype=dtype, device="meta")


def call_args(dtype=torch.float16, q_len=None, layout_shape=(N, KVH, P, D)):
    q = meta((S, H, D) if q_len is None else (S, q_len, H, D), dtype)
    return [q, meta(layout_shape, dtype), meta(layout_shape, dtype), meta((S,), torch.int32),
            meta((S, MB), torch.int32)]


def test_ops_are_registered():
    for name in ("paged_attention", "paged_attention_out", "merge_attention_states", "merge_attention_states_out"):
        assert hasattr(torch.ops.pagedjit, name), name


def test_torch_dtype_mapping():
    want = {torch.float32: _capi.F32, torch.float16: _capi.F16, torch.bfloat16: _capi.BF16,
            torch.int32: _capi.I32, torch.float8_e4m3fn: _capi.E4M3, torch.float8_e5m2: _capi.E5M2}
    for dtype, code in want.items():
        assert _tensors.torch_dtype_code(dtype) == code
        assert _tensors.describe(torch.zeros(2, dtype=dtype), "x").desc.dtype == code
    for dtype in (torch.float64, torch.int64, torch.uint8):
        with pytest.raises(pagedjit.InvalidArgumentError, match="has no pagedjit_dtype"):
            _tensors.describe(torch.zeros(2, dtype=dtype), "x")


def test_torch_descriptor_keeps_strides_and_offset():
    base = torch.zeros(6, 5, 32, dtype=torch.float16)
    view = base[1:, :, :16].transpose(0, 1)  # [5, 5, 16], strides (32, 160, 1), offset 160 elements
    v = _tensors.describe(view, "x")
    d = v.desc
    assert (d.rank, list(d.shape)[:3], list(d.strides)[:3]) == (3, [5, 5, 16], [32, 160, 1])
    assert d.data == base.data_ptr() + 160 * 2 and v.device == "cpu"


@pytest.mark.parametrize("q_len", [None, 3])
def test_fake_paged_attention_shapes(q_len):
    a = call_args(q_len=q_len)
    out = pagedjit.paged_attention(*a)
    assert out.shape == a[0].shape and out.dtype == torch.float16 and out.device.type == "meta"
    out, lse = pagedjit.paged_attention(*a, return_lse=True, out_dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16 and lse.shape == a[0].shape[:-1] and lse.dtype == torch.float32
    given = meta(a[0].shape, torch.float32)
    assert pagedjit.paged_attention(*a, out=given) is given
    o, l_ = pagedjit.paged_attention(*a, out=given, return_lse=True)
    assert o is given and l_.shape == a[0].shape[:-1]


def test_fake_merge_shapes():
    o = pagedjit.merge_attention_states(meta((S, H, D)), meta((S, H), torch.float32), meta((S, H, D)),
                                        meta((S, H), torch.float32), out_dtype=torch.float32)
    assert o.shape == (S, H, D) and o.dtype == torch.float32
    o, lse = pagedjit.merge_attention_states(meta((S, H, D)), meta((S, H), torch.float32), meta((S, H, D)),
                                             meta((S, H), torch.float32), return_lse=True)
    assert o.dtype == torch.float16 and lse.shape == (S, H)
    with pytest.raises(pagedjit.InvalidArgumentError, match="'lse_b'"):
        pagedjit.merge_attention_states(meta((S, H, D)), meta((S, H), torch.float32), meta((S, H, D)),
                                        meta((S, H + 1), torch.float32))


def test_fake_validates_with_the_engine():
    a = call_args()
    with pytest.raises(pagedjit.InvalidArgumentError, match="'value_cache'"):
        pagedjit.paged_attention(a[0], a[1], meta((N, KVH, P, D + 16)), *a[3:])
    with pytest.raises(pagedjit.InvalidArgumentError, match="'context_lens'"):
        pagedjit.paged_attention(*a[:3], meta((S,), torch.float32), a[4])
    with pytest.raises(pagedjit.NotSupportedError, match="megacore_mode"):
        pagedjit.paged_attention(*a, megacore_mode="parallel")
    with pytest.raises(pagedjit.InvalidArgumentError, match="'options.num_splits'"):
        pagedjit.paged_attention(*a, num_splits=-1)
    with pytest.raises(pagedjit.InvalidArgumentError, match="layout"):
        pagedjit.paged_attention(*a, layout="nhd")
    # the other layouts' shapes pass
    pagedjit.paged_attention(*call_args(layout_shape=(KVH, N, P, D)), layout="heads_blocks")
    pagedjit.paged_attention(*call_args(layout_shape=(N, P, KVH, D)), layout="blocks_tokens")
    k8 = meta((N, KVH, P, D), torch.float8_e4m3fn)
    scale = meta((KVH,), torch.float32)
    pagedjit.paged_attention(a[0], k8, k8, *a[3:], k_scale=scale, v_scale=scale)


def test_host_tensors_are_refused_before_any_launch():
    a = [torch.zeros(t.shape, dtype=t.dtype) for t in call_args()]
    with pytest.raises(pagedjit.InvalidArgumentError, match="host memory"):
        pagedjit.paged_attention(*a)
    with pytest.raises(pagedjit.InvalidArgumentError, match="'workspace'"):
        pagedjit.paged_attention(*a, workspace=torch.zeros(16))


def test_torch_compile_traces_without_graph_breaks():
    def f(q, k, v, lens, table, out):
        o, lse = pagedjit.paged_attention(q * 2, k, v, lens, table, return_lse=True, attn_scale=0.1,
                                          sliding_window=64, kernel_config={"tile_tokens": 64, "warps": 4, "stages": 2})
        pagedjit.paged_attention(q, k, v, lens, table, out=out)
        m = pagedjit.merge_attention_states(o, lse, out, lse)
        return m.float() + 1

    a = call_args()
    explanation = torch._dynamo.explain(f)(*a, meta(a[0].shape))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    compiled = torch.compile(f, fullgraph=True, backend="eager")
    r = compiled(*a, meta(a[0].shape))
    assert r.shape == a[0].shape and r.dtype == torch.float32


# ------------------------------------------------------------ ragged steps, append_kv and sinks

T = 10  # packed query rows of a ragged step over S sequences


def ragged_args(dtype=torch.float16, layout_shape=(N, KVH, P, D), tokens=T):
    return [meta((tokens, H, D), dtype), meta((S + 1,), torch.int32), meta(layout_shape, dtype),
            meta(layout_shape, dtype), meta((S,), torch.int32), meta((S, MB), torch.int32)]


def append_args(dtype=torch.float16, layout_shape=(N, KVH, P, D), cache_dtype=None):
    return [meta((T, KVH, D), dtype), meta((T, KVH, D), dtype), meta((S + 1,), torch.int32),
            meta((S,), torch.int32), meta((S, MB), torch.int32), meta(layout_shape, cache_dtype or dtype),
            meta(layout_shape, cache_dtype or dtype)]


def test_new_ops_are_registered_and_append_declares_its_writes():
    for name in ("ragged_paged_attention", "ragged_paged_attention_out", "append_kv"):
        assert hasattr(torch.ops.pagedjit, name), name
    schema = torch.ops.pagedjit.append_kv.default._schema
    written = {a.name for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write}
    assert written == {"key_cache", "value_cache"}, str(schema)
    schema = torch.ops.pagedjit.ragged_paged_attention_out.default._schema
    written = {a.name for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write}
    assert written == {"out", "lse"}, str(schema)
    assert not any(a.alias_info for a in torch.ops.pagedjit.ragged_paged_attention.default._schema.arguments)


def test_fake_ragged_shapes():
    a = ragged_args()
    out = pagedjit.ragged_paged_attention(*a)
    assert out.shape == (T, H, D) and out.dtype == torch.float16 and out.device.type == "meta"
    out, lse = pagedjit.ragged_paged_attention(*a, return_lse=True, out_dtype=torch.float32, max_query_len=4,
                                               sinks=meta((H,), torch.float32), seq_count=meta((1,), torch.int32))
    assert out.dtype == torch.float32 and lse.shape == (T, H) and lse.dtype == torch.float32
    given = meta((T, H, D), torch.bfloat16)
    assert pagedjit.ragged_paged_attention(*a, out=given) is given
    o, l_ = pagedjit.ragged_paged_attention(*a, out=given, return_lse=True)
    assert o is given and l_.shape == (T, H)
    for shape, layout in (((KVH, N, P, D), "heads_blocks"), ((N, P, KVH, D), "blocks_tokens")):
        pagedjit.ragged_paged_attention(*ragged_args(layout_shape=shape), layout=layout)
    k8 = meta((N, KVH, P, D), torch.float8_e4m3fn)
    pagedjit.ragged_paged_attention(a[0], a[1], k8, k8, *a[4:], k_scale=meta((1,), torch.float32),
                                    v_scale=meta((KVH,), torch.float32))


def test_fake_ragged_validates_with_the_engine():
    a = ragged_args()
    with pytest.raises(pagedjit.InvalidArgumentError, match="'query_start'"):
        pagedjit.ragged_paged_attention(a[0], meta((S,), torch.int32), *a[2:])
    with pytest.raises(pagedjit.InvalidArgumentError, match="'query'"):
        pagedjit.ragged_paged_attention(meta((S, 2, H, D)), *a[1:])
    with pytest.raises(pagedjit.InvalidArgumentError, match="'sinks'"):
        pagedjit.ragged_paged_attention(*a, sinks=meta((H,), torch.float16))
    with pytest.raises(pagedjit.InvalidArgumentError, match="'seq_count'"):
        pagedjit.ragged_paged_attention(*a, seq_count=meta((2,), torch.int32))
    with pytest.raises(pagedjit.InvalidArgumentError, match="'max_query_len'"):
        pagedjit.ragged_paged_attention(*a, max_query_len=T + 1)
    with pytest.raises(pagedjit.InvalidArgumentError, match="'output'"):
        pagedjit.ragged_paged_attention(*a, out=meta((T + 1, H, D)))
    with pytest.raises(pagedjit.InvalidArgumentError, match="'lse'"):
        pagedjit.ragged_paged_attention(*a, out=meta((T, H, D)), lse=meta((T, H + 1), torch.float32),
                                        return_lse=True)
    with pytest.raises(pagedjit.InvalidArgumentError, match="'lse': given without 'out'"):
        pagedjit.ragged_paged_attention(*a, lse=meta((T, H), torch.float32))
    with pytest.raises(pagedjit.InvalidArgumentError, match="layout"):
        pagedjit.ragged_paged_attention(*a, layout="nhd")


def test_fake_append_kv_and_its_validation():
    a = append_args()
    assert pagedjit.append_kv(*a) is None
    for shape, layout in (((KVH, N, P, D), "heads_blocks"), ((N, P, KVH, D), "blocks_tokens")):
        pagedjit.append_kv(*append_args(layout_shape=shape), layout=layout)
    e5 = append_args(dtype=torch.bfloat16, cache_dtype=torch.float8_e5m2)
    pagedjit.append_kv(*e5, k_scale=meta((KVH,), torch.float32), v_scale=meta((1,), torch.float32),
                       seq_count=meta((1,), torch.int32))
    with pytest.raises(pagedjit.InvalidArgumentError, match="'values'"):
        pagedjit.append_kv(a[0], meta((T, KVH, D), torch.bfloat16), *a[2:])
    with pytest.raises(pagedjit.InvalidArgumentError, match="'context_lens'"):
        pagedjit.append_kv(*a[:3], meta((S + 1,), torch.int32), *a[4:])
    with pytest.raises(pagedjit.InvalidArgumentError, match="'key_cache'"):
        pagedjit.append_kv(*a[:5], meta((N, KVH + 1, P, D)), meta((N, KVH + 1, P, D)))
    with pytest.raises(pagedjit.InvalidArgumentError, match="'k_scale'"):
        pagedjit.append_kv(*a, k_scale=meta((1,), torch.float32))
    with pytest.raises(pagedjit.InvalidArgumentError, match="'key_cache'"):  # blocks_heads shapes as heads_blocks
        pagedjit.append_kv(*a, layout="blocks_tokens")


def test_fake_paged_attention_with_sinks_and_large_caches():
    a = call_args()
    out, lse = pagedjit.paged_attention(*a, sinks=meta((H,), torch.float32), return_lse=True)
    assert out.shape == a[0].shape and lse.shape == a[0].shape[:-1]
    with pytest.raises(pagedjit.InvalidArgumentError, match="'sinks'"):
        pagedjit.paged_attention(*a, sinks=meta((H - 1,), torch.float32))
    # Caches far larger than the 16 MiB the placeholder addresses once stood apart: no made-up overlap.
    big = (8192, 8, 16, 128)
    q = meta((64, 32, 128), torch.bfloat16)
    k, v = meta(big, torch.bfloat16), meta(big, torch.bfloat16)
    lens, table = meta((64,), torch.int32), meta((64, 64), torch.int32)
    pagedjit.paged_attention(q, k, v, lens, table, return_lse=True)
    pagedjit.ragged_paged_attention(meta((300, 32, 128), torch.bfloat16), meta((65,), torch.int32), k, v, lens,
                                    table)
    pagedjit.append_kv(meta((300, 8, 128), torch.bfloat16), meta((300, 8, 128), torch.bfloat16),
                       meta((65,), torch.int32), lens, table, k, v)


def test_host_tensors_are_refused_by_the_new_calls():
    r = [torch.zeros(t.shape, dtype=t.dtype) for t in ragged_args()]
    with pytest.raises(pagedjit.InvalidArgumentError, match="host memory"):
        pagedjit.ragged_paged_attention(*r)
    with pytest.raises(pagedjit.InvalidArgumentError, match="'workspace'"):
        pagedjit.ragged_paged_attention(*r, workspace=torch.zeros(16))
    a = [torch.zeros(t.shape, dtype=t.dtype) for t in append_args()]
    with pytest.raises(pagedjit.InvalidArgumentError, match="host memory"):
        pagedjit.append_kv(*a)


def test_torch_compile_traces_a_serving_step_without_graph_breaks():
    def step(q, k_new, v_new, starts, lens, table, k, v, sinks):
        pagedjit.append_kv(k_new, v_new, starts, lens, table, k, v)
        o, lse = pagedjit.ragged_paged_attention(q * 2, starts, k, v, lens, table, max_query_len=4, sinks=sinks,
                                                 return_lse=True)
        out = torch.empty_like(q)
        pagedjit.ragged_paged_attention(q, starts, k, v, lens, table, out=out)
        return o.float() + out.float(), lse

    r, ap = ragged_args(), append_args()
    inputs = (r[0], ap[0], ap[1], r[1], r[4], r[5], r[2], r[3], meta((H,), torch.float32))
    explanation = torch._dynamo.explain(step)(*inputs)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    compiled = torch.compile(step, fullgraph=True, backend="eager")
    o, lse = compiled(*inputs)
    assert o.shape == (T, H, D) and o.dtype == torch.float32 and lse.shape == (T, H)
