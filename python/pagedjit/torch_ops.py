"""pagedjit as PyTorch custom ops (torch.library.custom_op, torch >= 2.4).

    torch.ops.pagedjit.paged_attention(...)            -> (out, lse)   allocates both (lse empty unless return_lse)
    torch.ops.pagedjit.paged_attention_out(..., out, lse)              writes into out (and lse)
    torch.ops.pagedjit.merge_attention_states(...)     -> (out, lse)
    torch.ops.pagedjit.merge_attention_states_out(..., out, lse)
    torch.ops.pagedjit.ragged_paged_attention(...)     -> (out, lse)   a packed serving step (prefill + decode)
    torch.ops.pagedjit.ragged_paged_attention_out(..., out, lse)
    torch.ops.pagedjit.append_kv(keys, values, ..., key_cache, value_cache)   writes into both caches

Each has a fake implementation (shapes and dtypes, plus the engine's own
argument validation through pagedjit_validate* when the shapes are static), so
torch.compile traces them without graph breaks. They run on the current CUDA
stream of the inputs' device and never synchronize or allocate outside
PyTorch's caching allocator (split partials get a zero-filled workspace from
it), so they can be captured in CUDA graphs.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import _capi, _core
from ._tensors import View, torch_dtype_code

if not hasattr(torch, "library") or not hasattr(torch.library, "custom_op"):
    raise ImportError("pagedjit's torch ops need torch >= 2.4 (torch.library.custom_op); this is torch %s"
                      % torch.__version__)

_KERNEL_CONFIG_FIELDS = ("tile_tokens", "warps", "stages", "chunk_tokens", "v_dims")


# ------------------------------------------------------------ shared by the real and the fake implementations

def _opts(attn_scale, max_context_len, num_splits, attn_logits_soft_cap, sliding_window, pages_per_compute_block,
          mask_value, return_lse, batch_invariant, kernel_config, inline_seq_dim, megacore_mode):
    return _capi.options(_capi.library(), attn_scale=attn_scale, max_context_len=max_context_len,
                         num_splits=num_splits, attn_logits_soft_cap=attn_logits_soft_cap,
                         sliding_window=sliding_window, pages_per_compute_block=pages_per_compute_block,
                         mask_value=mask_value, return_lse=return_lse, batch_invariant=batch_invariant,
                         kernel_config=kernel_config, inline_seq_dim=inline_seq_dim, megacore_mode=megacore_mode)


def _static_view(t, address):
    """A descriptor of a fake / meta tensor at a made-up address (validation reads no data), or None when a size
    or stride is symbolic (dynamic shapes: the real call validates)."""
    shape, strides = list(t.shape), list(t.stride())
    if not all(type(v) is int for v in shape + strides):
        return None
    return View(_capi.tensor(address, torch_dtype_code(t.dtype), shape, strides), None)


def _static_views(named):
    """{name: View} of the fake tensors given (None ones left out), or None when a shape is symbolic. Each gets
    its own 256-byte aligned range past the previous one's, so no two overlap whatever their sizes (the engine
    refuses outputs that share memory with inputs)."""
    views, address = {}, 0x1000000
    for name, t in named.items():
        if t is not None:
            v = _static_view(t, address)
            if v is None:
                return None
            views[name] = v
            d = v.desc
            span = 1 + sum((d.shape[i] - 1) * d.strides[i] for i in range(d.rank) if d.shape[i] > 0)
            address = (address + span * _capi.ITEMSIZE[d.dtype] + 511) // 256 * 256
    return views


def _validate_fake(named, layout, opts_args):
    """pagedjit_validate on fake tensors: errors surface while tracing, with the engine's message."""
    views = _static_views(named)
    if views is not None:
        _core.validate_paged_attention(views, layout, _opts(*opts_args))


