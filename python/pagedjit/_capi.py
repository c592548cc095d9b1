"""ctypes mirror of the C API (engine/include/pagedjit/pagedjit.h) and the loading of libpagedjit.

The structs below copy the header field by field; tests/test_cpu.py compiles a
C program that prints every field's offset and each struct's size and compares.
"""
import ctypes
import ctypes.util
import os
import threading
from ctypes import POINTER, byref, c_char_p, c_float, c_int, c_int32, c_int64, c_void_p

from .errors import LibraryNotFoundError, error_for_status

# ------------------------------------------------------------ enums

OK = 0
F32, F16, BF16, I32, E4M3, E5M2 = range(6)
DTYPE_NAMES = {F32: "fp32", F16: "fp16", BF16: "bf16", I32: "i32", E4M3: "e4m3", E5M2: "e5m2"}
ITEMSIZE = {F32: 4, F16: 2, BF16: 2, I32: 4, E4M3: 1, E5M2: 1}
LAYOUTS = {"blocks_heads": 0, "heads_blocks": 1, "blocks_tokens": 2}
MAX_RANK = 4
DEFAULT_MASK_VALUE = -2.381976426469702e38  # pagedjit::kDefaultMaskValue; pagedjit_options_init sets it

# ------------------------------------------------------------ structs


class Tensor(ctypes.Structure):
    _fields_ = [("data", c_void_p), ("dtype", c_int32), ("rank", c_int32),
                ("shape", c_int64 * MAX_RANK), ("strides", c_int64 * MAX_RANK)]


class Args(ctypes.Structure):
    _fields_ = [(name, Tensor) for name in
                ("query", "key_cache", "value_cache", "context_lens", "block_tables", "output", "lse")] + \
               [("layout", c_int32), ("reserved0", c_int32), ("workspace", c_void_p), ("workspace_bytes", c_int64),
                ("k_scale", Tensor), ("v_scale", Tensor), ("sinks", Tensor)]


class Options(ctypes.Structure):
    _fields_ = [("max_context_len", c_int64), ("sliding_window", c_int64),
                ("attn_scale", c_float), ("attn_logits_soft_cap", c_float), ("mask_value", c_float),
                ("num_splits", c_int32), ("pages_per_compute_block", c_int32),
                ("has_attn_scale", c_int32), ("has_max_context_len", c_int32),
                ("has_attn_logits_soft_cap", c_int32), ("has_sliding_window", c_int32),
                ("has_pages_per_compute_block", c_int32), ("return_lse", c_int32), ("inline_seq_dim", c_int32),
                ("batch_invariant", c_int32), ("reserved0", c_int32),
                ("megacore_mode", c_char_p),
                ("has_kernel_config", c_int32), ("tile_tokens", c_int32), ("warps", c_int32), ("stages", c_int32),
                ("chunk_tokens", c_int32), ("v_dims", c_int32)]


class MergeArgs(ctypes.Structure):
    _fields_ = [(name, Tensor) for name in ("out_a", "lse_a", "out_b", "lse_b", "out", "lse")]


class RaggedArgs(ctypes.Structure):
    _fields_ = [(name, Tensor) for name in
                ("query", "query_start", "key_cache", "value_cache", "context_lens", "block_tables", "output", "lse",
                 "k_scale", "v_scale", "sinks", "seq_count")] + \
               [("layout", c_int32), ("reserved0", c_int32), ("max_query_len", c_int64), ("workspace", c_void_p),
                ("workspace_bytes", c_int64)]


class AppendArgs(ctypes.Structure):
    _fields_ = [(name, Tensor) for name in
                ("keys", "values", "query_start", "context_lens", "block_tables", "key_cache", "value_cache")] + \
               [("layout", c_int32), ("reserved0", c_int32), ("k_scale", Tensor), ("v_scale", Tensor),
                ("seq_count", Tensor)]


STRUCTS = {"pagedjit_tensor": Tensor, "pagedjit_args": Args, "pagedjit_options": Options,
           "pagedjit_merge_args": MergeArgs, "pagedjit_ragged_args": RaggedArgs, "pagedjit_append_args": AppendArgs}

