"""A PEP 517 build backend for the pagedjit package, with no dependency (no setuptools from an index).

The wheel holds pagedjit/*.py and, when found, libpagedjit.so as pagedjit/lib/libpagedjit.so:
  1. $PAGEDJIT_LIBRARY,
  2. the checkout's build/libpagedjit.so,
  3. none when the system's dynamic loader finds libpagedjit (the package then loads that one),
  4. else scripts/setup.sh builds the checkout, and build/libpagedjit.so is bundled.
"""
import base64
import ctypes.util
import hashlib
import io
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.dirname(HERE)
REPO = os.path.dirname(PYTHON_DIR)
NAME = "pagedjit"
SUMMARY = "Paged-attention decode kernels built at run time with NVRTC, from Python (ctypes) and PyTorch"


def _version():
    text = open(os.path.join(PYTHON_DIR, "pagedjit", "_version.py")).read()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def _metadata():
    return ("Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: %s\nRequires-Python: >=3.8\n"
            "Provides-Extra: torch\nRequires-Dist: torch>=2.4; extra == \"torch\"\n"
            "Provides-Extra: test\nRequires-Dist: pytest; extra == \"test\"\n" % (NAME, _version(), SUMMARY))


def _log(msg):
    print("pagedjit build: " + msg, file=sys.stderr)


def find_library():
    """The libpagedjit.so file to bundle, or None when the system provides one."""
    explicit = os.environ.get("PAGEDJIT_LIBRARY")
    if explicit:
        if not os.path.isfile(explicit):
            raise RuntimeError("PAGEDJIT_LIBRARY=%s: no such file" % explicit)
        _log("bundling %s ($PAGEDJIT_LIBRARY)" % explicit)
        return explicit
    built = os.path.join(REPO, "build", "libpagedjit.so")
    if os.path.isfile(built):
        _log("bundling %s (the checkout's build)" % built)
        return built
    if ctypes.util.find_library("pagedjit"):
        _log("not bundling: the system provides %s" % ctypes.util.find_library("pagedjit"))
        return None
    setup = os.path.join(REPO, "scripts", "setup.sh")
    if not os.path.isfile(setup):
        raise RuntimeError("libpagedjit.so not found ($PAGEDJIT_LIBRARY, %s, the system) and no checkout to "
                           "build it in" % built)
    _log("libpagedjit.so not found: building the checkout with scripts/setup.sh")
    subprocess.check_call([setup], stdout=sys.stderr)
    if not os.path.isfile(built):
        raise RuntimeError("scripts/setup.sh did not produce %s" % built)
    return built


def _package_files():
    pkg = os.path.join(PYTHON_DIR, NAME)
    for name in sorted(os.listdir(pkg)):
        if name.endswith(".py"):
            yield os.path.join(pkg, name), "%s/%s" % (NAME, name)


def _record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d" % (arcname, digest, len(data))


def _write_wheel(wheel_directory, files, purelib):
    """files: [(arcname, bytes)]. Returns the wheel's file name."""
    version = _version()
    tag = "py3-none-any" if purelib else "py3-none-" + re.sub(r"[-.]", "_", sysconfig.get_platform())
    name = "%s-%s-%s.whl" % (NAME, version, tag)
    info = "%s-%s.dist-info" % (NAME, version)
    files = list(files) + [
        (info + "/METADATA", _metadata().encode()),
        (info + "/WHEEL", ("Wheel-Version: 1.0\nGenerator: pagedjit_build\nRoot-Is-Purelib: %s\nTag: %s\n"
                           % ("true" if purelib else "false", tag)).encode()),
        (info + "/top_level.txt", (NAME + "\n").encode()),
    ]
    record = [_record_line(a, d) for a, d in files] + [info + "/RECORD,,"]
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for arcname, data in files:
            zi = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
            zi.external_attr = (0o755 if arcname.endswith(".so") else 0o644) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
        z.writestr(info + "/RECORD", "\n".join(record) + "\n")
    return name


# ------------------------------------------------------------ PEP 517 / 660 hooks

def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = [(arc, open(path, "rb").read()) for path, arc in _package_files()]
    lib = find_library()
    if lib:
        files.append(("%s/lib/libpagedjit.so" % NAME, open(os.path.realpath(lib), "rb").read()))
    return _write_wheel(wheel_directory, files, purelib=lib is None)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    """`pip install -e ./python`: a .pth file puts python/ on sys.path; the library is found at run time
    ($PAGEDJIT_LIBRARY, the checkout's build/, the system)."""
    return _write_wheel(wheel_directory, [("pagedjit_editable.pth", (PYTHON_DIR + "\n").encode())], purelib=True)


def build_sdist(sdist_directory, config_settings=None):
    """The Python sources only (a wheel built from it bundles $PAGEDJIT_LIBRARY or uses the system's)."""
    base = "%s-%s" % (NAME, _version())
    name = base + ".tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for rel in ["pyproject.toml", "build_backend/pagedjit_build.py"] + [a for _, a in _package_files()]:
            tar.add(os.path.join(PYTHON_DIR, rel), arcname="%s/%s" % (base, rel))
        pkg_info = _metadata().encode()
        ti = tarfile.TarInfo("%s/PKG-INFO" % base)
        ti.size = len(pkg_info)
        tar.addfile(ti, io.BytesIO(pkg_info))
    return name