def _launch(query, key_cache, value_cache, context_lens, block_tables, k_scale, v_scale, sinks, out, lse, layout,
            opts_args):
    views = _core.describe_all(dict(query=query, key_cache=key_cache, value_cache=value_cache,
                                    context_lens=context_lens, block_tables=block_tables, output=out, lse=lse,
                                    k_scale=k_scale, v_scale=v_scale, sinks=sinks))
    opts = _opts(*opts_args)
    ws_bytes = _core.workspace_bytes_of(views, layout, opts)
    ws = torch.zeros(ws_bytes, dtype=torch.uint8, device=query.device) if ws_bytes else None
    stream = torch.cuda.current_stream(query.device).cuda_stream if query.is_cuda else None
    _core.launch_paged_attention(views, layout, opts, stream, workspace=ws.data_ptr() if ws is not None else None,
                                 workspace_bytes=ws_bytes)


def _lse_shape(query, return_lse):
    return query.shape[:-1] if return_lse else (0,)


# ------------------------------------------------------------ paged attention

@torch.library.custom_op("pagedjit::paged_attention", mutates_args=())
def _paged_attention(query: Tensor, key_cache: Tensor, value_cache: Tensor, context_lens: Tensor,
                     block_tables: Tensor, k_scale: Optional[Tensor], v_scale: Optional[Tensor],
                     sinks: Optional[Tensor], layout: int, out_dtype: Optional[torch.dtype],
                     attn_scale: Optional[float], max_context_len: Optional[int], num_splits: int,
                     attn_logits_soft_cap: Optional[float], sliding_window: Optional[int],
                     pages_per_compute_block: Optional[int], mask_value: Optional[float], return_lse: bool,
                     batch_invariant: bool, kernel_config: Optional[List[int]], inline_seq_dim: bool,
                     megacore_mode: Optional[str]) -> Tuple[Tensor, Tensor]:
    out = torch.empty(query.shape, dtype=out_dtype or query.dtype, device=query.device)
    lse = torch.empty(_lse_shape(query, return_lse), dtype=torch.float32, device=query.device)
    _launch(query, key_cache, value_cache, context_lens, block_tables, k_scale, v_scale, sinks, out,
            lse if return_lse else None, layout,
            (attn_scale, max_context_len, num_splits, attn_logits_soft_cap, sliding_window,
             pages_per_compute_block, mask_value, return_lse, batch_invariant, kernel_config, inline_seq_dim,
             megacore_mode))
    return out, lse


@_paged_attention.register_fake
def _paged_attention_fake(query, key_cache, value_cache, context_lens, block_tables, k_scale, v_scale, sinks,
                          layout, out_dtype, attn_scale, max_context_len, num_splits, attn_logits_soft_cap,
                          sliding_window, pages_per_compute_block, mask_value, return_lse, batch_invariant,
                          kernel_config, inline_seq_dim, megacore_mode):
    out = query.new_empty(query.shape, dtype=out_dtype or query.dtype)
    lse = query.new_empty(_lse_shape(query, return_lse), dtype=torch.float32)
    _validate_fake(dict(query=query, key_cache=key_cache, value_cache=value_cache, context_lens=context_lens,
                        block_tables=block_tables, output=out, lse=lse if return_lse else None, k_scale=k_scale,
                        v_scale=v_scale, sinks=sinks), layout,
                   (attn_scale, max_context_len, num_splits, attn_logits_soft_cap, sliding_window,
                    pages_per_compute_block, mask_value, return_lse, batch_invariant, kernel_config, inline_seq_dim,
                    megacore_mode))
    return out, lse


@torch.library.custom_op("pagedjit::paged_attention_out", mutates_args=("out", "lse"))
def _paged_attention_out(query: Tensor, key_cache: Tensor, value_cache: Tensor, context_lens: Tensor,
                         block_tables: Tensor, k_scale: Optional[Tensor], v_scale: Optional[Tensor],
                         sinks: Optional[Tensor], layout: int, out: Tensor, lse: Optional[Tensor],
                         attn_scale: Optional[float], max_context_len: Optional[int], num_splits: int,
                         attn_logits_soft_cap: Optional[float], sliding_window: Optional[int],
                         pages_per_compute_block: Optional[int], mask_value: Optional[float], return_lse: bool,
                         batch_invariant: bool, kernel_config: Optional[List[int]], inline_seq_dim: bool,
                         megacore_mode: Optional[str]) -> None:
    _launch(query, key_cache, value_cache, context_lens, block_tables, k_scale, v_scale, sinks, out,
            lse if return_lse else None, layout,
            (attn_scale, max_context_len, num_splits, attn_logits_soft_cap, sliding_window,
             pages_per_compute_block, mask_value, return_lse, batch_invariant, kernel_config, inline_seq_dim,
             megacore_mode))


