"""The public functions: on torch tensors through the registered custom ops (pagedjit.torch_ops), on anything
else with __cuda_array_interface__ or DLPack directly through the C API."""
from . import _capi, _core
from ._tensors import View, is_torch_tensor
from .errors import InvalidArgumentError


def _torch_ops():
    from . import torch_ops  # registers the ops; imports torch
    return torch_ops


def version():
    """The version of the loaded libpagedjit ("MAJOR.MINOR.PATCH")."""
    return _capi.library().version().decode()


def library_path():
    """The path of the loaded libpagedjit and where it was found."""
    lib = _capi.library()
    return lib.path, lib.where


def device_count():
    """Number of usable CUDA devices as the engine sees them (0 without a driver or a device)."""
    return _capi.library().device_count()


def _options(**kw):
    return _capi.options(_capi.library(), **kw)


def paged_attention(query, key_cache, value_cache, context_lens, block_tables, *,
                    layout="blocks_heads", attn_scale=None, max_context_len=None, num_splits=0,
                    attn_logits_soft_cap=None, sliding_window=None, pages_per_compute_block=None, mask_value=None,
                    return_lse=False, batch_invariant=False, kernel_config=None, k_scale=None, v_scale=None,
                    sinks=None, out=None, lse=None, out_dtype=None, workspace=None, stream=None, inline_seq_dim=True,
                    megacore_mode=None):
    """Paged attention decode: softmax(scale * q k^T) v per sequence over its pages.

    query [num_seqs, num_heads, head_dim] or [num_seqs, q_len, num_heads, head_dim]; key_cache / value_cache 4-D
    in `layout` ("blocks_heads" [blocks, kv_heads, page, dim] (vLLM), "heads_blocks", "blocks_tokens");
    context_lens int32 [num_seqs]; block_tables int32 [num_seqs, max_blocks], -1 padded. fp8 caches
    (torch.float8_e4m3fn / e5m2) take k_scale / v_scale, fp32 [1] or [num_kv_heads]. sinks: optional fp32
    [num_heads], one logit per query head that joins the softmax denominator only (gpt-oss style attention sinks;
    lse then includes it).

    Options (None: the engine's default): attn_scale (1/sqrt(head_dim)), max_context_len (a host hint),
    num_splits (0: engine chooses), attn_logits_soft_cap, sliding_window, pages_per_compute_block, mask_value,
    return_lse, batch_invariant, kernel_config (dict of tile_tokens, warps, stages, chunk_tokens, v_dims),
    inline_seq_dim and megacore_mode (only their defaults are supported).

    Torch tensors: runs the custom op torch.ops.pagedjit.paged_attention (or paged_attention_out when `out` is
    given) on the current stream of the query's device; the output is allocated in `out_dtype` (default: the
    query's). Other objects: `out` (and `lse` with return_lse) must be given; runs on `stream` (None: the legacy
    default stream) with `workspace` (a device buffer, zero-filled before its first use) or the engine's own.

    Returns the output, or (output, lse) when return_lse (lse: fp32, the query's leading dims).
    """
    opts = dict(attn_scale=attn_scale, max_context_len=max_context_len, num_splits=num_splits,
                attn_logits_soft_cap=attn_logits_soft_cap, sliding_window=sliding_window,
                pages_per_compute_block=pages_per_compute_block, mask_value=mask_value, return_lse=return_lse,
                batch_invariant=batch_invariant, kernel_config=kernel_config, inline_seq_dim=inline_seq_dim,
                megacore_mode=megacore_mode)
    if is_torch_tensor(query):
        if workspace is not None:
            raise InvalidArgumentError("argument 'workspace': torch calls allocate their own (zero-filled, from "
                                       "the caching allocator, so CUDA graphs capture them)", 1, "invalid_argument")
        return _torch_ops().paged_attention(query, key_cache, value_cache, context_lens, block_tables,
                                            layout=layout, k_scale=k_scale, v_scale=v_scale, sinks=sinks, out=out,
                                            lse=lse, out_dtype=out_dtype, stream=stream, **opts)
    if out is None or (return_lse and lse is None):
        raise InvalidArgumentError("argument '%s': required for inputs that are not torch tensors (pagedjit "
                                   "allocates only through torch)" % ("out" if out is None else "lse"),
                                   1, "invalid_argument")
    if out_dtype is not None:
        raise InvalidArgumentError("argument 'out_dtype': the dtype of `out` decides", 1, "invalid_argument")
    views = _core.describe_all(dict(query=query, key_cache=key_cache, value_cache=value_cache,
                                    context_lens=context_lens, block_tables=block_tables, output=out,
                                    lse=lse if return_lse else None, k_scale=k_scale, v_scale=v_scale,
                                    sinks=sinks))
    ws, ws_bytes = _workspace(workspace)
    _core.launch_paged_attention(views, layout, _options(**opts), stream, workspace=ws, workspace_bytes=ws_bytes)
    return (out, lse) if return_lse else out