# Pinned by static_asserts in engine/src/c_api.cpp as well.
assert (ctypes.sizeof(Tensor), ctypes.sizeof(Args), ctypes.sizeof(Options), ctypes.sizeof(MergeArgs),
        ctypes.sizeof(RaggedArgs), ctypes.sizeof(AppendArgs)) == (80, 824, 104, 480, 992, 808), \
    "the ctypes mirrors of the C structs are off"

# ------------------------------------------------------------ finding and loading the library

_SIGNATURES = {
    "pagedjit_version": (c_char_p, []),
    "pagedjit_status_name": (c_char_p, [c_int]),
    "pagedjit_last_error": (c_char_p, []),
    "pagedjit_device_count": (c_int, []),
    "pagedjit_tensor_init": (c_int, [POINTER(Tensor), c_void_p, c_int32, c_int32, POINTER(c_int64)]),
    "pagedjit_options_init": (None, [POINTER(Options)]),
    "pagedjit_engine_create": (c_int, [c_int, POINTER(c_void_p)]),
    "pagedjit_engine_destroy": (None, [c_void_p]),
    "pagedjit_paged_attention": (c_int, [c_void_p, POINTER(Args), POINTER(Options), c_void_p]),
    "pagedjit_workspace_bytes": (c_int, [c_void_p, POINTER(Args), POINTER(Options), POINTER(c_int64)]),
    "pagedjit_validate": (c_int, [POINTER(Args), POINTER(Options)]),
    "pagedjit_merge_attention_states": (c_int, [c_void_p, POINTER(MergeArgs), c_void_p]),
    "pagedjit_validate_merge": (c_int, [POINTER(MergeArgs)]),
    "pagedjit_ragged_paged_attention": (c_int, [c_void_p, POINTER(RaggedArgs), POINTER(Options), c_void_p]),
    "pagedjit_ragged_workspace_bytes": (c_int, [c_void_p, POINTER(RaggedArgs), POINTER(Options), POINTER(c_int64)]),
    "pagedjit_validate_ragged": (c_int, [POINTER(RaggedArgs), POINTER(Options)]),
    "pagedjit_append_kv": (c_int, [c_void_p, POINTER(AppendArgs), c_void_p]),
    "pagedjit_validate_append": (c_int, [POINTER(AppendArgs)]),
}

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
LIBRARY_ENV = "PAGEDJIT_LIBRARY"


def candidate_paths():
    """Where the library is looked for, in order: (path, where it comes from).

    1. $PAGEDJIT_LIBRARY (when set, the only candidate);
    2. the copy `pip install ./python` put into the package (pagedjit/lib/);
    3. the build of the checkout this package sits in (../build/, when imported from python/);
    4. the system: the dynamic loader's search path (ldconfig, LD_LIBRARY_PATH).
    """
    explicit = os.environ.get(LIBRARY_ENV)
    if explicit:
        return [(explicit, "$" + LIBRARY_ENV)]
    checkout = os.path.normpath(os.path.join(_PACKAGE_DIR, "..", "..", "build", "libpagedjit.so"))
    system = ctypes.util.find_library("pagedjit") or "libpagedjit.so"
    return [(os.path.join(_PACKAGE_DIR, "lib", "libpagedjit.so"), "the installed package"),
            (checkout, "the checkout's build/"), (system, "the system")]


class Library:
    """The loaded libpagedjit with typed functions; `check` turns a status into an exception."""

    def __init__(self, path, where):
        self.path, self.where = path, where
        self.dll = ctypes.CDLL(path)
        missing = [name for name in _SIGNATURES if not hasattr(self.dll, name)]
        if missing:
            raise LibraryNotFoundError("%s (%s) lacks %s: it is older than this package; rebuild it "
                                       "(scripts/setup.sh)" % (path, where, ", ".join(missing)))
        for name, (restype, argtypes) in _SIGNATURES.items():
            f = getattr(self.dll, name)
            f.restype, f.argtypes = restype, argtypes
            setattr(self, name[len("pagedjit_"):], f)

    def check(self, status):
        if status != OK:
            raise error_for_status(status, self.last_error().decode(errors="replace"),
                                   self.status_name(status).decode())

    def default_options(self):
        o = Options()
        self.options_init(byref(o))
        return o


_lock = threading.Lock()
_library = None


