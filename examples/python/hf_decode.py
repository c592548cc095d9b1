#!/usr/bin/env python3
"""pagedjit inside models nobody here wrote: transformers' Llama, Qwen2 and Gemma-2 architectures.

For each model (built from a config with random weights, fixed seed; nothing is downloaded):
  a 512-token prompt (batch 2), then 128 greedy decode steps, twice:
    - transformers' own attention (SDPA; eager for Gemma-2, whose soft cap SDPA lacks),
    - pagedjit: an attention function registered through transformers' AttentionInterface that keeps
      its own paged KV cache (pages of 16 tokens in a random order, poisoned with NaN until written)
      and runs pagedjit.paged_attention on it for every decode step. The prompt goes through
      transformers' own attention (the ragged call does not exist yet), filling the pages.
  fp32: the generated tokens must be identical.
  bf16, teacher forcing (both fed the fp32 tokens): every step's logits must agree within bf16
  tolerance: pagedjit's distance to the fp32 logits at most 1.5x transformers' own bf16 distance
  (+0.005), and the two bf16 runs within 5% of each other (relative L2).
Then the attention time of one decode step at batch 64, 4k context (Llama shape, bf16): pagedjit over
a paged cache against what transformers does, SDPA over a contiguous cache.

  Llama:  4 layers, 32 query / 8 KV heads, head_dim 128
  Qwen2:  4 layers, 28 query / 4 KV heads (group 7), head_dim 128
  Gemma-2: 4 layers, 8 query / 4 KV heads, head_dim 128, logit soft cap 50, sliding window 256 on
           alternating layers (the context reaches 640, so the window cuts)

usage: hf_decode.py [--models llama,qwen2,gemma2] [--steps 128] [--no-timing]
Exit status: 0 all passed, 1 a check failed, 77 skipped (no GPU, torch or transformers; says why).
Needs transformers >= 4.48 (the attention interface).
"""
import argparse
import gc
import inspect
import math
import os
import sys
import time

SKIP = 77
DEVICE = "cuda"  # the decoding runs' device (a CPU dry run of the integration may set "cpu")
PAGE = 16
PROMPT = 512
BATCH = 2


def skip(reason):
    print("SKIP: " + reason)
    return SKIP


# ------------------------------------------------------------ the paged cache and the attention function