def _workspace(workspace):
    """(address, bytes) of a caller's workspace buffer; (None, None) without one."""
    if workspace is None:
        return None, None
    d = _core.describe(workspace, "workspace").desc
    return d.data, _capi.ITEMSIZE[d.dtype] * _numel(d)


def _numel(d):
    n = 1
    for i in range(d.rank):
        n *= d.shape[i]
    return n


def workspace_bytes(query, key_cache, value_cache, context_lens, block_tables, *, layout="blocks_heads",
                    out=None, lse=None, out_dtype=None, k_scale=None, v_scale=None, sinks=None, **options):
    """Scratch bytes the call would need as `workspace` (0: none) on the query's device; same arguments as
    paged_attention. Without `out` the output is taken to be the query's shape in `out_dtype` (default: the
    query's dtype)."""
    views = _core.describe_all(dict(query=query, key_cache=key_cache, value_cache=value_cache,
                                    context_lens=context_lens, block_tables=block_tables, output=out, lse=lse,
                                    k_scale=k_scale, v_scale=v_scale, sinks=sinks))
    opts = _options(**options)
    _placeholder_outputs(views, out is None, opts.return_lse and lse is None, out_dtype)
    return _core.workspace_bytes_of(views, layout, opts)


def _placeholder_outputs(views, need_out, need_lse, out_dtype):
    """Adds an output (the query's shape, in `out_dtype` or the query's dtype) and an fp32 lse (the query's leading
    dims) to `views` where they are missing, for calls whose result depends on shapes alone (workspace sizes)."""
    q = views["query"].desc
    shape = [q.shape[i] for i in range(q.rank)]
    # The engine refuses an output or lse that shares memory with an input:
    # placeholders start past every view.
    if need_out:
        dtype = q.dtype if out_dtype is None else _dtype_code(out_dtype)
        views["output"] = View(_capi.tensor(_past_all(views), dtype, shape), views["query"].device)
    if need_lse:
        views["lse"] = View(_capi.tensor(_past_all(views), _capi.F32, shape[:-1]), None)


def _past_all(views):
    """A 256-byte-aligned address past the last byte any of `views` spans."""
    end = 0
    for v in views.values():
        d = v.desc
        span = 1 + sum((d.shape[i] - 1) * d.strides[i] for i in range(d.rank) if d.shape[i] > 0)
        end = max(end, d.data + span * _capi.ITEMSIZE[d.dtype])
    return (end + 511) // 256 * 256


def _dtype_code(dtype):
    if isinstance(dtype, int):
        return dtype
    if isinstance(dtype, str) and dtype in {v: k for k, v in _capi.DTYPE_NAMES.items()}:
        return {v: k for k, v in _capi.DTYPE_NAMES.items()}[dtype]
    from ._tensors import torch_dtype_code
    return torch_dtype_code(dtype)


def validate(query, key_cache, value_cache, context_lens, block_tables, out, *, lse=None, layout="blocks_heads",
             k_scale=None, v_scale=None, sinks=None, **options):
    """Checks a paged_attention call's shapes, dtypes, strides, alignment and options without a device
    (pagedjit_validate; host memory is fine, nothing is read). Raises the engine's error."""
    views = _core.describe_all(dict(query=query, key_cache=key_cache, value_cache=value_cache,
                                    context_lens=context_lens, block_tables=block_tables, output=out, lse=lse,
                                    k_scale=k_scale, v_scale=v_scale, sinks=sinks))
    _core.validate_paged_attention(views, layout, _options(**options))


def merge_attention_states(out_a, lse_a, out_b, lse_b, *, out=None, lse=None, out_dtype=None, return_lse=False,
                           stream=None):
    """Merges two attention results over disjoint parts of the same contexts (cascade / shared-prefix attention):
    out = (e^lse_a out_a + e^lse_b out_b) / (e^lse_a + e^lse_b), with lse the natural-log sum-exp paged_attention
    returns. out_a / out_b [rows..., head_dim] (head_dim a multiple of 4), lse_a / lse_b fp32 [rows...].

    Torch tensors: allocates `out` (in `out_dtype`, default out_a's) unless given, on the current stream.
    Others: `out` (and `lse` with return_lse) must be given. Returns out, or (out, lse) when return_lse.
    """
    if is_torch_tensor(out_a):
        return _torch_ops().merge_attention_states(out_a, lse_a, out_b, lse_b, out=out, lse=lse,
                                                   out_dtype=out_dtype, return_lse=return_lse, stream=stream)
    if out is None or (return_lse and lse is None):
        raise InvalidArgumentError("argument '%s': required for inputs that are not torch tensors"
                                   % ("out" if out is None else "lse"), 1, "invalid_argument")
    views = _core.describe_all(dict(out_a=out_a, lse_a=lse_a, out_b=out_b, lse_b=lse_b, out=out,
                                    lse=lse if return_lse else None))
    _core.launch_merge(views, stream)
    return (out, lse) if return_lse else out