def library():
    """The library, loaded on first use (LibraryNotFoundError names every place tried)."""
    global _library
    with _lock:
        if _library is None:
            tried = []
            for path, where in candidate_paths():
                if os.path.sep in path and not os.path.exists(path):
                    tried.append("%s (%s): no such file" % (path, where))
                    continue
                try:
                    _library = Library(path, where)
                    break
                except OSError as e:  # LibraryNotFoundError included: an old build is no fallback
                    if isinstance(e, LibraryNotFoundError):
                        raise
                    tried.append("%s (%s): %s" % (path, where, e))
            else:
                raise LibraryNotFoundError(
                    "libpagedjit.so not found; build it with scripts/setup.sh, or set %s. Tried: %s"
                    % (LIBRARY_ENV, "; ".join(tried)))
        return _library


# ------------------------------------------------------------ descriptors


def tensor(data, dtype, shape, strides=None):
    """A pagedjit_tensor over `data` (an address) with `shape` and `strides` in elements (None: row-major)."""
    if len(shape) > MAX_RANK:
        raise error_for_status(1, "rank %d above %d (shape %s)" % (len(shape), MAX_RANK, list(shape)))
    t = Tensor()
    t.data, t.dtype, t.rank = data, dtype, len(shape)
    if strides is None:
        strides, step = [], 1
        for n in reversed(shape):
            strides.insert(0, step)
            step *= n
    for i, (n, s) in enumerate(zip(shape, strides)):
        t.shape[i], t.strides[i] = int(n), int(s)
    return t


def options(lib, *, attn_scale=None, max_context_len=None, num_splits=0, attn_logits_soft_cap=None,
            sliding_window=None, pages_per_compute_block=None, mask_value=None, return_lse=False,
            batch_invariant=False, inline_seq_dim=True, megacore_mode=None, kernel_config=None):
    """pagedjit_options from keyword arguments; None leaves the engine's default.

    kernel_config: None, or a dict / sequence of (tile_tokens, warps, stages, chunk_tokens, v_dims): the first three
    required, the last two 0 = engine chooses (pagedjit::KernelConfig).
    """
    o = lib.default_options()
    if attn_scale is not None:
        o.has_attn_scale, o.attn_scale = 1, float(attn_scale)
    if max_context_len is not None:
        o.has_max_context_len, o.max_context_len = 1, int(max_context_len)
    o.num_splits = int(num_splits)
    if attn_logits_soft_cap is not None:
        o.has_attn_logits_soft_cap, o.attn_logits_soft_cap = 1, float(attn_logits_soft_cap)
    if sliding_window is not None:
        o.has_sliding_window, o.sliding_window = 1, int(sliding_window)
    if pages_per_compute_block is not None:
        o.has_pages_per_compute_block, o.pages_per_compute_block = 1, int(pages_per_compute_block)
    if mask_value is not None:
        o.mask_value = float(mask_value)
    o.return_lse = int(bool(return_lse))
    o.batch_invariant = int(bool(batch_invariant))
    o.inline_seq_dim = int(bool(inline_seq_dim))
    if megacore_mode is not None:
        o.megacore_mode = megacore_mode.encode() if isinstance(megacore_mode, str) else megacore_mode
    if kernel_config is not None:
        fields = ("tile_tokens", "warps", "stages", "chunk_tokens", "v_dims")
        if isinstance(kernel_config, dict):
            unknown = set(kernel_config) - set(fields)
            if unknown:
                raise error_for_status(1, "kernel_config: unknown keys %s (known: %s)"
                                       % (sorted(unknown), ", ".join(fields)))
            values = [kernel_config.get(f, 0) for f in fields]
        else:
            values = list(kernel_config)
            if len(values) != len(fields):
                raise error_for_status(1, "kernel_config: expected %d values (%s), got %d"
                                       % (len(fields), ", ".join(fields), len(values)))
        o.has_kernel_config = 1
        for f, v in zip(fields, values):
            setattr(o, f, int(v))
    return o


def layout_code(layout):
    if isinstance(layout, int) and layout in LAYOUTS.values():
        return layout
    try:
        return LAYOUTS[layout]
    except (KeyError, TypeError):
        raise error_for_status(1, "layout: expected one of %s, got %r" % (", ".join(LAYOUTS), layout)) from None
