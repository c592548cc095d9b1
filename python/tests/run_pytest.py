#!/usr/bin/env python3
"""ctest's entry to the Python tests: runs pytest on python/tests with the library under test.

usage: run_pytest.py LIBRARY [pytest arguments...]
Sets PAGEDJIT_LIBRARY=LIBRARY, runs `python -m pytest -rs ARGS` (python/tests when ARGS name no file or
directory) and returns its status, except
that "no tests collected" (pytest's 5) is a failure with a message, and a missing pytest says how to get it.
"""
import os
import subprocess
import sys


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    try:
        import pytest  # noqa: F401  (only whether it is there)
    except ImportError:
        print("pytest is not installed for %s: scripts/install_deps.sh installs it (pip install pytest)"
              % sys.executable, file=sys.stderr)
        return 1
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PAGEDJIT_LIBRARY=os.path.abspath(sys.argv[1]), PYTHONDONTWRITEBYTECODE="1")
    extra = sys.argv[2:]
    paths = [a for a in extra if not a.startswith("-") and os.path.exists(a)]
    cmd = [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider"] + extra + ([] if paths else [here])
    status = subprocess.call(cmd, env=env)
    if status == 5:
        print("run_pytest: pytest collected no test (%s): the selection or the test files are broken"
              % " ".join(cmd), file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