def validate_merge(out_a, lse_a, out_b, lse_b, out, lse=None):
    """Checks merge_attention_states' arguments without a device (pagedjit_validate_merge)."""
    _core.validate_merge(_core.describe_all(dict(out_a=out_a, lse_a=lse_a, out_b=out_b, lse_b=lse_b, out=out,
                                                 lse=lse)))


# ------------------------------------------------------------ ragged steps

def ragged_paged_attention(query, query_start, key_cache, value_cache, context_lens, block_tables, *,
                           max_query_len=0, seq_count=None, sinks=None, layout="blocks_heads", attn_scale=None,
                           max_context_len=None, num_splits=0, attn_logits_soft_cap=None, sliding_window=None,
                           pages_per_compute_block=None, mask_value=None, return_lse=False, batch_invariant=False,
                           kernel_config=None, k_scale=None, v_scale=None, out=None, lse=None, out_dtype=None,
                           workspace=None, stream=None, inline_seq_dim=True, megacore_mode=None):
    """One call for a serving step mixing decodes, draft verifications and prefill chunks (docs/contract.md).

    query [total_tokens, num_heads, head_dim]: every sequence's new tokens packed in sequence order;
    query_start int32 [num_seqs + 1]: sequence s owns rows query_start[s] .. query_start[s+1] (q_len(s), 0
    allowed); context_lens int32 [num_seqs]: the cached tokens *including* this step's; block_tables, the caches,
    `layout`, k_scale / v_scale as for paged_attention. Query token i of sequence s sits at position
    context_len - q_len + i and sees the keys up to it (causal; with sliding_window only the last W).

    max_query_len: a host upper bound on every q_len (0: total_tokens); a bound, not a hint: a sequence with more
    tokens has only its first max_query_len computed. seq_count: optional int32 [1] on the device, only the first
    seq_count sequences are computed (the others' rows are left as they were). sinks: optional fp32 [num_heads].
    The host reads no device data, so a captured CUDA graph replays with other query_start, context_lens, block
    tables and seq_count of the same shapes.

    Options, `out`, `lse`, `out_dtype`, `workspace` and `stream` as for paged_attention (torch tensors run the
    custom op torch.ops.pagedjit.ragged_paged_attention, or ragged_paged_attention_out when `out` is given).
    Returns the output, or (output, lse) when return_lse (lse: fp32 [total_tokens, num_heads]).
    """
    opts = dict(attn_scale=attn_scale, max_context_len=max_context_len, num_splits=num_splits,
                attn_logits_soft_cap=attn_logits_soft_cap, sliding_window=sliding_window,
                pages_per_compute_block=pages_per_compute_block, mask_value=mask_value, return_lse=return_lse,
                batch_invariant=batch_invariant, kernel_config=kernel_config, inline_seq_dim=inline_seq_dim,
                megacore_mode=megacore_mode)
    if is_torch_tensor(query):
        if workspace is not None:
            raise InvalidArgumentError("argument 'workspace': torch calls allocate their own (zero-filled, from "
                                       "the caching allocator, so CUDA graphs capture them)", 1, "invalid_argument")
        return _torch_ops().ragged_paged_attention(query, query_start, key_cache, value_cache, context_lens,
                                                   block_tables, max_query_len=max_query_len, seq_count=seq_count,
                                                   sinks=sinks, layout=layout, k_scale=k_scale, v_scale=v_scale,
                                                   out=out, lse=lse, out_dtype=out_dtype, stream=stream, **opts)
    if out is None or (return_lse and lse is None):
        raise InvalidArgumentError("argument '%s': required for inputs that are not torch tensors (pagedjit "
                                   "allocates only through torch)" % ("out" if out is None else "lse"),
                                   1, "invalid_argument")
    if out_dtype is not None:
        raise InvalidArgumentError("argument 'out_dtype': the dtype of `out` decides", 1, "invalid_argument")
    views = _core.describe_all(dict(query=query, query_start=query_start, key_cache=key_cache,
                                    value_cache=value_cache, context_lens=context_lens, block_tables=block_tables,
                                    output=out, lse=lse if return_lse else None, k_scale=k_scale, v_scale=v_scale,
                                    sinks=sinks, seq_count=seq_count))
    ws, ws_bytes = _workspace(workspace)
    _core.launch_ragged(views, layout, max_query_len, _options(**opts), stream, workspace=ws,
                        workspace_bytes=ws_bytes)
    return (out, lse) if return_lse else out