@_paged_attention_out.register_fake
def _paged_attention_out_fake(query, key_cache, value_cache, context_lens, block_tables, k_scale, v_scale, sinks,
                              layout, out, lse, attn_scale, max_context_len, num_splits, attn_logits_soft_cap,
                              sliding_window, pages_per_compute_block, mask_value, return_lse, batch_invariant,
                              kernel_config, inline_seq_dim, megacore_mode):
    _validate_fake(dict(query=query, key_cache=key_cache, value_cache=value_cache, context_lens=context_lens,
                        block_tables=block_tables, output=out, lse=lse if return_lse else None, k_scale=k_scale,
                        v_scale=v_scale, sinks=sinks), layout,
                   (attn_scale, max_context_len, num_splits, attn_logits_soft_cap, sliding_window,
                    pages_per_compute_block, mask_value, return_lse, batch_invariant, kernel_config, inline_seq_dim,
                    megacore_mode))


def _kernel_config_list(kernel_config):
    if kernel_config is None:
        return None
    if isinstance(kernel_config, dict):
        unknown = set(kernel_config) - set(_KERNEL_CONFIG_FIELDS)
        if unknown:
            raise _capi.error_for_status(1, "kernel_config: unknown keys %s (known: %s)"
                                         % (sorted(unknown), ", ".join(_KERNEL_CONFIG_FIELDS)))
        return [int(kernel_config.get(f, 0)) for f in _KERNEL_CONFIG_FIELDS]
    return [int(v) for v in kernel_config]


def paged_attention(query, key_cache, value_cache, context_lens, block_tables, *, layout="blocks_heads",
                    k_scale=None, v_scale=None, sinks=None, out=None, lse=None, out_dtype=None, stream=None,
                    attn_scale=None, max_context_len=None, num_splits=0, attn_logits_soft_cap=None,
                    sliding_window=None, pages_per_compute_block=None, mask_value=None, return_lse=False,
                    batch_invariant=False, kernel_config=None, inline_seq_dim=True, megacore_mode=None):
    """pagedjit.paged_attention on torch tensors (see there). `stream`: a torch.cuda.Stream to run on instead of
    the current one."""
    if stream is not None:
        with torch.cuda.stream(stream):
            return paged_attention(query, key_cache, value_cache, context_lens, block_tables, layout=layout,
                                   k_scale=k_scale, v_scale=v_scale, sinks=sinks, out=out, lse=lse,
                                   out_dtype=out_dtype, attn_scale=attn_scale, max_context_len=max_context_len,
                                   num_splits=num_splits,
                                   attn_logits_soft_cap=attn_logits_soft_cap, sliding_window=sliding_window,
                                   pages_per_compute_block=pages_per_compute_block, mask_value=mask_value,
                                   return_lse=return_lse, batch_invariant=batch_invariant,
                                   kernel_config=kernel_config, inline_seq_dim=inline_seq_dim,
                                   megacore_mode=megacore_mode)
    layout = _capi.layout_code(layout)
    kc = _kernel_config_list(kernel_config)
    opts = (attn_scale, max_context_len, num_splits, attn_logits_soft_cap, sliding_window, pages_per_compute_block,
            mask_value, return_lse, batch_invariant, kc, inline_seq_dim, megacore_mode)
    if out is None:
        if lse is not None:
            raise _capi.error_for_status(1, "argument 'lse': given without 'out' (pass both, or neither)")
        o, l_ = torch.ops.pagedjit.paged_attention(query, key_cache, value_cache, context_lens, block_tables,
                                                   k_scale, v_scale, sinks, layout, out_dtype, *opts)
        return (o, l_) if return_lse else o
    if out_dtype is not None and out_dtype != out.dtype:
        raise _capi.error_for_status(1, "argument 'out_dtype': %s, but 'out' is %s" % (out_dtype, out.dtype))
    if return_lse and lse is None:
        lse = torch.empty(query.shape[:-1], dtype=torch.float32, device=query.device)
    torch.ops.pagedjit.paged_attention_out(query, key_cache, value_cache, context_lens, block_tables, k_scale,
                                           v_scale, sinks, layout, out, lse, *opts)
    return (out, lse) if return_lse else out


