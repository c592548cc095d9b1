#!/usr/bin/env python3
"""pagedjit as the whole attention of models nobody here wrote: transformers' Llama, Qwen2 and Gemma-2 architectures.

For each model (built from a config with random weights, fixed seed; nothing is downloaded), two sequences
(prompts of 512 and 347 tokens) go through 129 forward passes, the second prompt in two chunks:
    forward 0:      a ragged prefill: all 512 tokens of sequence 0, the first 200 of sequence 1;
    forward 1:      a mixed step: sequence 0's first decode next to sequence 1's last 147 prompt tokens
                    (a chunk over 200 cached tokens);
    forwards 2..128: one greedy decode token per sequence,
twice:
  - pagedjit: an attention function registered through transformers' AttentionInterface computes every
    forward's attention, prompt and decode alike. It keeps its own paged KV cache (pages of 16 tokens in a random
    order, poisoned with NaN until written); per layer and forward it packs the real rows of the padded batch,
    writes their keys and values into the pages with pagedjit.append_kv and attends with one
    pagedjit.ragged_paged_attention call (causal per sequence; scale, Gemma-2's logit soft cap and its sliding
    window on alternating layers passed as options). The batch is one [2, width] input per forward, each
    sequence's new tokens right-aligned and left-padded, with explicit position ids; padding rows are never
    appended nor attended, and their output is zero. The model runs without a cache of its own (use_cache
    False): the pages are the only place the keys and values stay.
  - transformers' own attention (SDPA; eager for Gemma-2, whose soft cap SDPA lacks) on each sequence alone, fed
    the same chunks: no padding, so nothing depends on how transformers masks padding (a step mixing a decode
    with a chunk puts padding inside a sequence's cache columns, where Gemma-2's sliding window, counted in
    columns, would see fewer tokens).
  fp32: the argmax token of every forward must be identical (the 129 tokens sequence 0 generates, the 128 of
  sequence 1, and sequence 1's prediction inside its prompt after forward 0).
  bf16, teacher forcing (both fed the fp32 run's tokens): every forward's logits must agree within bf16
  tolerance: pagedjit's distance to the fp32 logits at most 1.5x transformers' own bf16 distance (+0.005), and
  the two bf16 runs within 5% of each other (relative L2).
Then timings (Llama shape, 32 query / 8 KV heads, head_dim 128, bf16, CUDA events):
  - a decode step at batch 64, 4k context: pagedjit.paged_attention over a paged cache against what transformers
    does, SDPA over a contiguous cache;
  - a prompt step, 4 prompts of 2048 tokens, causal: pagedjit.ragged_paged_attention over the paged cache (and
    the append_kv that fills it) against transformers' SDPA over the same keys and values, contiguous.

  Llama:  4 layers, 32 query / 8 KV heads, head_dim 128
  Qwen2:  4 layers, 28 query / 4 KV heads (group 7), head_dim 128
  Gemma-2: 4 layers, 8 query / 4 KV heads, head_dim 128, logit soft cap 50, sliding window 256 on
           alternating layers (the prompt alone passes it, the context reaches 640)

usage: hf_decode.py [--models llama,qwen2,gemma2] [--steps 128] [--chunks 512,200+147] [--no-timing]
  --chunks: per sequence (comma-separated) its prompt's chunk lengths, one per forward ('+'-separated).
Exit status: 0 all passed, 1 a check failed, 77 skipped (no GPU, torch or transformers; says why).
Needs transformers >= 4.48 (the attention interface). Gemma-2 needs >= 4.53: before it transformers' own Gemma-2
attention builds its sliding-window mask for a HybridCache only, and a chunk over a DynamicCache past the window
fails or is masked wrongly there; the script then skips Gemma-2, saying so.
"""
import argparse
import gc
import inspect
import math
import os
import re
import sys
import time

SKIP = 77
DEVICE = "cuda"  # every tensor's device (a CPU dry run of the integration may set "cpu")
PAGE = 16
CHUNKS = "512,200+147"


def skip(reason):
    print("SKIP: " + reason)
    return SKIP