def ragged_workspace_bytes(query, query_start, key_cache, value_cache, context_lens, block_tables, *,
                           max_query_len=0, seq_count=None, sinks=None, layout="blocks_heads", out=None, lse=None,
                           out_dtype=None, k_scale=None, v_scale=None, **options):
    """Scratch bytes a ragged_paged_attention call would need as `workspace` (0: none) on the query's device; same
    arguments. Without `out` the output is taken to be the query's shape in `out_dtype` (default: the query's)."""
    views = _core.describe_all(dict(query=query, query_start=query_start, key_cache=key_cache,
                                    value_cache=value_cache, context_lens=context_lens, block_tables=block_tables,
                                    output=out, lse=lse, k_scale=k_scale, v_scale=v_scale, sinks=sinks,
                                    seq_count=seq_count))
    opts = _options(**options)
    _placeholder_outputs(views, out is None, opts.return_lse and lse is None, out_dtype)
    return _core.ragged_workspace_bytes_of(views, layout, max_query_len, opts)


def validate_ragged(query, query_start, key_cache, value_cache, context_lens, block_tables, out, *, lse=None,
                    max_query_len=0, seq_count=None, sinks=None, layout="blocks_heads", k_scale=None, v_scale=None,
                    **options):
    """Checks a ragged_paged_attention call without a device (pagedjit_validate_ragged; host memory is fine,
    nothing is read). Raises the engine's error, naming the argument."""
    views = _core.describe_all(dict(query=query, query_start=query_start, key_cache=key_cache,
                                    value_cache=value_cache, context_lens=context_lens, block_tables=block_tables,
                                    output=out, lse=lse, k_scale=k_scale, v_scale=v_scale, sinks=sinks,
                                    seq_count=seq_count))
    _core.validate_ragged(views, layout, max_query_len, _options(**options))


# ------------------------------------------------------------ writing new tokens into the cache

def append_kv(keys, values, query_start, context_lens, block_tables, key_cache, value_cache, *, k_scale=None,
              v_scale=None, seq_count=None, layout="blocks_heads", stream=None):
    """Writes a step's new keys and values into their pages, in place (docs/contract.md, append_kv).

    keys / values [total_tokens, num_kv_heads, head_dim] (fp32, fp16 or bf16, both the same), packed in sequence
    order; query_start int32 [num_seqs + 1] and context_lens int32 [num_seqs] (including the new tokens) as for
    ragged_paged_attention: row query_start[s] + i goes to position context_lens[s] - q_len(s) + i of sequence s,
    page block_tables[s][t // page_size]. key_cache / value_cache in `layout`, of the keys' dtype or fp8 (e4m3 /
    e5m2, then k_scale / v_scale fp32 [1] or [num_kv_heads] divide: the cache gets value / scale, saturated).
    seq_count: optional int32 [1], only the first seq_count sequences are written. Positions outside the table or
    pages outside the cache are skipped, never written.

    Torch tensors: the custom op torch.ops.pagedjit.append_kv (it mutates key_cache and value_cache) on the
    current stream. Others: runs on `stream` (None: the legacy default stream). One launch, no synchronization,
    no host read of device data: graph-capturable. Returns None.
    """
    if is_torch_tensor(keys):
        return _torch_ops().append_kv(keys, values, query_start, context_lens, block_tables, key_cache, value_cache,
                                      k_scale=k_scale, v_scale=v_scale, seq_count=seq_count, layout=layout,
                                      stream=stream)
    views = _core.describe_all(dict(keys=keys, values=values, query_start=query_start, context_lens=context_lens,
                                    block_tables=block_tables, key_cache=key_cache, value_cache=value_cache,
                                    k_scale=k_scale, v_scale=v_scale, seq_count=seq_count))
    _core.launch_append(views, layout, stream)
    return None


def validate_append(keys, values, query_start, context_lens, block_tables, key_cache, value_cache, *, k_scale=None,
                    v_scale=None, seq_count=None, layout="blocks_heads"):
    """Checks an append_kv call without a device (pagedjit_validate_append). Raises the engine's error."""
    views = _core.describe_all(dict(keys=keys, values=values, query_start=query_start, context_lens=context_lens,
                                    block_tables=block_tables, key_cache=key_cache, value_cache=value_cache,
                                    k_scale=k_scale, v_scale=v_scale, seq_count=seq_count))
    _core.validate_append(views, layout)