# ------------------------------------------------------------ merging two partial results

def _launch_merge(out_a, lse_a, out_b, lse_b, out, lse):
    views = _core.describe_all(dict(out_a=out_a, lse_a=lse_a, out_b=out_b, lse_b=lse_b, out=out, lse=lse))
    stream = torch.cuda.current_stream(out_a.device).cuda_stream if out_a.is_cuda else None
    _core.launch_merge(views, stream)


def _validate_merge_fake(named):
    views = _static_views(named)
    if views is not None:
        _core.validate_merge(views)


@torch.library.custom_op("pagedjit::merge_attention_states", mutates_args=())
def _merge(out_a: Tensor, lse_a: Tensor, out_b: Tensor, lse_b: Tensor, out_dtype: Optional[torch.dtype],
           return_lse: bool) -> Tuple[Tensor, Tensor]:
    out = torch.empty(out_a.shape, dtype=out_dtype or out_a.dtype, device=out_a.device)
    lse = torch.empty(lse_a.shape if return_lse else (0,), dtype=torch.float32, device=out_a.device)
    _launch_merge(out_a, lse_a, out_b, lse_b, out, lse if return_lse else None)
    return out, lse


@_merge.register_fake
def _merge_fake(out_a, lse_a, out_b, lse_b, out_dtype, return_lse):
    out = out_a.new_empty(out_a.shape, dtype=out_dtype or out_a.dtype)
    lse = out_a.new_empty(lse_a.shape if return_lse else (0,), dtype=torch.float32)
    _validate_merge_fake(dict(out_a=out_a, lse_a=lse_a, out_b=out_b, lse_b=lse_b, out=out,
                              lse=lse if return_lse else None))
    return out, lse


@torch.library.custom_op("pagedjit::merge_attention_states_out", mutates_args=("out", "lse"))
def _merge_out(out_a: Tensor, lse_a: Tensor, out_b: Tensor, lse_b: Tensor, out: Tensor,
               lse: Optional[Tensor]) -> None:
    _launch_merge(out_a, lse_a, out_b, lse_b, out, lse)


@_merge_out.register_fake
def _merge_out_fake(out_a, lse_a, out_b, lse_b, out, lse):
    _validate_merge_fake(dict(out_a=out_a, lse_a=lse_a, out_b=out_b, lse_b=lse_b, out=out, lse=lse))


def merge_attention_states(out_a, lse_a, out_b, lse_b, *, out=None, lse=None, out_dtype=None, return_lse=False,
                           stream=None):
    """pagedjit.merge_attention_states on torch tensors (see there)."""
    if stream is not None:
        with torch.cuda.stream(stream):
            return merge_attention_states(out_a, lse_a, out_b, lse_b, out=out, lse=lse, out_dtype=out_dtype,
                                          return_lse=return_lse)
    if out is None:
        if lse is not None:
            raise _capi.error_for_status(1, "argument 'lse': given without 'out' (pass both, or neither)")
        o, l_ = torch.ops.pagedjit.merge_attention_states(out_a, lse_a, out_b, lse_b, out_dtype, return_lse)
        return (o, l_) if return_lse else o
    if return_lse and lse is None:
        lse = torch.empty(lse_a.shape, dtype=torch.float32, device=out_a.device)
    torch.ops.pagedjit.merge_attention_states_out(out_a, lse_a, out_b, lse_b, out, lse if return_lse else None)
    return (out, lse) if return_lse else out


