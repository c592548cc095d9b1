"""Tests that need no GPU and no torch: struct layouts against the C header, option defaults, dtype mapping,
the engine's validation through the C API, and errors as exceptions."""
import ctypes
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

import pagedjit
from pagedjit import _capi, _tensors

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ------------------------------------------------------------ fake device memory

class FakeCuda:
    """An object with __cuda_array_interface__ at a made-up address: validation reads no data."""

    def __init__(self, address, typestr, shape, strides=None):
        self.__cuda_array_interface__ = {"data": (address, False), "typestr": typestr, "shape": tuple(shape),
                                         "strides": strides, "version": 3}


class FakeDLPack:
    """A DLPack producer over host memory built with ctypes (no numpy needed): __dlpack__ returns a 'dltensor'
    capsule of a DLManagedTensor this object owns."""

    class Managed(ctypes.Structure):
        _fields_ = [("dl_tensor", _tensors._DLTensor), ("manager_ctx", ctypes.c_void_p),
                    ("deleter", ctypes.c_void_p)]

    def __init__(self, code, bits, shape, strides=None, device_type=_tensors.KDL_CPU, device_id=0, byte_offset=0):
        n = 1
        for s in shape:
            n *= s
        self.buffer = ctypes.create_string_buffer(max(1, n * bits // 8) + 256)
        self.shape = (ctypes.c_int64 * len(shape))(*shape)
        self.strides = (ctypes.c_int64 * len(shape))(*strides) if strides else None
        m = self.Managed()
        t = m.dl_tensor
        t.data = ctypes.addressof(self.buffer)
        t.device.device_type, t.device.device_id = device_type, device_id
        t.ndim = len(shape)
        t.dtype.code, t.dtype.bits, t.dtype.lanes = code, bits, 1
        t.shape = ctypes.cast(self.shape, ctypes.POINTER(ctypes.c_int64))
        t.strides = ctypes.cast(self.strides, ctypes.POINTER(ctypes.c_int64)) if strides else None
        t.byte_offset = byte_offset
        self.managed = m

    def __dlpack__(self, stream=None):
        new = ctypes.pythonapi.PyCapsule_New
        new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        return new(ctypes.addressof(self.managed), b"dltensor", None)


SEQS, HEADS, KV_HEADS, DIM, PAGE, PAGES, MAX_BLOCKS = 4, 8, 2, 64, 16, 100, 8


def seed_call(typestr="<f2", **changes):
    """The seed example's arguments as FakeCuda objects (16-byte aligned addresses); `changes` replaces some."""
    objs = dict(query=FakeCuda(0x100000, typestr, [SEQS, HEADS, DIM]),
                key_cache=FakeCuda(0x200000, typestr, [PAGES, KV_HEADS, PAGE, DIM]),
                value_cache=FakeCuda(0x300000, typestr, [PAGES, KV_HEADS, PAGE, DIM]),
                context_lens=FakeCuda(0x400000, "<i4", [SEQS]),
                block_tables=FakeCuda(0x500000, "<i4", [SEQS, MAX_BLOCKS]),
                out=FakeCuda(0x600000, typestr, [SEQS, HEADS, DIM]))
    objs.update(changes)
    return objs


def validate(**kw):
    objs = seed_call(**{k: v for k, v in kw.items() if k in ("query", "key_cache", "value_cache", "context_lens",
                                                               "block_tables", "out", "typestr")})
    opts = {k: v for k, v in kw.items() if k not in objs and k != "typestr"}
    pagedjit.validate(objs.pop("query"), objs.pop("key_cache"), objs.pop("value_cache"), objs.pop("context_lens"),
                      objs.pop("block_tables"), objs.pop("out"), **opts)


# ------------------------------------------------------------ the library and the structs

def test_library_and_versions():
    path, where = pagedjit.library_path()
    assert os.path.exists(path) or os.path.sep not in path, path
    cmake = open(os.path.join(REPO, "CMakeLists.txt")).read()
    project = re.search(r"project\(pagedjit VERSION (\S+)", cmake).group(1)
    assert pagedjit.version() == project, (pagedjit.version(), project, path, where)
    assert pagedjit.__version__ == project, "python/pagedjit/_version.py differs from CMakeLists.txt"


def _c_compiler():
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


def test_struct_layout_matches_the_header(tmp_path):
    """Every field's offset and every struct's size, as a C compiler sees pagedjit.h, against the ctypes mirrors."""
    cc = _c_compiler()
    if cc is None:
        pytest.skip("no C compiler (CC, cc, gcc, clang) to read the header's layout")
    lines, expected = [], []
    for cname, struct in _capi.STRUCTS.items():
        lines.append('printf("%s sizeof %%zu\\n", sizeof(%s));' % (cname, cname))
        expected.append("%s sizeof %d" % (cname, ctypes.sizeof(struct)))
        for field, ftype in struct._fields_:
            lines.append('printf("%s.%s %%zu %%zu\\n", offsetof(%s, %s), sizeof(((%s*)0)->%s));'
                         % (cname, field, cname, field, cname, field))
            expected.append("%s.%s %d %d" % (cname, field, getattr(struct, field).offset, ctypes.sizeof(ftype)))
    src = tmp_path / "layout.c"
    src.write_text('#include <stddef.h>\n#include <stdio.h>\n#include "pagedjit/pagedjit.h"\nint main(void) {\n'
                   + "\n".join("  " + s for s in lines) + "\n  return 0;\n}\n")
    exe = tmp_path / "layout"
    subprocess.check_call([cc, "-std=c99", "-I", os.path.join(REPO, "engine", "include"), str(src), "-o", str(exe)])
    got = subprocess.check_output([str(exe)]).decode().split("\n")[:-1]
    assert got == expected


def test_struct_field_names_cover_the_header():
    """No field of the header's structs is missing from the mirrors (a new field changes the size anyway, but
    a renamed one would not)."""
    header = open(os.path.join(REPO, "engine", "include", "pagedjit", "pagedjit.h")).read()
    for cname, struct in _capi.STRUCTS.items():
        body = re.search(r"typedef struct %s \{(.*?)\} %s;" % (cname, cname), header, re.S).group(1)
        body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
        names = re.findall(r"(\w+)(?:\[\w+\])?;", body)
        assert names == [f for f, _ in struct._fields_], cname


def test_option_defaults_and_mapping():
    lib = _capi.library()
    o = lib.default_options()
    assert o.inline_seq_dim == 1 and o.num_splits == 0 and o.has_attn_scale == 0 and o.megacore_mode is None
    assert o.mask_value == pytest.approx(_capi.DEFAULT_MASK_VALUE, rel=1e-6)
    o = _capi.options(lib, attn_scale=0.5, max_context_len=4096, num_splits=3, attn_logits_soft_cap=30.0,
                      sliding_window=256, pages_per_compute_block=4, mask_value=-1e30, return_lse=True,
                      batch_invariant=True, kernel_config={"tile_tokens": 64, "warps": 4})
    assert (o.has_attn_scale, o.attn_scale, o.has_max_context_len, o.max_context_len) == (1, 0.5, 1, 4096)
    assert (o.num_splits, o.has_attn_logits_soft_cap, o.attn_logits_soft_cap) == (3, 1, 30.0)
    assert (o.has_sliding_window, o.sliding_window, o.has_pages_per_compute_block) == (1, 256, 1)
    assert (o.return_lse, o.batch_invariant, o.has_kernel_config, o.tile_tokens, o.warps, o.stages) == \
        (1, 1, 1, 64, 4, 0)
    assert o.mask_value == pytest.approx(-1e30, rel=1e-6)
    with pytest.raises(pagedjit.InvalidArgumentError, match="unknown keys"):
        _capi.options(lib, kernel_config={"tiles": 1})


# ------------------------------------------------------------ dtypes and descriptors

def test_dtype_tables_match_the_header():
    header = open(os.path.join(REPO, "engine", "include", "pagedjit", "pagedjit.h")).read()
    values = dict((n, int(v)) for n, v in re.findall(r"PAGEDJIT_(F32|F16|BF16|I32|E4M3|E5M2) = (\d+)", header))
    assert values == {"F32": _capi.F32, "F16": _capi.F16, "BF16": _capi.BF16, "I32": _capi.I32,
                      "E4M3": _capi.E4M3, "E5M2": _capi.E5M2}
    assert sorted(_tensors.TORCH_DTYPES.values()) == list(range(6))
    assert sorted(_tensors.DLPACK_DTYPES.values()) == list(range(6))
    layouts = dict((n.lower(), int(v)) for n, v in
                   re.findall(r"PAGEDJIT_(BLOCKS_HEADS|HEADS_BLOCKS|BLOCKS_TOKENS) = (\d+)", header))
    assert layouts == _capi.LAYOUTS


def test_cuda_array_interface_descriptor():
    v = _tensors.describe(FakeCuda(0x1000, "<f2", [3, 4, 8], strides=(96, 16, 2)), "x")
    d = v.desc
    assert (d.data, d.dtype, d.rank, list(d.shape)[:3], list(d.strides)[:3]) == \
        (0x1000, _capi.F16, 3, [3, 4, 8], [48, 8, 1])
    assert v.device is None
    d = _tensors.describe(FakeCuda(0x1000, "<i4", [5, 7]), "x").desc
    assert list(d.strides)[:2] == [7, 1]
    with pytest.raises(pagedjit.InvalidArgumentError, match="typestr <f8"):
        _tensors.describe(FakeCuda(0x1000, "<f8", [3]), "x")
    with pytest.raises(pagedjit.InvalidArgumentError, match="not a multiple"):
        _tensors.describe(FakeCuda(0x1000, "<f4", [3], strides=(6,)), "x")
    with pytest.raises(pagedjit.InvalidArgumentError, match="rank 5"):
        _tensors.describe(FakeCuda(0x1000, "<f4", [1, 1, 1, 1, 1]), "x")


@pytest.mark.parametrize("code,bits,want", [(2, 32, _capi.F32), (2, 16, _capi.F16), (4, 16, _capi.BF16),
                                            (0, 32, _capi.I32), (10, 8, _capi.E4M3), (12, 8, _capi.E5M2)])
def test_dlpack_descriptor(code, bits, want):
    src = FakeDLPack(code, bits, [2, 3, 16], strides=[64, 16, 1], byte_offset=32)
    v = _tensors.describe(src, "x")
    d = v.desc
    assert (d.dtype, d.rank, list(d.shape)[:3], list(d.strides)[:3]) == (want, 3, [2, 3, 16], [64, 16, 1])
    assert d.data == ctypes.addressof(src.buffer) + 32 and v.device == "cpu"
    assert list(_tensors.describe(FakeDLPack(code, bits, [2, 5]), "x").desc.strides)[:2] == [5, 1]  # NULL strides


def test_dlpack_refusals():
    with pytest.raises(pagedjit.InvalidArgumentError, match="code 1, bits 8"):
        _tensors.describe(FakeDLPack(1, 8, [4]), "x")
    with pytest.raises(pagedjit.InvalidArgumentError, match="device type 4"):
        _tensors.describe(FakeDLPack(2, 32, [4], device_type=4), "x")
    assert _tensors.describe(FakeDLPack(2, 32, [4], device_type=2, device_id=3), "x").device == 3
    with pytest.raises(pagedjit.InvalidArgumentError, match="argument 'x'"):
        _tensors.describe(object(), "x")


# ------------------------------------------------------------ the engine's validation, as exceptions

def test_validate_accepts_the_seed_call():
    validate()
    validate(typestr="<f4", num_splits=2, sliding_window=32, attn_logits_soft_cap=20.0)


def test_validation_errors_carry_message_and_code():
    with pytest.raises(pagedjit.InvalidArgumentError) as e:
        validate(out=FakeCuda(0x600000, "<f2", [SEQS, HEADS, 32]))
    err = e.value
    assert isinstance(err, pagedjit.PagedJitError) and isinstance(err, ValueError)
    assert err.code == 1 and err.status_name == "invalid_argument" and "'output'" in err.message
    assert str(err).startswith("invalid_argument: ")
    with pytest.raises(pagedjit.NotSupportedError) as e:
        validate(megacore_mode="parallel")
    assert e.value.code == 2 and "'options.megacore_mode'" in e.value.message
    assert isinstance(e.value, NotImplementedError)
    with pytest.raises(pagedjit.NotSupportedError):
        validate(inline_seq_dim=False)
    with pytest.raises(pagedjit.InvalidArgumentError, match=r"'options\.kernel_config\.v_dims'"):
        validate(kernel_config={"v_dims": 8})  # the struct's last field
    with pytest.raises(pagedjit.InvalidArgumentError, match="'lse'"):
        validate(return_lse=True)
    with pytest.raises(pagedjit.InvalidArgumentError, match="'options.num_splits'"):
        validate(num_splits=-3)
    with pytest.raises(pagedjit.InvalidArgumentError, match="layout"):
        validate(layout="nhd")


def test_validate_through_dlpack_and_layouts():
    """bf16 through DLPack (no typestr has it), in each cache layout."""
    shapes = {"blocks_heads": [PAGES, KV_HEADS, PAGE, DIM], "heads_blocks": [KV_HEADS, PAGES, PAGE, DIM],
              "blocks_tokens": [PAGES, PAGE, KV_HEADS, DIM]}
    for layout, shape in shapes.items():
        q, out = FakeDLPack(4, 16, [SEQS, HEADS, DIM]), FakeDLPack(4, 16, [SEQS, HEADS, DIM])
        k, v = FakeDLPack(4, 16, shape), FakeDLPack(4, 16, shape)
        lens, table = FakeDLPack(0, 32, [SEQS]), FakeDLPack(0, 32, [SEQS, MAX_BLOCKS])
        lse = FakeDLPack(2, 32, [SEQS, HEADS])
        pagedjit.validate(q, k, v, lens, table, out, lse=lse, layout=layout, return_lse=True)
        with pytest.raises(pagedjit.InvalidArgumentError, match="key_cache"):
            pagedjit.validate(q, FakeDLPack(4, 16, [PAGES, KV_HEADS, PAGE, DIM + 16]), v, lens, table, out,
                              layout=layout)


def test_validate_merge():
    rows = [SEQS, HEADS]
    a, b, out = (FakeCuda(0x100000 * i, "<f2", rows + [DIM]) for i in (1, 2, 3))
    la, lb = FakeCuda(0x400000, "<f4", rows), FakeCuda(0x500000, "<f4", rows)
    pagedjit.validate_merge(a, la, b, lb, out)
    pagedjit.validate_merge(a, la, b, lb, FakeCuda(0x600000, "<f4", rows + [DIM]), lse=FakeCuda(0x700000, "<f4", rows))
    with pytest.raises(pagedjit.InvalidArgumentError, match="'out_b'"):
        pagedjit.validate_merge(a, la, FakeCuda(0x200000, "<f4", rows + [DIM]), lb, out)
    with pytest.raises(pagedjit.InvalidArgumentError, match="'lse_a'"):
        pagedjit.validate_merge(a, FakeCuda(0x400000, "<f4", [SEQS, HEADS + 1]), b, lb, out)
    with pytest.raises(pagedjit.InvalidArgumentError, match="'out_a'"):
        pagedjit.validate_merge(FakeCuda(0x100000, "<f2", rows + [6]), la, b, lb, out)


def test_validate_sinks():
    sinks = FakeCuda(0x700000, "<f4", [HEADS])
    objs = seed_call()
    args = [objs[n] for n in ("query", "key_cache", "value_cache", "context_lens", "block_tables", "out")]
    pagedjit.validate(*args, sinks=sinks)
    with pytest.raises(pagedjit.InvalidArgumentError, match="'sinks'"):
        pagedjit.validate(*args, sinks=FakeCuda(0x700000, "<f4", [HEADS + 1]))
    with pytest.raises(pagedjit.InvalidArgumentError, match="'sinks'"):
        pagedjit.validate(*args, sinks=FakeCuda(0x700000, "<f2", [HEADS]))


# ------------------------------------------------------------ ragged steps and append_kv

TOKENS = 10  # packed query rows of a ragged step over SEQS sequences
CACHE_SHAPES = {"blocks_heads": [PAGES, KV_HEADS, PAGE, DIM], "heads_blocks": [KV_HEADS, PAGES, PAGE, DIM],
                "blocks_tokens": [PAGES, PAGE, KV_HEADS, DIM]}


def ragged_call(typestr="<f2", layout="blocks_heads", **changes):
    """A ragged step's arguments (FakeCuda, 4 KiB apart at least); `changes` replaces or adds some."""
    cache = CACHE_SHAPES.get(layout, CACHE_SHAPES["blocks_heads"])
    objs = dict(query=FakeCuda(0x100000, typestr, [TOKENS, HEADS, DIM]),
                query_start=FakeCuda(0x180000, "<i4", [SEQS + 1]),
                key_cache=FakeCuda(0x200000, typestr, cache), value_cache=FakeCuda(0x300000, typestr, cache),
                context_lens=FakeCuda(0x400000, "<i4", [SEQS]),
                block_tables=FakeCuda(0x500000, "<i4", [SEQS, MAX_BLOCKS]),
                out=FakeCuda(0x600000, typestr, [TOKENS, HEADS, DIM]))
    objs.update(changes)
    return objs


def validate_ragged(layout="blocks_heads", **kw):
    objs = ragged_call(layout=layout, **{k: v for k, v in kw.items() if isinstance(v, FakeCuda) or k == "typestr"})
    rest = {k: v for k, v in kw.items() if k not in objs and k != "typestr"}
    pagedjit.validate_ragged(*[objs.pop(n) for n in ("query", "query_start", "key_cache", "value_cache",
                                                     "context_lens", "block_tables", "out")],
                             layout=layout, **objs, **rest)


def test_validate_ragged():
    for layout in CACHE_SHAPES:
        validate_ragged(layout=layout)
    validate_ragged(max_query_len=4, sinks=FakeCuda(0x700000, "<f4", [HEADS]),
                    seq_count=FakeCuda(0x710000, "<i4", [1]), lse=FakeCuda(0x720000, "<f4", [TOKENS, HEADS]),
                    return_lse=True, sliding_window=64, attn_logits_soft_cap=30.0)
    validate_ragged(typestr="<f4")
    bad = {
        "query": dict(query=FakeCuda(0x100000, "<f2", [SEQS, 2, HEADS, DIM])),  # rank 4: the paged call's shape
        "query_start": dict(query_start=FakeCuda(0x180000, "<i4", [SEQS])),
        "context_lens": dict(context_lens=FakeCuda(0x400000, "<f4", [SEQS])),
        "block_tables": dict(block_tables=FakeCuda(0x500000, "<i4", [SEQS + 1, MAX_BLOCKS])),
        "output": dict(out=FakeCuda(0x600000, "<f2", [TOKENS + 1, HEADS, DIM])),
        "value_cache": dict(value_cache=FakeCuda(0x300000, "<f2", [PAGES, KV_HEADS, PAGE, DIM + 16])),
        "sinks": dict(sinks=FakeCuda(0x700000, "<f4", [HEADS - 1])),
        "seq_count": dict(seq_count=FakeCuda(0x710000, "<i4", [2])),
        "max_query_len": dict(max_query_len=TOKENS + 1),
        "lse": dict(return_lse=True),
        "options.num_splits": dict(num_splits=-1),
    }
    for name, kw in bad.items():
        with pytest.raises(pagedjit.InvalidArgumentError) as e:
            validate_ragged(**kw)
        assert "'%s'" % name in e.value.message, (name, e.value.message)
    with pytest.raises(pagedjit.NotSupportedError, match="megacore_mode"):
        validate_ragged(megacore_mode="parallel")
    with pytest.raises(pagedjit.InvalidArgumentError, match="layout"):
        validate_ragged(layout="nhd")
    with pytest.raises(pagedjit.InvalidArgumentError, match="'key_cache'"):  # blocks_heads shapes, another layout
        objs = ragged_call(key_cache=FakeCuda(0x200000, "<f2", [PAGES, KV_HEADS, PAGE, DIM]),
                           value_cache=FakeCuda(0x300000, "<f2", [PAGES, KV_HEADS, PAGE, DIM]))
        pagedjit.validate_ragged(*[objs[n] for n in ("query", "query_start", "key_cache", "value_cache",
                                                     "context_lens", "block_tables", "out")], layout="blocks_tokens")


def append_call(typestr="<f2", layout="blocks_heads", cache_typestr=None, **changes):
    cache = CACHE_SHAPES.get(layout, CACHE_SHAPES["blocks_heads"])
    ct = cache_typestr or typestr
    objs = dict(keys=FakeCuda(0x100000, typestr, [TOKENS, KV_HEADS, DIM]),
                values=FakeCuda(0x140000, typestr, [TOKENS, KV_HEADS, DIM]),
                query_start=FakeCuda(0x180000, "<i4", [SEQS + 1]),
                context_lens=FakeCuda(0x400000, "<i4", [SEQS]),
                block_tables=FakeCuda(0x500000, "<i4", [SEQS, MAX_BLOCKS]),
                key_cache=FakeCuda(0x1000000, ct, cache), value_cache=FakeCuda(0x2000000, ct, cache))
    objs.update(changes)
    return objs


APPEND_ORDER = ("keys", "values", "query_start", "context_lens", "block_tables", "key_cache", "value_cache")


def validate_append(layout="blocks_heads", **kw):
    objs = append_call(layout=layout, **{k: v for k, v in kw.items() if k in APPEND_ORDER or k == "typestr"})
    rest = {k: v for k, v in kw.items() if k not in objs and k != "typestr"}
    pagedjit.validate_append(*[objs[n] for n in APPEND_ORDER], layout=layout, **rest)


def test_validate_append():
    for layout in CACHE_SHAPES:
        validate_append(layout=layout)
    validate_append(typestr="<f4", seq_count=FakeCuda(0x710000, "<i4", [1]))
    # an fp8 cache (DLPack: e4m3 has no typestr) with per-head scales
    e4m3 = [FakeDLPack(10, 8, CACHE_SHAPES["blocks_heads"]) for _ in range(2)]
    scale = FakeDLPack(2, 32, [KV_HEADS])
    host = [FakeDLPack(2, 16, [TOKENS, KV_HEADS, DIM]), FakeDLPack(2, 16, [TOKENS, KV_HEADS, DIM]),
            FakeDLPack(0, 32, [SEQS + 1]), FakeDLPack(0, 32, [SEQS]), FakeDLPack(0, 32, [SEQS, MAX_BLOCKS])]
    pagedjit.validate_append(*host, *e4m3, k_scale=scale, v_scale=FakeDLPack(2, 32, [1]))
    with pytest.raises(pagedjit.InvalidArgumentError, match="'v_scale'"):
        pagedjit.validate_append(*host, *e4m3, k_scale=scale, v_scale=FakeDLPack(2, 32, [KV_HEADS + 1]))
    bad = {
        "keys": dict(keys=FakeCuda(0x100000, "<i4", [TOKENS, KV_HEADS, DIM])),
        "values": dict(values=FakeCuda(0x140000, "<f2", [TOKENS + 1, KV_HEADS, DIM])),
        "query_start": dict(query_start=FakeCuda(0x180000, "<f4", [SEQS + 1])),
        "context_lens": dict(context_lens=FakeCuda(0x400000, "<i4", [SEQS + 1])),
        "block_tables": dict(block_tables=FakeCuda(0x500000, "<i4", [SEQS - 1, MAX_BLOCKS])),
        "key_cache": dict(key_cache=FakeCuda(0x1000000, "<f4", CACHE_SHAPES["blocks_heads"])),
        "value_cache": dict(value_cache=FakeCuda(0x1000000, "<f2", CACHE_SHAPES["blocks_heads"])),  # = key_cache
        "k_scale": dict(k_scale=FakeCuda(0x700000, "<f4", [1])),  # scales on an fp16 cache
        "seq_count": dict(seq_count=FakeCuda(0x710000, "<i4", [2])),
    }
    for name, kw in bad.items():
        with pytest.raises(pagedjit.InvalidArgumentError) as e:
            validate_append(**kw)
        assert "'%s'" % name in e.value.message, (name, e.value.message)
    with pytest.raises(pagedjit.InvalidArgumentError, match="'key_cache'"):  # the keys overlap the cache
        validate_append(keys=FakeCuda(0x1000000 + 4096, "<f2", [TOKENS, KV_HEADS, DIM]))
    with pytest.raises(pagedjit.InvalidArgumentError, match="layout"):
        validate_append(layout="nhd")


def test_ragged_and_append_without_torch_need_out_and_device_memory():
    objs = ragged_call()
    args = [objs[n] for n in ("query", "query_start", "key_cache", "value_cache", "context_lens", "block_tables")]
    with pytest.raises(pagedjit.InvalidArgumentError, match="'out'"):
        pagedjit.ragged_paged_attention(*args)
    with pytest.raises(pagedjit.InvalidArgumentError, match="'lse'"):
        pagedjit.ragged_paged_attention(*args, out=objs["out"], return_lse=True)
    with pytest.raises(pagedjit.InvalidArgumentError, match="'out_dtype'"):
        pagedjit.ragged_paged_attention(*args, out=objs["out"], out_dtype="fp32")
    host = [FakeDLPack(2, 16, [TOKENS, KV_HEADS, DIM]), FakeDLPack(2, 16, [TOKENS, KV_HEADS, DIM]),
            FakeDLPack(0, 32, [SEQS + 1]), FakeDLPack(0, 32, [SEQS]), FakeDLPack(0, 32, [SEQS, MAX_BLOCKS])] + \
        [FakeDLPack(2, 16, CACHE_SHAPES["blocks_heads"]) for _ in range(2)]
    with pytest.raises(pagedjit.InvalidArgumentError, match="host memory"):
        pagedjit.append_kv(*host)
    q = FakeDLPack(2, 16, [TOKENS, HEADS, DIM])
    with pytest.raises(pagedjit.InvalidArgumentError, match="host memory"):
        pagedjit.ragged_paged_attention(q, host[2], host[5], host[6], host[3], host[4], out=q)


def test_calls_without_torch_need_out_and_device_memory():
    objs = seed_call()
    args = [objs[n] for n in ("query", "key_cache", "value_cache", "context_lens", "block_tables")]
    with pytest.raises(pagedjit.InvalidArgumentError, match="'out'"):
        pagedjit.paged_attention(*args)
    with pytest.raises(pagedjit.InvalidArgumentError, match="'lse'"):
        pagedjit.paged_attention(*args, out=objs["out"], return_lse=True)
    host = [FakeDLPack(2, 32, [SEQS, HEADS, DIM])] + [FakeDLPack(2, 32, [PAGES, KV_HEADS, PAGE, DIM])] * 2 + \
        [FakeDLPack(0, 32, [SEQS]), FakeDLPack(0, 32, [SEQS, MAX_BLOCKS])]
    with pytest.raises(pagedjit.InvalidArgumentError, match="host memory"):
        pagedjit.paged_attention(*host, out=FakeDLPack(2, 32, [SEQS, HEADS, DIM]))
    with pytest.raises(pagedjit.InvalidArgumentError, match="one device"):
        q, kv = (FakeDLPack(2, 32, [SEQS, HEADS, DIM], device_type=2, device_id=0),
                 FakeDLPack(2, 32, [PAGES, KV_HEADS, PAGE, DIM], device_type=2, device_id=1))
        lens, table = FakeDLPack(0, 32, [SEQS], device_type=2), FakeDLPack(0, 32, [SEQS, MAX_BLOCKS], device_type=2)
        pagedjit.paged_attention(q, kv, kv, lens, table, out=q)


def test_every_status_has_its_exception_class():
    lib = _capi.library()
    classes = set()
    for code in range(1, 13):
        err = pagedjit.error_for_status(code, "boom")
        assert err.code == code and err.status_name == lib.status_name(code).decode(), code
        assert isinstance(err, pagedjit.PagedJitError) and type(err) is not pagedjit.PagedJitError
        classes.add(type(err))
        assert getattr(pagedjit, type(err).__name__) is type(err)
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and back.code == code and back.message == "boom"
    assert len(classes) == 12
    unknown = pagedjit.error_for_status(99, "odd")
    assert type(unknown) is pagedjit.PagedJitError and unknown.code == 99


def test_engine_without_a_device_raises_a_driver_error():
    if pagedjit.device_count() > 0:
        pytest.skip("this machine has a GPU the engine can use")
    with pytest.raises(pagedjit.PagedJitError) as e:
        pagedjit.Engine(0)
    assert e.value.code in (3, 4, 5, 6, 7) and e.value.message, e.value


def test_library_not_found_names_where_it_looked(tmp_path):
    code = textwrap.dedent("""
        import sys; sys.path.insert(0, %r)
        import pagedjit
        try:
            pagedjit.version()
        except pagedjit.LibraryNotFoundError as e:
            print("LNF", e)
    """ % os.path.dirname(os.path.dirname(pagedjit.__file__)))
    env = dict(os.environ, PAGEDJIT_LIBRARY=str(tmp_path / "nope.so"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith("LNF") and "nope.so" in out and "PAGEDJIT_LIBRARY" in out, out
