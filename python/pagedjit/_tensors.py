"""pagedjit_tensor descriptors of torch tensors, __cuda_array_interface__ objects and DLPack producers.

`describe(obj, name)` gives a View: the descriptor, the CUDA device the memory
is on (None: unknown, e.g. __cuda_array_interface__; "cpu": host memory, which
only validation accepts) and whatever must stay alive while the descriptor is
used (a DLPack capsule).
"""
import ctypes
import sys
from ctypes import POINTER, c_char_p, c_int32, c_int64, c_uint8, c_uint16, c_uint64, c_void_p

from . import _capi
from .errors import InvalidArgumentError

# ------------------------------------------------------------ dtypes

# The torch dtype's name (str(torch.float16) without "torch.") -> pagedjit_dtype.
TORCH_DTYPES = {"float32": _capi.F32, "float16": _capi.F16, "bfloat16": _capi.BF16, "int32": _capi.I32,
                "float8_e4m3fn": _capi.E4M3, "float8_e5m2": _capi.E5M2}
# __cuda_array_interface__ typestr -> pagedjit_dtype (bf16 and fp8 have no typestr: use torch or DLPack).
TYPESTRS = {"<f4": _capi.F32, "<f2": _capi.F16, "<i4": _capi.I32}
# DLPack (type code, bits, lanes) -> pagedjit_dtype (dlpack.h: kDLInt 0, kDLFloat 2, kDLBfloat 4,
# kDLFloat8_e4m3fn 10, kDLFloat8_e5m2 12).
DLPACK_DTYPES = {(2, 32, 1): _capi.F32, (2, 16, 1): _capi.F16, (4, 16, 1): _capi.BF16, (0, 32, 1): _capi.I32,
                 (10, 8, 1): _capi.E4M3, (12, 8, 1): _capi.E5M2}
KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13


def torch_dtype_code(dtype):
    """pagedjit_dtype of a torch dtype; InvalidArgumentError for others."""
    name = str(dtype).replace("torch.", "")
    if name not in TORCH_DTYPES:
        raise InvalidArgumentError("dtype %s has no pagedjit_dtype (supported: %s)"
                                   % (name, ", ".join(TORCH_DTYPES)), 1, "invalid_argument")
    return TORCH_DTYPES[name]


class View:
    __slots__ = ("desc", "device", "keepalive")

    def __init__(self, desc, device, keepalive=None):
        self.desc, self.device, self.keepalive = desc, device, keepalive


def _bad(name, what):
    return InvalidArgumentError("argument '%s': %s" % (name, what), 1, "invalid_argument")


def is_torch_tensor(obj):
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _from_torch(t, name):
    code = TORCH_DTYPES.get(str(t.dtype).replace("torch.", ""))
    if code is None:
        raise _bad(name, "dtype %s has no pagedjit_dtype (supported: %s)" % (t.dtype, ", ".join(TORCH_DTYPES)))
    if t.dim() > _capi.MAX_RANK:
        raise _bad(name, "rank %d above %d" % (t.dim(), _capi.MAX_RANK))
    device = t.device.index if t.device.type == "cuda" else "cpu" if t.device.type == "cpu" else None
    if device is None:
        raise _bad(name, "a CUDA tensor, got device %s" % t.device)
    return View(_capi.tensor(t.data_ptr() or None, code, list(t.shape), list(t.stride())), device)


def _from_cai(obj, name):
    cai = obj.__cuda_array_interface__
    typestr = cai["typestr"]
    if typestr not in TYPESTRS:
        raise _bad(name, "typestr %s has no pagedjit_dtype (supported: %s; bf16 and fp8 through torch or DLPack)"
                   % (typestr, ", ".join(TYPESTRS)))
    if cai.get("mask") is not None:
        raise _bad(name, "masked arrays are not supported")
    code = TYPESTRS[typestr]
    shape = [int(n) for n in cai["shape"]]
    strides = cai.get("strides")
    if strides is not None:
        item = _capi.ITEMSIZE[code]
        if any(s % item for s in strides):
            raise _bad(name, "byte strides %s not a multiple of the element size %d" % (list(strides), item))
        strides = [s // item for s in strides]
    if len(shape) > _capi.MAX_RANK:
        raise _bad(name, "rank %d above %d" % (len(shape), _capi.MAX_RANK))
    return View(_capi.tensor(cai["data"][0] or None, code, shape, strides), None)


# ------------------------------------------------------------ DLPack (legacy unversioned capsules)


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", c_int32), ("device_id", c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", c_uint8), ("bits", c_uint8), ("lanes", c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", c_void_p), ("device", _DLDevice), ("ndim", c_int32), ("dtype", _DLDataType),
                ("shape", POINTER(c_int64)), ("strides", POINTER(c_int64)), ("byte_offset", c_uint64)]


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype, _capsule_pointer.argtypes = c_void_p, [ctypes.py_object, c_char_p]


def _from_dlpack(obj, name):
    capsule = obj.__dlpack__()
    try:
        address = _capsule_pointer(capsule, b"dltensor")
    except ValueError:
        raise _bad(name, "__dlpack__() did not return a 'dltensor' capsule") from None
    t = _DLTensor.from_address(address)  # DLManagedTensor starts with its DLTensor
    key = (t.dtype.code, t.dtype.bits, t.dtype.lanes)
    if key not in DLPACK_DTYPES:
        raise _bad(name, "DLPack dtype (code %d, bits %d, lanes %d) has no pagedjit_dtype" % key)
    if t.ndim > _capi.MAX_RANK:
        raise _bad(name, "rank %d above %d" % (t.ndim, _capi.MAX_RANK))
    kind = t.device.device_type
    if kind in (KDL_CUDA, KDL_CUDA_MANAGED):
        device = t.device.device_id
    elif kind == KDL_CPU:
        device = "cpu"
    else:
        raise _bad(name, "DLPack device type %d: CUDA (2) or CUDA managed (13) memory expected" % kind)
    shape = [t.shape[i] for i in range(t.ndim)]
    strides = [t.strides[i] for i in range(t.ndim)] if t.strides else None
    data = (t.data or 0) + t.byte_offset
    return View(_capi.tensor(data or None, DLPACK_DTYPES[key], shape, strides), device, capsule)


def describe(obj, name):
    """A View of `obj`: a torch tensor, an object with __cuda_array_interface__, or a DLPack producer."""
    if is_torch_tensor(obj):
        return _from_torch(obj, name)
    if hasattr(obj, "__cuda_array_interface__"):
        return _from_cai(obj, name)
    if hasattr(obj, "__dlpack__"):
        return _from_dlpack(obj, name)
    raise _bad(name, "a torch tensor, an object with __cuda_array_interface__ or a DLPack producer, got %s"
               % type(obj).__name__)


def absent():
    return View(_capi.Tensor(), None)


def common_device(views, names):
    """The one CUDA device of the views that tell theirs (None: none tells); host memory is refused."""
    devices = {}
    for v, n in zip(views, names):
        if v.device == "cpu":
            raise _bad(n, "host memory: a CUDA device buffer is required to launch")
        if v.device is not None:
            devices.setdefault(v.device, n)
    if len(devices) > 1:
        raise _bad(names[0], "all tensors on one device, got %s"
                   % ", ".join("%s on cuda:%d" % (n, d) for d, n in devices.items()))
    return next(iter(devices), None)