# ------------------------------------------------------------ ragged steps

def _ragged_named(query, query_start, key_cache, value_cache, context_lens, block_tables, k_scale, v_scale, sinks,
                  seq_count, out, lse):
    return dict(query=query, query_start=query_start, key_cache=key_cache, value_cache=value_cache,
                context_lens=context_lens, block_tables=block_tables, output=out, lse=lse, k_scale=k_scale,
                v_scale=v_scale, sinks=sinks, seq_count=seq_count)


def _launch_ragged(named, layout, max_query_len, opts_args):
    views = _core.describe_all(named)
    opts = _opts(*opts_args)
    ws_bytes = _core.ragged_workspace_bytes_of(views, layout, max_query_len, opts)
    query = named["query"]
    ws = torch.zeros(ws_bytes, dtype=torch.uint8, device=query.device) if ws_bytes else None
    stream = torch.cuda.current_stream(query.device).cuda_stream if query.is_cuda else None
    _core.launch_ragged(views, layout, max_query_len, opts, stream,
                        workspace=ws.data_ptr() if ws is not None else None, workspace_bytes=ws_bytes)


def _validate_ragged_fake(named, layout, max_query_len, opts_args):
    """pagedjit_validate_ragged on fake tensors: errors surface while tracing, with the engine's message."""
    views = _static_views(named)
    if views is not None:
        _core.validate_ragged(views, layout, max_query_len, _opts(*opts_args))


@torch.library.custom_op("pagedjit::ragged_paged_attention", mutates_args=())
def _ragged(query: Tensor, query_start: Tensor, key_cache: Tensor, value_cache: Tensor, context_lens: Tensor,
            block_tables: Tensor, k_scale: Optional[Tensor], v_scale: Optional[Tensor], sinks: Optional[Tensor],
            seq_count: Optional[Tensor], layout: int, max_query_len: int, out_dtype: Optional[torch.dtype],
            attn_scale: Optional[float], max_context_len: Optional[int], num_splits: int,
            attn_logits_soft_cap: Optional[float], sliding_window: Optional[int],
            pages_per_compute_block: Optional[int], mask_value: Optional[float], return_lse: bool,
            batch_invariant: bool, kernel_config: Optional[List[int]], inline_seq_dim: bool,
            megacore_mode: Optional[str]) -> Tuple[Tensor, Tensor]:
    out = torch.empty(query.shape, dtype=out_dtype or query.dtype, device=query.device)
    lse = torch.empty(_lse_shape(query, return_lse), dtype=torch.float32, device=query.device)
    _launch_ragged(_ragged_named(query, query_start, key_cache, value_cache, context_lens, block_tables, k_scale,
                                 v_scale, sinks, seq_count, out, lse if return_lse else None), layout, max_query_len,
                   (attn_scale, max_context_len, num_splits, attn_logits_soft_cap, sliding_window,
                    pages_per_compute_block, mask_value, return_lse, batch_invariant, kernel_config, inline_seq_dim,
                    megacore_mode))
    return out, lse


@_ragged.register_fake
def _ragged_fake(query, query_start, key_cache, value_cache, context_lens, block_tables, k_scale, v_scale, sinks,
                 seq_count, layout, max_query_len, out_dtype, attn_scale, max_context_len, num_splits,
                 attn_logits_soft_cap, sliding_window, pages_per_compute_block, mask_value, return_lse,
                 batch_invariant, kernel_config, inline_seq_dim, megacore_mode):
    out = query.new_empty(query.shape, dtype=out_dtype or query.dtype)
    lse = query.new_empty(_lse_shape(query, return_lse), dtype=torch.float32)
    _validate_ragged_fake(_ragged_named(query, query_start, key_cache, value_cache, context_lens, block_tables,
                                        k_scale, v_scale, sinks, seq_count, out, lse if return_lse else None),
                          layout, max_query_len,
                          (attn_scale, max_context_len, num_splits, attn_logits_soft_cap, sliding_window,
                           pages_per_compute_block, mask_value, return_lse, batch_invariant, kernel_config,
                           inline_seq_dim, megacore_mode))
    return out, lse