# ------------------------------------------------------------ the paged cache and the attention function

class PagedKV:
    """Per layer, key and value pages [num_pages, kv_heads, PAGE, head_dim] (pagedjit's blocks_heads, vLLM's
    layout); each sequence's pages are a random choice out of a shuffled pool, NaN until written. begin() sets the
    plan of the next forward, which every layer's attention call uses."""

    def __init__(self, torch, layers, batch, kv_heads, head_dim, max_len, dtype, seed):
        per_seq = -(-max_len // PAGE)
        pages = batch * per_seq + 13  # spare pages nobody uses
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(pages, generator=g)[:batch * per_seq]
        self.table = perm.view(batch, per_seq).to(torch.int32).to(DEVICE)
        self.k = [torch.full((pages, kv_heads, PAGE, head_dim), float("nan"), dtype=dtype, device=DEVICE)
                  for _ in range(layers)]
        self.v = [torch.full_like(k, float("nan")) for k in self.k]
        self.lens = [0] * batch  # tokens cached per sequence (host)
        self.torch = torch
        self.calls = 0

    def begin(self, q_lens, width):
        """The next forward brings q_lens[s] new tokens of sequence s, the last q_lens[s] columns of its row of
        `width` (left padding)."""
        torch = self.torch
        starts = [0]
        for q in q_lens:
            starts.append(starts[-1] + q)
        self.lens = [n + q for n, q in zip(self.lens, q_lens)]
        self.query_start = torch.tensor(starts, dtype=torch.int32).to(DEVICE)
        self.context_lens = torch.tensor(self.lens, dtype=torch.int32).to(DEVICE)  # this forward's tokens included
        # where the packed rows sit in the flattened [batch * width] grid of the padded input
        self.rows = torch.tensor([s * width + c for s, q in enumerate(q_lens) for c in range(width - q, width)],
                                 dtype=torch.long).to(DEVICE)
        self.width, self.max_query_len, self.max_context_len = width, max(q_lens), max(self.lens)


STATE = {"kv": None}


def make_attention(pagedjit):
    """The attention function transformers calls for every layer and forward: append this forward's keys and
    values to the pages, then one ragged call over them. transformers' mask is not needed: the plan says which rows
    are whose, and the ragged call is causal per sequence."""

    def attention(module, query, key, value, attention_mask, **kwargs):
        kv = STATE["kv"]
        layer = module.layer_idx
        batch, heads, width, dim = query.shape  # key, value: [batch, kv_heads, width, dim] (the model has no cache)
        assert width == kv.width == key.shape[2], "a forward of %d columns (keys %d), planned %d" % (
            width, key.shape[2], kv.width)

        def packed(x):  # [batch, h, width, dim] -> [tokens, h, dim]: the real rows, in sequence order
            return x.transpose(1, 2).reshape(batch * width, x.shape[1], dim).index_select(0, kv.rows)

        pagedjit.append_kv(packed(key), packed(value), kv.query_start,
                           kv.context_lens, kv.table, kv.k[layer], kv.v[layer])
        window = kwargs.get("sliding_window")
        if window is None and getattr(module, "is_sliding", False):
            window = getattr(module, "sliding_window", None)
        out = pagedjit.ragged_paged_attention(packed(query), kv.query_start, kv.k[layer], kv.v[layer],
                                              kv.context_lens, kv.table, max_query_len=kv.max_query_len,
                                              max_context_len=kv.max_context_len, attn_scale=kwargs.get("scaling"),
                                              attn_logits_soft_cap=kwargs.get("softcap"), sliding_window=window)
        kv.calls += 1
        full = out.new_zeros(batch * width, heads, dim).index_copy_(0, kv.rows, out)  # padding rows: zero
        return full.view(batch, width, heads, dim), None  # [batch, q_len, heads, head_dim], as transformers' return

    return attention


def register(pagedjit, transformers):
    """Registers "pagedjit_sdpa" and "pagedjit_eager" with transformers' attention interface (one function; the two
    names give the layers the masks of sdpa and eager, which the function does not read, so that each model keeps
    the mask path it has with its reference implementation)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    fn = make_attention(pagedjit)
    for name in ("pagedjit_sdpa", "pagedjit_eager"):
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


def generate(torch, transformers, model, prompts, chunks, forwards, force=None, kv=None):
    """`forwards` forward passes over the sequences of `prompts` (1-D token tensors) in one batch. Sequence s's
    prompt goes in pieces of chunks[s][i] tokens at forward i; after it, one token a forward: its greedy choice, or
    force[s, i - 1]. Each forward's new tokens are right-aligned in a [batch, width] input (width: the most any
    sequence brings), left-padded with token 0, with explicit position ids.
    kv None: the model's own attention and cache (transformers' DynamicCache); then the batch must need no padding.
    kv a PagedKV: the model keeps no cache and pagedjit's attention function reads kv's plan, set per forward.
    Returns (tokens [batch, forwards]: each forward's argmax, logits [batch, forwards, vocab]: its last column's)."""
    batch = len(prompts)
    kwargs = dict(use_cache=kv is None)
    if kv is None:
        # transformers 5 renames past_key_values to cache
        name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        kwargs[name] = transformers.DynamicCache()  # full-length for every layer
    seen = [0] * batch
    tokens, logits = [], []
    for i in range(forwards):
        new = []
        for s in range(batch):
            if i < len(chunks[s]):
                start = sum(chunks[s][:i])
                new.append(prompts[s][start:start + chunks[s][i]])
            else:
                new.append((tokens[-1] if force is None else force[:, i - 1])[s:s + 1])
        width = max(len(t) for t in new)
        ids = torch.zeros(batch, width, dtype=torch.long, device=DEVICE)
        pos = torch.zeros(batch, width, dtype=torch.long, device=DEVICE)
        for s, t in enumerate(new):
            ids[s, width - len(t):] = t
            pos[s, width - len(t):] = torch.arange(seen[s], seen[s] + len(t), device=DEVICE)
            seen[s] += len(t)
        if kv is None:
            assert all(len(t) == width for t in new), "transformers' own attention runs unpadded batches here"
            # all ones, but its length tells older versions (Gemma-2 before 4.53) how long the mask must be
            kwargs["attention_mask"] = torch.ones(batch, seen[0], dtype=torch.long, device=DEVICE)
        else:
            kv.begin([len(t) for t in new], width)
        out = model(input_ids=ids, position_ids=pos, **kwargs)
        logits.append(out.logits[:, -1].float())
        tokens.append(logits[-1].argmax(-1))
    return torch.stack(tokens, 1), torch.stack(logits, 1)


def run_model(torch, transformers, name, reference, config, chunks, steps, seed):
    ok = True
    model = build(torch, transformers, config, seed)
    g = torch.Generator().manual_seed(seed + 1)
    prompts = [torch.randint(0, config.vocab_size, (sum(c),), generator=g).to(DEVICE) for c in chunks]
    heads, kv_heads, dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    layers = config.num_hidden_layers
    batch, forwards = len(prompts), steps + 1

    def reference_run(force=None):  # each sequence alone: no padding
        runs = [generate(torch, transformers, model, [prompts[s]], [chunks[s]], forwards,
                         None if force is None else force[s:s + 1]) for s in range(batch)]
        return torch.cat([r[0] for r in runs]), torch.cat([r[1] for r in runs])

    def pagedjit_run(dtype, force=None):
        kv = STATE["kv"] = PagedKV(torch, layers, batch, kv_heads, dim, max(map(len, prompts)) + forwards, dtype,
                                   seed + 2)
        set_attention(model, "pagedjit_" + reference)
        try:
            result = generate(torch, transformers, model, prompts, chunks, forwards, force, kv)
        finally:
            set_attention(model, reference)
            STATE["kv"] = None
        assert kv.calls == layers * forwards, "pagedjit ran %d times, expected %d (layers x forwards)" % (
            kv.calls, layers * forwards)
        return result

    with torch.inference_mode():
        t0 = time.time()
        print("%-7s %d heads / %d KV heads, d%d, %d layers; %s vs pagedjit; prompts %s, %d forwards" % (
            name, heads, kv_heads, dim, layers, reference,
            " and ".join("%d (%s)" % (sum(c), "+".join(map(str, c))) if len(c) > 1 else str(c[0]) for c in chunks),
            forwards))
        set_attention(model, reference)
        ref_tokens, ref_logits32 = reference_run()
        pj_tokens, pj_logits32 = pagedjit_run(torch.float32)
        same = (ref_tokens == pj_tokens).all(dim=0)
        first_diff = (~same).nonzero()
        if first_diff.numel() == 0:
            print("  fp32: the tokens of all %d forwards identical (batch %d)" % (same.numel(), batch))
        else:
            ok = False
            i = first_diff[0].item()
            top2 = ref_logits32[:, i].topk(2, dim=-1).values
            print("  fp32: FAIL: tokens differ from forward %d on: %s vs %s (transformers' top-2 logit gaps there %s, "
                  "pagedjit's logits %.2e away in relative L2)"
                  % (i, ref_tokens[:, i].tolist(), pj_tokens[:, i].tolist(), (top2[:, 0] - top2[:, 1]).tolist(),
                     ((pj_logits32[:, i] - ref_logits32[:, i]).norm() / ref_logits32[:, i].norm()).item()))
        rel32 = ((pj_logits32 - ref_logits32).norm(dim=-1) / ref_logits32.norm(dim=-1))
        print("  fp32: logits max relative L2 difference: %.2e at the ragged prefill, %.2e at the mixed forward, "
              "%.2e over all forwards" % (rel32[:, 0].max().item(), rel32[:, 1:2].max().item() if forwards > 1 else 0,
                                         rel32.max().item()))

        model.to(torch.bfloat16)
        _, ref_logits16 = reference_run(force=ref_tokens)
        _, pj_logits16 = pagedjit_run(torch.bfloat16, force=ref_tokens)

        def rel(a, b):
            return ((a - b).norm(dim=-1) / b.norm(dim=-1)).amax(dim=0)  # per forward, worst sequence

        err_ref, err_pj, between = rel(ref_logits16, ref_logits32), rel(pj_logits16, ref_logits32), \
            rel(pj_logits16, ref_logits16)
        bad = ((err_pj > 1.5 * err_ref + 0.005) | (between > 0.05)).nonzero()
        print("  bf16, teacher forcing, %d forwards: relative L2 to fp32 logits: transformers max %.2e, pagedjit "
              "max %.2e; pagedjit vs transformers max %.2e, mean %.2e (prefill %.2e)" % (
                  len(err_ref), err_ref.max().item(), err_pj.max().item(), between.max().item(),
                  between.mean().item(), between[0].item()))
        if bad.numel():
            ok = False
            i = bad[0].item()
            print("  bf16: FAIL at forward %d: pagedjit %.3e vs transformers %.3e from fp32, %.3e apart"
                  % (i, err_pj[i].item(), err_ref[i].item(), between[i].item()))
        else:
            print("  bf16: every forward within tolerance")
        print("  (%.1f s)" % (time.time() - t0))
    return ok


# ------------------------------------------------------------ attention time per step

def time_it(torch, fn, reps=50):
    """Mean time of fn() in microseconds (CUDA events, after 5 warm-up calls)."""
    for _ in range(5):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps * 1000


def transformers_sdpa(torch, q, k, v, scale):
    """What transformers runs for SDPA attention (its sdpa_attention_forward, causal when q_len > 1), as a function
    returning [batch, q_len, heads, head_dim]."""
    import types
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    module = types.SimpleNamespace(num_key_value_groups=q.shape[1] // k.shape[1], is_causal=True, training=False,
                                   config=None)

    def sdpa():
        return sdpa_attention_forward(module, q, k, v, None, scaling=scale, dropout=0.0)[0]

    try:
        sdpa()
        return sdpa
    except Exception as e:  # a version whose function wants more of the module: its core, as it does it
        print("  (transformers' sdpa_attention_forward needs a real module here (%s): timing "
              "torch SDPA over the repeated KV heads instead)" % e)
        kr, vr = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))

        def sdpa_core():
            return torch.nn.functional.scaled_dot_product_attention(q, kr, vr, scale=scale,
                                                                    is_causal=q.shape[2] > 1).transpose(1, 2)
        return sdpa_core


def paged_copy(torch, k, v, g):
    """k, v [batch, kv_heads, context, dim] copied into pages in a random order: (k_pages, v_pages, table)."""
    batch, kv_heads, context, dim = k.shape
    per_seq = context // PAGE
    table = torch.randperm(batch * per_seq, device=DEVICE, generator=g).view(batch, per_seq).to(torch.int32)
    # page p of sequence s holds tokens p*PAGE .. of k[s]
    kp = torch.empty(batch * per_seq, kv_heads, PAGE, dim, device=DEVICE, dtype=k.dtype)
    vp = torch.empty_like(kp)
    kp[table.long()] = k.view(batch, kv_heads, per_seq, PAGE, dim).permute(0, 2, 1, 3, 4)
    vp[table.long()] = v.view(batch, kv_heads, per_seq, PAGE, dim).permute(0, 2, 1, 3, 4)
    return kp, vp, table


def timing(torch, pagedjit, batch=64, context=4096, heads=32, kv_heads=8, dim=128, layers=4):
    dtype = torch.bfloat16
    g = torch.Generator(device=DEVICE).manual_seed(7)
    q = torch.randn(batch, heads, 1, dim, device=DEVICE, dtype=dtype, generator=g)
    k = torch.randn(batch, kv_heads, context, dim, device=DEVICE, dtype=dtype, generator=g)
    v = torch.randn(batch, kv_heads, context, dim, device=DEVICE, dtype=dtype, generator=g)
    kp, vp, table = paged_copy(torch, k, v, g)
    lens = torch.full((batch,), context, dtype=torch.int32, device=DEVICE)
    sdpa = transformers_sdpa(torch, q, k, v, 1 / math.sqrt(dim))

    def paged():
        return pagedjit.paged_attention(q[:, :, 0], kp, vp, lens, table, max_context_len=context)

    a, b = paged().float(), sdpa()[:, 0].float()
    agree = ((a - b).norm() / b.norm()).item()
    t_pj, t_sdpa = time_it(torch, paged), time_it(torch, sdpa)
    kv_bytes = 2 * k.numel() * k.element_size()
    print("attention per decode step, batch %d, context %d, %d/%d heads d%d, bf16 (%s):"
          % (batch, context, heads, kv_heads, dim, torch.cuda.get_device_name()))
    print("  pagedjit (paged cache, random pages): %8.1f us per layer, %8.1f us per %d-layer step, %6.0f GB/s"
          % (t_pj, t_pj * layers, layers, kv_bytes / t_pj / 1e3))
    print("  transformers SDPA (contiguous cache): %8.1f us per layer, %8.1f us per %d-layer step, %6.0f GB/s"
          % (t_sdpa, t_sdpa * layers, layers, kv_bytes / t_sdpa / 1e3))
    print("  pagedjit / SDPA time %.2f; outputs agree to %.1e (relative L2)" % (t_pj / t_sdpa, agree))
    return agree < 2e-2


def timing_prefill(torch, pagedjit, batch=4, prompt=2048, heads=32, kv_heads=8, dim=128, layers=4):
    """The prompt step: `batch` prompts of `prompt` tokens, causal. pagedjit: append_kv of the keys and values into
    random pages, then ragged_paged_attention over them (timed apart); transformers: SDPA over the same keys and
    values, contiguous (its cache)."""
    dtype = torch.bfloat16
    g = torch.Generator(device=DEVICE).manual_seed(8)
    q = torch.randn(batch, heads, prompt, dim, device=DEVICE, dtype=dtype, generator=g)
    k = torch.randn(batch, kv_heads, prompt, dim, device=DEVICE, dtype=dtype, generator=g)
    v = torch.randn(batch, kv_heads, prompt, dim, device=DEVICE, dtype=dtype, generator=g)
    _, _, table = paged_copy(torch, k, v, g)
    kp = torch.full((batch * prompt // PAGE, kv_heads, PAGE, dim), float("nan"), device=DEVICE, dtype=dtype)
    vp = torch.full_like(kp, float("nan"))
    packed = [t.transpose(1, 2).reshape(batch * prompt, t.shape[1], dim).contiguous() for t in (q, k, v)]
    starts = torch.arange(0, batch * prompt + 1, prompt, dtype=torch.int32, device=DEVICE)
    lens = torch.full((batch,), prompt, dtype=torch.int32, device=DEVICE)
    sdpa = transformers_sdpa(torch, q, k, v, 1 / math.sqrt(dim))

    def append():
        pagedjit.append_kv(packed[1], packed[2], starts, lens, table, kp, vp)

    def ragged():
        return pagedjit.ragged_paged_attention(packed[0], starts, kp, vp, lens, table, max_query_len=prompt,
                                               max_context_len=prompt)

    append()
    a, b = ragged().float(), sdpa().reshape(batch * prompt, heads, dim).float()
    agree = ((a - b).norm() / b.norm()).item()
    t_append, t_pj, t_sdpa = time_it(torch, append), time_it(torch, ragged), time_it(torch, sdpa)
    flops = 4 * batch * heads * dim * prompt * (prompt + 1) / 2  # QK^T and PV over the causal half
    print("attention of a prompt step, %d prompts x %d tokens, causal, %d/%d heads d%d, bf16 (%s):"
          % (batch, prompt, heads, kv_heads, dim, torch.cuda.get_device_name()))
    print("  pagedjit ragged (paged cache):        %8.1f us per layer, %8.1f us per %d-layer step, %6.1f TFLOP/s"
          % (t_pj, t_pj * layers, layers, flops / t_pj / 1e6))
    print("  pagedjit append_kv (the prompt's K/V): %7.1f us per layer" % t_append)
    print("  transformers SDPA (contiguous cache): %8.1f us per layer, %8.1f us per %d-layer step, %6.1f TFLOP/s"
          % (t_sdpa, t_sdpa * layers, layers, flops / t_sdpa / 1e6))
    print("  pagedjit ragged / SDPA time %.2f; outputs agree to %.1e (relative L2)" % (t_pj / t_sdpa, agree))
    return agree < 2e-2


def version(text):
    return tuple(int(n) for n in re.findall(r"\d+", text)[:2])


def parse_chunks(text):
    chunks = [[int(n) for n in seq.split("+")] for seq in text.split(",")]
    if not chunks or any(n <= 0 for c in chunks for n in c):
        raise ValueError("--chunks: positive lengths, e.g. 512,200+147")
    return chunks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="llama,qwen2,gemma2")
    ap.add_argument("--steps", type=int, default=128, help="forwards after the first")
    ap.add_argument("--chunks", type=parse_chunks, default=parse_chunks(CHUNKS),
                    help="per sequence (comma-separated) its prompt's chunks, one a forward ('+'-separated); "
                         "default " + CHUNKS)
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--seed", type=int, default=2026)
    a = ap.parse_args(argv)
    if a.steps < max(map(len, a.chunks)) - 1:
        ap.error("--steps: fewer forwards than a prompt has chunks")
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
    register(pagedjit, transformers)
    all_configs = configs(transformers)
    ok = True
    t0 = time.time()
    for name in a.models.split(","):
        reference, config = all_configs[name]
        if name == "gemma2" and version(transformers.__version__) < (4, 53):
            print("gemma2  skipped: transformers before 4.53 builds Gemma-2's sliding-window mask for a HybridCache "
                  "only, so its own attention over chunks with a DynamicCache is no reference")
            continue
        ok = run_model(torch, transformers, name, reference, config, a.chunks, a.steps, a.seed) and ok
        gc.collect()  # the model goes before the next one is built
        torch.cuda.empty_cache()
    if not a.no_timing:
        ok = timing(torch, pagedjit) and ok
        ok = timing_prefill(torch, pagedjit) and ok
    print("%s (%.0f s)" % ("PASS" if ok else "FAIL", time.time() - t0))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
