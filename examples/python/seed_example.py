#!/usr/bin/env python3
"""The seed example through pagedjit's C API with ctypes.

4 sequences x 8 heads x head_dim 64 over a cache of 100 pages of 16 tokens
(context lengths 32, 64, 48, 80; block table padded with -1), on GPU tensors
from any framework exposing __cuda_array_interface__ (CuPy if importable, else
PyTorch), checked against a NumPy float64 reference.

Without a GPU it says why, checks the call's descriptors with
pagedjit_validate (which needs no device) and exits 0.

usage: seed_example.py [--lib PATH/libpagedjit.so] [--dtype fp16|fp32]
The library is --lib, else $PAGEDJIT_LIB, else a build of this repository,
else whatever the dynamic loader finds as libpagedjit.so.
"""
import argparse
import ctypes
import ctypes.util
import os
import sys
from ctypes import POINTER, byref, c_char_p, c_int, c_int64, c_void_p

# ------------------------------------------------------------ the C API (pagedjit/pagedjit.h)

OK, INVALID_ARGUMENT, NOT_SUPPORTED = 0, 1, 2
F32, F16, BF16, I32 = 0, 1, 2, 3
BLOCKS_HEADS = 0
MAX_RANK = 4


# The ctypes mirrors of the C structs: the pagedjit package's (python/pagedjit/_capi.py; its tests compare
# them with the header field by field).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from pagedjit._capi import Args, Options, Tensor  # noqa: E402


def find_library(explicit):
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.normpath(os.path.join(here, "..", ".."))
    candidates = [explicit, os.environ.get("PAGEDJIT_LIB")]
    candidates += [os.path.join(repo, b, "libpagedjit.so") for b in ("build", "build-capi")]
    candidates += [ctypes.util.find_library("pagedjit"), "libpagedjit.so"]
    for c in candidates:
        if c and (os.path.sep not in c or os.path.exists(c)):
            try:
                lib = ctypes.CDLL(c)
            except OSError:
                if c == explicit:
                    raise
                continue
            if hasattr(lib, "pagedjit_version"):  # skips builds older than the C API
                return c, lib
            if c == explicit:
                sys.exit("%s has no C API (pagedjit_version): rebuild it" % c)
    sys.exit("libpagedjit.so not found: pass --lib PATH or set PAGEDJIT_LIB")


def load(explicit):
    path, lib = find_library(explicit)
    sigs = {
        "pagedjit_version": (c_char_p, []),
        "pagedjit_status_name": (c_char_p, [c_int]),
        "pagedjit_last_error": (c_char_p, []),
        "pagedjit_device_count": (c_int, []),
        "pagedjit_options_init": (None, [POINTER(Options)]),
        "pagedjit_engine_create": (c_int, [c_int, POINTER(c_void_p)]),
        "pagedjit_engine_destroy": (None, [c_void_p]),
        "pagedjit_paged_attention": (c_int, [c_void_p, POINTER(Args), POINTER(Options), c_void_p]),
        "pagedjit_workspace_bytes": (c_int, [c_void_p, POINTER(Args), POINTER(Options), POINTER(c_int64)]),
        "pagedjit_validate": (c_int, [POINTER(Args), POINTER(Options)]),
    }
    for name, (restype, argtypes) in sigs.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = restype, argtypes
    return path, lib


def status_text(lib, status):
    return "%s: %s" % (lib.pagedjit_status_name(status).decode(), lib.pagedjit_last_error().decode())


def tensor(data, dtype, shape, strides=None):
    t = Tensor()
    t.data, t.dtype, t.rank = data, dtype, len(shape)
    if strides is None:  # row-major
        strides, step = [], 1
        for n in reversed(shape):
            strides.insert(0, step)
            step *= n
    for i, (n, s) in enumerate(zip(shape, strides)):
        t.shape[i], t.strides[i] = n, s
    return t


