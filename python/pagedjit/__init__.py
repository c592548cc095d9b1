"""pagedjit from Python: paged attention decode kernels built at run time (NVRTC), over the C API with ctypes.

    import torch, pagedjit
    out = pagedjit.paged_attention(query, key_cache, value_cache, context_lens, block_tables)
    pagedjit.append_kv(new_k, new_v, query_start, context_lens, block_tables, key_cache, value_cache)
    out = pagedjit.ragged_paged_attention(packed_q, query_start, key_cache, value_cache, context_lens, block_tables)

Functions take torch tensors (through the custom ops torch.ops.pagedjit.*, on the current stream; see
pagedjit.torch_ops) or any object with __cuda_array_interface__ or DLPack (then `out` is required). Engine
errors raise a subclass of PagedJitError carrying the engine's message and status code.

libpagedjit.so is found in $PAGEDJIT_LIBRARY, else the copy installed with the package, else the checkout's
build/, else the system's library path; see pagedjit._capi.candidate_paths.
"""
import importlib.util as _importlib_util

from ._api import (append_kv, device_count, library_path, merge_attention_states, paged_attention,
                   ragged_paged_attention, ragged_workspace_bytes, validate, validate_append, validate_merge,
                   validate_ragged, version, workspace_bytes)
from ._core import Engine, engine
from .errors import *  # noqa: F401,F403  (PagedJitError and one class per status)
from .errors import __all__ as _error_names

from ._version import __version__  # the package; version() is the loaded library's

__all__ = ["paged_attention", "merge_attention_states", "workspace_bytes", "validate", "validate_merge",
           "ragged_paged_attention", "ragged_workspace_bytes", "validate_ragged", "append_kv", "validate_append",
           "version", "library_path", "device_count", "Engine", "engine",
           "has_torch"] + list(_error_names)

# The torch ops are registered at import when torch is installed, so torch.compile and CUDA graph capture see
# them before the first call; without torch the ctypes layer works alone.
has_torch = _importlib_util.find_spec("torch") is not None
if has_torch:
    from . import torch_ops  # noqa: F401