@torch.library.custom_op("pagedjit::ragged_paged_attention_out", mutates_args=("out", "lse"))
def _ragged_out(query: Tensor, query_start: Tensor, key_cache: Tensor, value_cache: Tensor, context_lens: Tensor,
                block_tables: Tensor, k_scale: Optional[Tensor], v_scale: Optional[Tensor], sinks: Optional[Tensor],
                seq_count: Optional[Tensor], layout: int, max_query_len: int, out: Tensor, lse: Optional[Tensor],
                attn_scale: Optional[float], max_context_len: Optional[int], num_splits: int,
                attn_logits_soft_cap: Optional[float], sliding_window: Optional[int],
                pages_per_compute_block: Optional[int], mask_value: Optional[float], return_lse: bool,
                batch_invariant: bool, kernel_config: Optional[List[int]], inline_seq_dim: bool,
                megacore_mode: Optional[str]) -> None:
    _launch_ragged(_ragged_named(query, query_start, key_cache, value_cache, context_lens, block_tables, k_scale,
                                 v_scale, sinks, seq_count, out, lse if return_lse else None), layout, max_query_len,
                   (attn_scale, max_context_len, num_splits, attn_logits_soft_cap, sliding_window,
                    pages_per_compute_block, mask_value, return_lse, batch_invariant, kernel_config, inline_seq_dim,
                    megacore_mode))


@_ragged_out.register_fake
def _ragged_out_fake(query, query_start, key_cache, value_cache, context_lens, block_tables, k_scale, v_scale, sinks,
                     seq_count, layout, max_query_len, out, lse, attn_scale, max_context_len, num_splits,
                     attn_logits_soft_cap, sliding_window, pages_per_compute_block, mask_value, return_lse,
                     batch_invariant, kernel_config, inline_seq_dim, megacore_mode):
    _validate_ragged_fake(_ragged_named(query, query_start, key_cache, value_cache, context_lens, block_tables,
                                        k_scale, v_scale, sinks, seq_count, out, lse if return_lse else None),
                          layout, max_query_len,
                          (attn_scale, max_context_len, num_splits, attn_logits_soft_cap, sliding_window,
                           pages_per_compute_block, mask_value, return_lse, batch_invariant, kernel_config,
                           inline_seq_dim, megacore_mode))


