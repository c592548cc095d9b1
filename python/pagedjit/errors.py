"""Engine errors as Python exceptions: one class per pagedjit_status, all PagedJitError.

Each carries the engine's message (pagedjit_last_error), the numeric status
(`code`) and its name (`status_name`, as pagedjit_status_name gives it).
"""

__all__ = [
    "PagedJitError", "LibraryNotFoundError", "InvalidArgumentError", "NotSupportedError", "DriverNotFoundError",
    "StubLibraryError", "NoDeviceError", "DriverTooOldError", "DriverError", "CompileError", "CacheError",
    "JitDisabledError", "DeviceDataError", "InternalError", "error_for_status",
]


class PagedJitError(RuntimeError):
    """An error of the pagedjit engine. `code` is the pagedjit_status value (None: not from the engine)."""

    code = None
    status_name = None

    def __init__(self, message, code=None, status_name=None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_name is not None:
            self.status_name = status_name

    def __str__(self):
        return "%s: %s" % (self.status_name, self.message) if self.status_name else self.message

    def __reduce__(self):  # picklable (multiprocessing, torch.compile's workers)
        return (type(self), (self.message, self.code, self.status_name))


class LibraryNotFoundError(PagedJitError, OSError):
    """libpagedjit.so could not be found or loaded, or is older than this package."""


def _status(code, name, class_name, doc, *bases):
    return type(class_name, (PagedJitError,) + bases,
                {"code": code, "status_name": name, "__doc__": doc, "__module__": __name__})


# The same order and values as pagedjit_status in pagedjit/pagedjit.h; names as pagedjit_status_name gives them.
_ = _status
InvalidArgumentError = _(1, "invalid_argument", "InvalidArgumentError",
                         "The call's arguments are wrong; nothing was launched.", ValueError)
NotSupportedError = _(2, "not_supported", "NotSupportedError",
                      "Valid but not implemented (or a TPU-only option).", NotImplementedError)
DriverNotFoundError = _(3, "driver_not_found", "DriverNotFoundError", "libcuda.so.1 could not be loaded.")
StubLibraryError = _(4, "stub_library", "StubLibraryError",
                     "The toolkit's stub libcuda was loaded instead of the driver.")
NoDeviceError = _(5, "no_device", "NoDeviceError", "The driver works but the requested device does not exist.")
DriverTooOldError = _(6, "driver_too_old", "DriverTooOldError", "The driver cannot run code built by this toolkit.")
DriverError = _(7, "driver_error", "DriverError", "Any other CUDA driver failure.")
CompileError = _(8, "compile_error", "CompileError", "NVRTC rejected a kernel (the message holds the log).")
CacheError = _(9, "cache_error", "CacheError", "The kernel cache failed in a way that cannot degrade.")
JitDisabledError = _(10, "jit_disabled", "JitDisabledError", "PAGEDJIT_JIT=off and the kernel was not in the cache.")
DeviceDataError = _(11, "device_data", "DeviceDataError", "The validation mode found bad device data.")
InternalError = _(12, "internal", "InternalError", "Any other failure (out of memory, a bug).")
del _

_BY_CODE = {cls.code: cls for cls in (
    InvalidArgumentError, NotSupportedError, DriverNotFoundError, StubLibraryError, NoDeviceError, DriverTooOldError,
    DriverError, CompileError, CacheError, JitDisabledError, DeviceDataError, InternalError)}


def error_for_status(code, message, status_name=None):
    """The exception for a non-zero pagedjit_status (an unknown code gives a plain PagedJitError)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return PagedJitError(message, code, status_name or "unknown")
    return cls(message, code, status_name or cls.status_name)
