"""examples/python/hf_decode.py as a test: transformers' Llama, Qwen2 and Gemma-2 architectures with pagedjit as
their whole attention (append_kv and ragged_paged_attention over a paged cache: a ragged prefill, a step mixing a
decode with a prompt chunk, greedy decoding) against transformers' own attention (skips visibly without a GPU,
torch or transformers)."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gpu

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "python", "hf_decode.py")


def test_hf_decode():
    pytest.importorskip("transformers", reason="transformers is not installed")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                    env.get("PYTHONPATH")] if p)
    run = subprocess.run([sys.executable, EXAMPLE], env=env, capture_output=True, text=True, timeout=900)
    print(run.stdout)
    print(run.stderr, file=sys.stderr)
    if run.returncode == 77:
        pytest.skip(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0, "hf_decode.py failed (%d):\n%s\n%s" % (run.returncode, run.stdout[-6000:],
                                                                      run.stderr[-4000:])