def ragged_paged_attention(query, query_start, key_cache, value_cache, context_lens, block_tables, *,
                           max_query_len=0, seq_count=None, sinks=None, layout="blocks_heads", k_scale=None,
                           v_scale=None, out=None, lse=None, out_dtype=None, stream=None, attn_scale=None,
                           max_context_len=None, num_splits=0, attn_logits_soft_cap=None, sliding_window=None,
                           pages_per_compute_block=None, mask_value=None, return_lse=False, batch_invariant=False,
                           kernel_config=None, inline_seq_dim=True, megacore_mode=None):
    """pagedjit.ragged_paged_attention on torch tensors (see there). An allocated output's rows that no computed
    sequence owns (past query_start[num_seqs], or of sequences past seq_count) are left unwritten (torch.empty):
    pass `out` to keep known values there. `stream`: a torch.cuda.Stream to run on instead of the current one."""
    if stream is not None:
        with torch.cuda.stream(stream):
            return ragged_paged_attention(query, query_start, key_cache, value_cache, context_lens, block_tables,
                                          max_query_len=max_query_len, seq_count=seq_count, sinks=sinks,
                                          layout=layout, k_scale=k_scale, v_scale=v_scale, out=out, lse=lse,
                                          out_dtype=out_dtype, attn_scale=attn_scale,
                                          max_context_len=max_context_len, num_splits=num_splits,
                                          attn_logits_soft_cap=attn_logits_soft_cap, sliding_window=sliding_window,
                                          pages_per_compute_block=pages_per_compute_block, mask_value=mask_value,
                                          return_lse=return_lse, batch_invariant=batch_invariant,
                                          kernel_config=kernel_config, inline_seq_dim=inline_seq_dim,
                                          megacore_mode=megacore_mode)
    layout = _capi.layout_code(layout)
    kc = _kernel_config_list(kernel_config)
    opts = (attn_scale, max_context_len, num_splits, attn_logits_soft_cap, sliding_window, pages_per_compute_block,
            mask_value, return_lse, batch_invariant, kc, inline_seq_dim, megacore_mode)
    head = (query, query_start, key_cache, value_cache, context_lens, block_tables, k_scale, v_scale, sinks,
            seq_count, layout, int(max_query_len or 0))
    if out is None:
        if lse is not None:
            raise _capi.error_for_status(1, "argument 'lse': given without 'out' (pass both, or neither)")
        o, l_ = torch.ops.pagedjit.ragged_paged_attention(*head, out_dtype, *opts)
        return (o, l_) if return_lse else o
    if out_dtype is not None and out_dtype != out.dtype:
        raise _capi.error_for_status(1, "argument 'out_dtype': %s, but 'out' is %s" % (out_dtype, out.dtype))
    if return_lse and lse is None:
        lse = torch.empty(query.shape[:-1], dtype=torch.float32, device=query.device)
    torch.ops.pagedjit.ragged_paged_attention_out(*head, out, lse, *opts)
    return (out, lse) if return_lse else out


# ------------------------------------------------------------ writing new tokens into the cache

def _append_named(keys, values, query_start, context_lens, block_tables, key_cache, value_cache, k_scale, v_scale,
                  seq_count):
    return dict(keys=keys, values=values, query_start=query_start, context_lens=context_lens,
                block_tables=block_tables, key_cache=key_cache, value_cache=value_cache, k_scale=k_scale,
                v_scale=v_scale, seq_count=seq_count)


@torch.library.custom_op("pagedjit::append_kv", mutates_args=("key_cache", "value_cache"))
def _append_kv(keys: Tensor, values: Tensor, query_start: Tensor, context_lens: Tensor, block_tables: Tensor,
               key_cache: Tensor, value_cache: Tensor, k_scale: Optional[Tensor], v_scale: Optional[Tensor],
               seq_count: Optional[Tensor], layout: int) -> None:
    views = _core.describe_all(_append_named(keys, values, query_start, context_lens, block_tables, key_cache,
                                             value_cache, k_scale, v_scale, seq_count))
    stream = torch.cuda.current_stream(keys.device).cuda_stream if keys.is_cuda else None
    _core.launch_append(views, layout, stream)


@_append_kv.register_fake
def _append_kv_fake(keys, values, query_start, context_lens, block_tables, key_cache, value_cache, k_scale, v_scale,
                    seq_count, layout):
    views = _static_views(_append_named(keys, values, query_start, context_lens, block_tables, key_cache,
                                        value_cache, k_scale, v_scale, seq_count))
    if views is not None:
        _core.validate_append(views, layout)


def append_kv(keys, values, query_start, context_lens, block_tables, key_cache, value_cache, *, k_scale=None,
              v_scale=None, seq_count=None, layout="blocks_heads", stream=None):
    """pagedjit.append_kv on torch tensors (see there): writes into key_cache and value_cache in place.
    `stream`: a torch.cuda.Stream to run on instead of the current one."""
    if stream is not None:
        with torch.cuda.stream(stream):
            return append_kv(keys, values, query_start, context_lens, block_tables, key_cache, value_cache,
                             k_scale=k_scale, v_scale=v_scale, seq_count=seq_count, layout=layout)
    torch.ops.pagedjit.append_kv(keys, values, query_start, context_lens, block_tables, key_cache, value_cache,
                                 k_scale, v_scale, seq_count, _capi.layout_code(layout))