class PagedKV:
    """Per layer, key and value pages [num_pages, kv_heads, PAGE, head_dim] (pagedjit's blocks_heads, vLLM's
    layout); each sequence's pages are a random choice out of a shuffled pool, NaN until written."""

    def __init__(self, torch, layers, batch, kv_heads, head_dim, max_len, dtype, seed):
        per_seq = -(-max_len // PAGE)
        pages = batch * per_seq + 13  # spare pages nobody uses
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(pages, generator=g)[:batch * per_seq]
        self.table = perm.view(batch, per_seq).to(torch.int32).to(DEVICE)
        self.k = [torch.full((pages, kv_heads, PAGE, head_dim), float("nan"), dtype=dtype, device=DEVICE)
                  for _ in range(layers)]
        self.v = [torch.full_like(k, float("nan")) for k in self.k]
        self.lens = torch.zeros(batch, dtype=torch.int32, device=DEVICE)
        self.torch = torch
        self.calls = 0

    def write(self, layer, key, value, start):
        """key, value [batch, kv_heads, T, head_dim] at positions start .. start+T-1."""
        torch = self.torch
        t = key.shape[2]
        pos = torch.arange(start, start + t, device=DEVICE)
        pages = self.table[:, pos // PAGE].long()  # [batch, T]
        slots = (pos % PAGE)[None, :].expand_as(pages)
        self.k[layer][pages, :, slots, :] = key.permute(0, 2, 1, 3).to(self.k[layer].dtype)
        self.v[layer][pages, :, slots, :] = value.permute(0, 2, 1, 3).to(self.v[layer].dtype)


STATE = {"kv": None}


def make_attention(torch, pagedjit, reference_fn):
    """The attention function transformers calls: reference_fn for the prompt, pagedjit for decode steps."""

    def attention(module, query, key, value, attention_mask, **kwargs):
        kv = STATE["kv"]
        layer = module.layer_idx
        t = query.shape[2]
        start = key.shape[2] - t
        kv.write(layer, key[:, :, start:], value[:, :, start:], start)
        if t > 1:  # the prompt: transformers' own attention, as in the reference run
            return reference_fn(module, query, key, value, attention_mask, **kwargs)
        window = kwargs.get("sliding_window")
        if window is None and getattr(module, "is_sliding", False):
            window = getattr(module, "sliding_window", None)
        kv.lens.fill_(start + 1)
        out = pagedjit.paged_attention(query[:, :, 0], kv.k[layer], kv.v[layer], kv.lens, kv.table,
                                       attn_scale=kwargs.get("scaling"),
                                       attn_logits_soft_cap=kwargs.get("softcap"), sliding_window=window,
                                       max_context_len=start + 1)
        kv.calls += 1
        return out[:, None], None  # [batch, 1, heads, head_dim], as transformers' functions return

    return attention


def register(torch, pagedjit, transformers):
    """Registers "pagedjit_sdpa" and "pagedjit_eager" (the prompt through SDPA or the model's eager attention)
    with transformers' attention interface, and their masks as those of sdpa and eager."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def eager(module, *args, **kwargs):
        return sys.modules[type(module).__module__].eager_attention_forward(module, *args, **kwargs)

    functions = {"pagedjit_sdpa": make_attention(torch, pagedjit, ALL_ATTENTION_FUNCTIONS["sdpa"]),
                 "pagedjit_eager": make_attention(torch, pagedjit, eager)}
    for name, fn in functions.items():
        if hasattr(transformers, "AttentionInterface"):
            transformers.AttentionInterface.register(name, fn)
        else:  # 4.48 / 4.49: a plain dict
            ALL_ATTENTION_FUNCTIONS[name] = fn
    try:  # >= 4.53: masks are made per implementation
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    except ImportError:
        return
    for name, base in (("pagedjit_sdpa", "sdpa"), ("pagedjit_eager", "eager")):
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])


def set_attention(model, name):
    try:
        model.set_attn_implementation(name)
    except Exception:  # older versions: the config field is what the layers read
        model.config._attn_implementation = name


# ------------------------------------------------------------ models

def configs(transformers):
    common = dict(vocab_size=8192, num_hidden_layers=4, intermediate_size=2048, max_position_embeddings=4096,
                  head_dim=128, tie_word_embeddings=False)
    return {
        "llama": ("sdpa", transformers.LlamaConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
                                                   **common)),
        "qwen2": ("sdpa", transformers.Qwen2Config(hidden_size=3584, num_attention_heads=28, num_key_value_heads=4,
                                                   use_sliding_window=False, **common)),
        "gemma2": ("eager", transformers.Gemma2Config(hidden_size=1024, num_attention_heads=8,
                                                      num_key_value_heads=4, query_pre_attn_scalar=128,
                                                      attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                                                      sliding_window=256, **common)),
    }


def build(torch, transformers, config, seed):
    torch.manual_seed(seed)
    with torch.device(DEVICE):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return model.float().eval()


def decode(torch, transformers, model, prompt, steps, force=None):
    """Greedy decoding (or teacher forcing with `force`): (tokens [batch, steps+1], logits [batch, steps+1, vocab])."""
    cache = transformers.DynamicCache()  # full-length for every layer: the same in both runs
    # transformers 5 renames past_key_values to cache
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(input_ids=prompt, use_cache=True, **{name: cache})
    logits = [out.logits[:, -1].float()]
    tokens = []
    for i in range(steps + 1):
        tok = logits[-1].argmax(-1) if force is None else force[:, i]
        tokens.append(tok)
        if i == steps:
            break
        out = model(input_ids=tok[:, None], use_cache=True, **{name: cache})
        logits.append(out.logits[:, -1].float())
    return torch.stack(tokens, 1), torch.stack(logits, 1)


def run_model(torch, transformers, name, reference, config, steps, seed):
    ok = True
    model = build(torch, transformers, config, seed)
    g = torch.Generator().manual_seed(seed + 1)
    prompt = torch.randint(0, config.vocab_size, (BATCH, PROMPT), generator=g).to(DEVICE)
    heads, kv_heads, dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    layers = config.num_hidden_layers

    def pagedjit_run(dtype, force=None):
        STATE["kv"] = PagedKV(torch, layers, BATCH, kv_heads, dim, PROMPT + steps + 1, dtype, seed + 2)
        set_attention(model, "pagedjit_" + reference)
        try:
            result = decode(torch, transformers, model, prompt, steps, force)
        finally:
            set_attention(model, reference)
        calls = STATE["kv"].calls
        assert calls == layers * steps, "pagedjit ran %d times, expected %d (layers x steps)" % (calls, layers * steps)
        return result

    with torch.inference_mode():
        t0 = time.time()
        set_attention(model, reference)
        ref_tokens, ref_logits32 = decode(torch, transformers, model, prompt, steps)
        pj_tokens, pj_logits32 = pagedjit_run(torch.float32)
        same = (ref_tokens == pj_tokens).all(dim=0)
        first_diff = (~same).nonzero()
        print("%-7s %d heads / %d KV heads, d%d, %d layers; %s vs pagedjit" % (name, heads, kv_heads, dim, layers,
                                                                                reference))
        if first_diff.numel() == 0:
            print("  fp32: %d of %d generated tokens identical (batch %d)" % (same.numel(), same.numel(), BATCH))
        else:
            ok = False
            i = first_diff[0].item()
            top2 = ref_logits32[:, i].topk(2, dim=-1).values
            print("  fp32: FAIL: tokens differ from step %d on: %s vs %s (transformers' top-2 logit gaps there %s, "
                  "pagedjit's logits %.2e away in relative L2)"
                  % (i, ref_tokens[:, i].tolist(), pj_tokens[:, i].tolist(), (top2[:, 0] - top2[:, 1]).tolist(),
                     ((pj_logits32[:, i] - ref_logits32[:, i]).norm() / ref_logits32[:, i].norm()).item()))
        rel32 = ((pj_logits32 - ref_logits32).norm(dim=-1) / ref_logits32.norm(dim=-1)).max().item()
        print("  fp32: logits max relative L2 difference over the steps %.2e" % rel32)

        model.to(torch.bfloat16)
        _, ref_logits16 = decode(torch, transformers, model, prompt, steps, force=ref_tokens)
        _, pj_logits16 = pagedjit_run(torch.bfloat16, force=ref_tokens)

        def rel(a, b):
            return ((a - b).norm(dim=-1) / b.norm(dim=-1)).amax(dim=0)  # per step, worst sequence

        err_ref, err_pj, between = rel(ref_logits16, ref_logits32), rel(pj_logits16, ref_logits32), \
            rel(pj_logits16, ref_logits16)
        bad = ((err_pj > 1.5 * err_ref + 0.005) | (between > 0.05)).nonzero()
        print("  bf16, teacher forcing, %d steps: relative L2 to fp32 logits: transformers max %.2e, pagedjit "
              "max %.2e; pagedjit vs transformers max %.2e, mean %.2e" % (
                  len(err_ref), err_ref.max().item(), err_pj.max().item(), between.max().item(),
                  between.mean().item()))
        if bad.numel():
            ok = False
            i = bad[0].item()
            print("  bf16: FAIL at step %d: pagedjit %.3e vs transformers %.3e from fp32, %.3e apart"
                  % (i, err_pj[i].item(), err_ref[i].item(), between[i].item()))
        else:
            print("  bf16: every step within tolerance")
        print("  (%.1f s)" % (time.time() - t0))
    return ok


# ------------------------------------------------------------ attention time per decode step

def timing(torch, pagedjit, transformers, batch=64, context=4096, heads=32, kv_heads=8, dim=128, layers=4):
    import types
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    dtype = torch.bfloat16
    g = torch.Generator(device="cuda").manual_seed(7)
    q = torch.randn(batch, heads, 1, dim, device="cuda", dtype=dtype, generator=g)
    k = torch.randn(batch, kv_heads, context, dim, device="cuda", dtype=dtype, generator=g)
    v = torch.randn(batch, kv_heads, context, dim, device="cuda", dtype=dtype, generator=g)
    per_seq = context // PAGE
    perm = torch.randperm(batch * per_seq, device="cuda", generator=g)
    table = perm.view(batch, per_seq).to(torch.int32)
    # the same keys and values, paged: page p of sequence s holds tokens p*PAGE .. of k[s]
    kp = torch.empty(batch * per_seq, kv_heads, PAGE, dim, device="cuda", dtype=dtype)
    vp = torch.empty_like(kp)
    kp[table.long()] = k.view(batch, kv_heads, per_seq, PAGE, dim).permute(0, 2, 1, 3, 4)
    vp[table.long()] = v.view(batch, kv_heads, per_seq, PAGE, dim).permute(0, 2, 1, 3, 4)
    lens = torch.full((batch,), context, dtype=torch.int32, device="cuda")
    module = types.SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True, training=False,
                                   config=None)
    scale = 1 / math.sqrt(dim)

    def sdpa():
        return sdpa_attention_forward(module, q, k, v, None, scaling=scale, dropout=0.0)[0]

    try:
        sdpa()
    except Exception as e:  # a version whose function wants more of the module: its core, as it does it
        print("  (transformers' sdpa_attention_forward needs a real module here (%s): timing "
              "torch SDPA over the repeated KV heads instead)" % e)
        kr, vr = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))

        def sdpa():
            return torch.nn.functional.scaled_dot_product_attention(q, kr, vr, scale=scale).transpose(1, 2)

    def paged():
        return pagedjit.paged_attention(q[:, :, 0], kp, vp, lens, table, max_context_len=context)

    a, b = paged().float(), sdpa()[:, 0].float()
    agree = ((a - b).norm() / b.norm()).item()

    def time_it(fn, reps=50):
        for _ in range(5):
            fn()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / reps * 1000  # us

    t_pj, t_sdpa = time_it(paged), time_it(sdpa)
    kv_bytes = 2 * k.numel() * k.element_size()
    print("attention per decode step, batch %d, context %d, %d/%d heads d%d, bf16 (%s):"
          % (batch, context, heads, kv_heads, dim, torch.cuda.get_device_name()))
    print("  pagedjit (paged cache, random pages): %8.1f us per layer, %8.1f us per %d-layer step, %6.0f GB/s"
          % (t_pj, t_pj * layers, layers, kv_bytes / t_pj / 1e3))
    print("  transformers SDPA (contiguous cache): %8.1f us per layer, %8.1f us per %d-layer step, %6.0f GB/s"
          % (t_sdpa, t_sdpa * layers, layers, kv_bytes / t_sdpa / 1e3))
    print("  pagedjit / SDPA time %.2f; outputs agree to %.1e (relative L2)" % (t_pj / t_sdpa, agree))
    return agree < 2e-2


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="llama,qwen2,gemma2")
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--seed", type=int, default=2026)
    a = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        return skip("torch is not installed")
    if not torch.cuda.is_available():
        return skip("no CUDA device")
    try:
        import transformers
    except ImportError:
        return skip("transformers is not installed")
    try:
        import pagedjit
    except ImportError:  # not installed: the package of this checkout
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
        import pagedjit
    if pagedjit.device_count() == 0:
        return skip("the engine sees no CUDA device")
    print("transformers %s, torch %s, pagedjit %s (%s), %s" % (transformers.__version__, torch.__version__,
                                                              pagedjit.version(), pagedjit.library_path()[0],
                                                              torch.cuda.get_device_name()))
    register(torch, pagedjit, transformers)
    all_configs = configs(transformers)
    ok = True
    t0 = time.time()
    for name in a.models.split(","):
        reference, config = all_configs[name]
        ok = run_model(torch, transformers, name, reference, config, a.steps, a.seed) and ok
        gc.collect()  # the model goes before the next one is built
        torch.cuda.empty_cache()
    if not a.no_timing:
        ok = timing(torch, pagedjit, transformers) and ok
    print("%s (%.0f s)" % ("PASS" if ok else "FAIL", time.time() - t0))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
