"""pytest setup: the package from this checkout (python/), the library from $PAGEDJIT_LIBRARY or the checkout's
build/, and the `gpu` marker: GPU tests skip visibly (pytest -rs) without torch, CUDA or a device."""
import os
import sys

import pytest

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(PYTHON_DIR)
if os.environ.get("PAGEDJIT_TEST_INSTALLED") != "1":  # 1: test the installed package instead
    sys.path.insert(0, PYTHON_DIR)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs torch with CUDA and a GPU the engine can use")


def gpu_skip_reason():
    """None when GPU tests can run, else why not."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    import pagedjit
    if pagedjit.device_count() == 0:
        return "the engine sees no CUDA device (pagedjit_device_count() == 0)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = None
    for item in items:
        if "gpu" in item.keywords:
            if reason is None:
                reason = gpu_skip_reason() or ""
            if reason:
                item.add_marker(pytest.mark.skip(reason="GPU test: " + reason))
