"""Framework-neutral calls: engines per device and the C API calls over descriptors (Views)."""
import threading
from ctypes import byref, c_int64, c_void_p

from . import _capi
from ._tensors import absent, common_device, describe
from .errors import InvalidArgumentError

# ------------------------------------------------------------ engines


class Engine:
    """A pagedjit_engine bound to one CUDA device (its primary context)."""

    def __init__(self, device=0):
        self.lib = _capi.library()
        self.device = int(device)
        handle = c_void_p()
        self.lib.check(self.lib.engine_create(self.device, byref(handle)))
        self.handle = handle

    def close(self):
        if self.handle:
            self.lib.engine_destroy(self.handle)
            self.handle = c_void_p()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the process ends anyway
            pass


_engines = {}
_engines_lock = threading.Lock()


def engine(device=0):
    """The engine of `device`, made on first use and kept for the process (compiled kernels live in it)."""
    device = 0 if device is None else int(device)
    with _engines_lock:
        if device not in _engines:
            _engines[device] = Engine(device)
        return _engines[device]


# ------------------------------------------------------------ descriptors of a call

PAGED_INPUTS = ("query", "key_cache", "value_cache", "context_lens", "block_tables")


def paged_args(views, layout, workspace=None, workspace_bytes=0):
    """pagedjit_args from Views keyed by the C field names (missing optional ones: absent)."""
    a = _capi.Args()
    for name in PAGED_INPUTS + ("output", "lse", "k_scale", "v_scale", "sinks"):
        setattr(a, name, views.get(name, absent()).desc)
    a.layout = _capi.layout_code(layout)
    if workspace:
        a.workspace, a.workspace_bytes = workspace, int(workspace_bytes)
    return a


RAGGED_FIELDS = ("query", "query_start", "key_cache", "value_cache", "context_lens", "block_tables", "output", "lse",
                 "k_scale", "v_scale", "sinks", "seq_count")


def ragged_args(views, layout, max_query_len=0, workspace=None, workspace_bytes=0):
    """pagedjit_ragged_args from Views keyed by the C field names (missing optional ones: absent)."""
    a = _capi.RaggedArgs()
    for name in RAGGED_FIELDS:
        setattr(a, name, views.get(name, absent()).desc)
    a.layout = _capi.layout_code(layout)
    a.max_query_len = int(max_query_len or 0)
    if workspace:
        a.workspace, a.workspace_bytes = workspace, int(workspace_bytes)
    return a


APPEND_FIELDS = ("keys", "values", "query_start", "context_lens", "block_tables", "key_cache", "value_cache",
                 "k_scale", "v_scale", "seq_count")


def append_args(views, layout):
    """pagedjit_append_args from Views keyed by the C field names (missing optional ones: absent)."""
    a = _capi.AppendArgs()
    for name in APPEND_FIELDS:
        setattr(a, name, views.get(name, absent()).desc)
    a.layout = _capi.layout_code(layout)
    return a


def merge_args(views):
    m = _capi.MergeArgs()
    for name in ("out_a", "lse_a", "out_b", "lse_b", "out", "lse"):
        setattr(m, name, views.get(name, absent()).desc)
    return m


def stream_handle(stream):
    """A CUstream address from None (legacy default stream), an int, or an object with .cuda_stream / .ptr /
    .handle (torch, CuPy, cuda-python)."""
    if stream is None:
        return None
    if isinstance(stream, int):
        return stream or None
    for attr in ("cuda_stream", "ptr", "handle"):
        if hasattr(stream, attr):
            return int(getattr(stream, attr)) or None
    if hasattr(stream, "__cuda_stream__"):  # the CUDA stream protocol: (version, address)
        return int(stream.__cuda_stream__()[1]) or None
    raise InvalidArgumentError("argument 'stream': None, an address or a stream object, got %s"
                               % type(stream).__name__, 1, "invalid_argument")


def describe_all(objects):
    """{name: View} for the given {name: object or None} (None: left out)."""
    return {n: describe(o, n) for n, o in objects.items() if o is not None}


def launch_paged_attention(views, layout, opts, stream, device=None, workspace=None, workspace_bytes=0):
    names = list(views)
    dev = common_device([views[n] for n in names], names)
    eng = engine(device if device is not None else dev)
    a = paged_args(views, layout, workspace, workspace_bytes)
    eng.lib.check(eng.lib.paged_attention(eng.handle, byref(a), byref(opts), stream_handle(stream)))


def workspace_bytes_of(views, layout, opts, device=None):
    names = list(views)
    dev = common_device([views[n] for n in names], names)
    eng = engine(device if device is not None else dev)
    a = paged_args(views, layout)
    out = c_int64(0)
    eng.lib.check(eng.lib.workspace_bytes(eng.handle, byref(a), byref(opts), byref(out)))
    return out.value


def validate_paged_attention(views, layout, opts):
    lib = _capi.library()
    a = paged_args(views, layout)
    lib.check(lib.validate(byref(a), byref(opts)))


def launch_merge(views, stream, device=None):
    names = list(views)
    dev = common_device([views[n] for n in names], names)
    eng = engine(device if device is not None else dev)
    m = merge_args(views)
    eng.lib.check(eng.lib.merge_attention_states(eng.handle, byref(m), stream_handle(stream)))


def validate_merge(views):
    lib = _capi.library()
    m = merge_args(views)
    lib.check(lib.validate_merge(byref(m)))


def _engine_of(views, device):
    names = list(views)
    dev = common_device([views[n] for n in names], names)
    return engine(device if device is not None else dev)


def launch_ragged(views, layout, max_query_len, opts, stream, device=None, workspace=None, workspace_bytes=0):
    eng = _engine_of(views, device)
    a = ragged_args(views, layout, max_query_len, workspace, workspace_bytes)
    eng.lib.check(eng.lib.ragged_paged_attention(eng.handle, byref(a), byref(opts), stream_handle(stream)))


def ragged_workspace_bytes_of(views, layout, max_query_len, opts, device=None):
    eng = _engine_of(views, device)
    a = ragged_args(views, layout, max_query_len)
    out = c_int64(0)
    eng.lib.check(eng.lib.ragged_workspace_bytes(eng.handle, byref(a), byref(opts), byref(out)))
    return out.value


def validate_ragged(views, layout, max_query_len, opts):
    lib = _capi.library()
    a = ragged_args(views, layout, max_query_len)
    lib.check(lib.validate_ragged(byref(a), byref(opts)))


def launch_append(views, layout, stream, device=None):
    eng = _engine_of(views, device)
    a = append_args(views, layout)
    eng.lib.check(eng.lib.append_kv(eng.handle, byref(a), stream_handle(stream)))


def validate_append(views, layout):
    lib = _capi.library()
    a = append_args(views, layout)
    lib.check(lib.validate_append(byref(a)))