def from_cuda_array(a):
    """A Tensor over anything exposing __cuda_array_interface__ (CuPy, PyTorch, Numba, ...)."""
    cai = a.__cuda_array_interface__
    kinds = {"<f4": F32, "<f2": F16, "<i4": I32}
    if cai["typestr"] not in kinds:
        raise TypeError("unsupported element type %s" % cai["typestr"])
    item = int(cai["typestr"][2:])
    strides = cai.get("strides")
    if strides is not None:
        strides = [s // item for s in strides]
    return tensor(cai["data"][0], kinds[cai["typestr"]], list(cai["shape"]), strides)


# ------------------------------------------------------------ the seed example

SEQS, HEADS, KV_HEADS, DIM, PAGE, PAGES, MAX_BLOCKS = 4, 8, 8, 64, 16, 100, 8
LENS = [32, 64, 48, 80]


def seed_args(q, k, v, lens, table, out):
    a = Args()
    a.query, a.key_cache, a.value_cache = q, k, v
    a.context_lens, a.block_tables, a.output = lens, table, out
    a.layout = BLOCKS_HEADS
    return a


def check_descriptors(lib):
    """No GPU: checks the ctypes mirrors of the C structs through pagedjit_validate."""
    opts = Options()
    lib.pagedjit_options_init(byref(opts))
    assert opts.inline_seq_dim == 1 and opts.num_splits == 0 and opts.mask_value < -1e38, "Options layout"

    def args(dtype=F16):  # made-up 16-byte aligned addresses: validation reads no data
        return seed_args(tensor(0x100000, dtype, [SEQS, HEADS, DIM]),
                         tensor(0x200000, dtype, [PAGES, KV_HEADS, PAGE, DIM]),
                         tensor(0x300000, dtype, [PAGES, KV_HEADS, PAGE, DIM]),
                         tensor(0x400000, I32, [SEQS]), tensor(0x500000, I32, [SEQS, MAX_BLOCKS]),
                         tensor(0x600000, dtype, [SEQS, HEADS, DIM]))

    def expect(status, a, o, names):
        got = lib.pagedjit_validate(byref(a), byref(o))
        msg = lib.pagedjit_last_error().decode()
        assert got == status and (names is None or "'%s'" % names in msg), (got, msg)
        return msg

    expect(OK, args(), opts, None)
    bad = args()
    bad.output.shape[2] = 32
    print("  a wrong output shape is refused:", expect(INVALID_ARGUMENT, bad, opts, "output"))
    o = Options()
    lib.pagedjit_options_init(byref(o))
    o.megacore_mode = b"parallel"
    expect(NOT_SUPPORTED, args(), o, "options.megacore_mode")
    lib.pagedjit_options_init(byref(o))
    o.has_kernel_config, o.v_dims = 1, 8  # the struct's last field
    expect(INVALID_ARGUMENT, args(), o, "options.kernel_config.v_dims")
    print("  descriptors and options match the C structs (pagedjit_validate)")


class CuPy:
    def __init__(self):
        import cupy
        self.cp = cupy
        self.name = "CuPy " + cupy.__version__

    def to_device(self, host):
        return self.cp.asarray(host)

    def empty(self, shape, dtype):
        return self.cp.empty(shape, dtype=dtype)

    def to_host(self, a):
        return self.cp.asnumpy(a)

    def stream(self):
        return self.cp.cuda.get_current_stream()

    def stream_ptr(self, s):
        return s.ptr


class Torch:
    def __init__(self):
        import torch
        if not torch.cuda.is_available():
            raise ImportError("PyTorch without CUDA")
        self.torch = torch
        self.name = "PyTorch " + torch.__version__

    def to_device(self, host):
        return self.torch.from_numpy(host).to("cuda:0")

    def empty(self, shape, dtype):
        import numpy as np
        return self.torch.empty(shape, dtype={np.float16: self.torch.float16,
                                              np.float32: self.torch.float32}[np.dtype(dtype).type], device="cuda:0")

    def to_host(self, a):
        return a.cpu().numpy()

    def stream(self):
        return self.torch.cuda.current_stream(0)

    def stream_ptr(self, s):
        return s.cuda_stream


def framework():
    for make in (CuPy, Torch):
        try:
            return make()
        except ImportError:
            pass
    return None


def make_problem(np, dtype):
    rng = np.random.default_rng(2026)
    q = rng.standard_normal((SEQS, HEADS, DIM)).astype(dtype)
    k = rng.standard_normal((PAGES, KV_HEADS, PAGE, DIM)).astype(dtype)
    v = rng.standard_normal((PAGES, KV_HEADS, PAGE, DIM)).astype(dtype)
    lens = np.array(LENS, dtype=np.int32)
    table = np.full((SEQS, MAX_BLOCKS), -1, dtype=np.int32)
    pages = iter(rng.permutation(PAGES))
    for s, n in enumerate(LENS):
        for b in range(-(-n // PAGE)):
            table[s, b] = next(pages)
    return q, k, v, lens, table


def reference(np, q, k, v, lens, table):
    """softmax(q k^T / sqrt(d)) v per sequence and head, in float64."""
    out = np.zeros(q.shape, dtype=np.float64)
    group = HEADS // KV_HEADS
    for s, n in enumerate(lens):
        used = table[s, :-(-n // PAGE)]
        keys = k[used].astype(np.float64).transpose(1, 0, 2, 3).reshape(KV_HEADS, -1, DIM)[:, :n]
        vals = v[used].astype(np.float64).transpose(1, 0, 2, 3).reshape(KV_HEADS, -1, DIM)[:, :n]
        keys, vals = np.repeat(keys, group, axis=0), np.repeat(vals, group, axis=0)
        logits = np.einsum("hd,htd->ht", q[s].astype(np.float64), keys) / np.sqrt(DIM)
        w = np.exp(logits - logits.max(axis=1, keepdims=True))
        out[s] = np.einsum("ht,htd->hd", w / w.sum(axis=1, keepdims=True), vals)
    return out


def run_on_gpu(lib, fw, dtype_name):
    import numpy as np
    dtype = {"fp16": np.float16, "fp32": np.float32}[dtype_name]
    host = make_problem(np, dtype)
    want = reference(np, *host)
    dq, dk, dv, dlens, dtable = (fw.to_device(h) for h in host)
    dout = fw.empty((SEQS, HEADS, DIM), dtype)
    stream = fw.stream()

    engine = c_void_p()
    st = lib.pagedjit_engine_create(0, byref(engine))
    if st != OK:
        print("engine:", status_text(lib, st))
        return 1
    ok = True
    try:
        for splits in (0, 2):
            args = seed_args(*(from_cuda_array(t) for t in (dq, dk, dv, dlens, dtable, dout)))
            opts = Options()
            lib.pagedjit_options_init(byref(opts))
            opts.num_splits = splits
            st = lib.pagedjit_paged_attention(engine, byref(args), byref(opts), c_void_p(fw.stream_ptr(stream)))
            if st != OK:
                print("paged_attention:", status_text(lib, st))
                return 1
            stream.synchronize()
            got = fw.to_host(dout).astype(np.float64)
            rel = np.linalg.norm(got - want) / np.linalg.norm(want)
            bad = int((~np.isfinite(got)).sum())
            tol = 5e-3 if dtype_name == "fp16" else 1e-4
            passed = bad == 0 and rel < tol
            ok = ok and passed
            print("  %s, num_splits=%d: rel L2 %.2e, max abs %.2e, non-finite %d vs NumPy float64 -> %s" %
                  (dtype_name, splits, rel, np.abs(got - want).max(), bad, "PASS" if passed else "FAIL"))
    finally:
        lib.pagedjit_engine_destroy(engine)
    return 0 if ok else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lib", help="path of libpagedjit.so")
    p.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16")
    o = p.parse_args()
    path, lib = load(o.lib)
    print("pagedjit %s (%s)" % (lib.pagedjit_version().decode(), path))

    if lib.pagedjit_device_count() == 0:
        engine = c_void_p()
        st = lib.pagedjit_engine_create(0, byref(engine))
        print("No GPU: %s" % (status_text(lib, st) if st != OK else "the driver reports no device"))
        check_descriptors(lib)
        print("SKIPPED (no GPU): the seed example needs a CUDA device")
        return 0
    fw = framework()
    if fw is None:
        print("SKIPPED: neither CuPy nor PyTorch with CUDA is importable")
        return 0
    print("seed example on GPU 0 with %s tensors (__cuda_array_interface__):" % fw.name)
    rc = run_on_gpu(lib, fw, o.dtype)
    print("OK" if rc == 0 else "FAILED")
    return rc


if __name__ == "__main__":
    sys.exit(main())
