"""Benchmark: MMVDM forward throughput against this machine's fp32 matmul rate, and forward memory vs tokens.

1. Forward FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and attention;
   the CPU flash-attention op is registered below with PyTorch's own SDPA formula, 4 N^2 d per head, because
   PyTorch counts only the CUDA attention kernels).
2. Each repeat times one fp32 ``torch.mm`` of 4096 x 4096 matrices (2 n^3 FLOP) and, right after it, one
   forward (no grad, after a warm-up): FLOPs / time of each gives two rates and their ratio, the fraction of
   the machine's matmul rate the forward reaches. Pairing the two cancels the slow swings of this shared VM
   (both rates vary up to 2x from minute to minute); reported: the median ratio, and best forward rate /
   best matmul rate. Target at the ``small`` preset: >= 40%.
3. Memory: each forward runs in a fresh subprocess; after the model and inputs exist, the process's peak-RSS
   mark is reset (``echo 5 > /proc/self/clear_refs``, Linux), then one forward runs and the peak (VmHWM) minus
   the resident set just before it (VmRSS) is the forward's own peak memory: weights and inputs are excluded,
   torch's CPU allocator (plain malloc) is included, which tracemalloc cannot see. The child runs with
   ``MALLOC_MMAP_THRESHOLD_=65536``, so every tensor above 64 KiB is its own mapping, returned to the system
   when freed: RSS then follows live tensors instead of what glibc's heap keeps cached. Token count N vs 2N
   (latent width doubled); target growth <= 2.3x, i.e. linear in N: no N x N score matrix is materialised.
4. The ``paper`` preset at 8 views x 49 frames x 512 px, counted on the meta device (no memory, no time;
   there SDPA falls back to plain matmuls, so its attention share is computed as 4 N^2 D per layer).

Usage: python benchmarks/bench_mmvdm.py [--preset small] [--views 4] [--frames 49] [--res 128] [--repeats 5]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

from morph4d.conditioning.maps import NUM_CONDITIONING_CHANNELS
from morph4d.models.latent import latent_frames
from morph4d.models.mmvdm import MMVDM, MMVDMConfig


@register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
def _cpu_flash_attention_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def inputs(views: int, frames: int, h: int, w: int, device="cpu", seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    C = NUM_CONDITIONING_CHANNELS
    x = dict(latents=torch.randn(1, views, frames, 16, h, w, generator=g),
             cond=torch.randn(1, views, frames, C, h, w, generator=g),
             ref_latent=torch.randn(1, 16, h, w, generator=g), ref_cond=torch.randn(1, C, h, w, generator=g),
             timestep=torch.tensor([500.0]))
    return {k: v.to(device) for k, v in x.items()}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def count_flops(model: MMVDM, x: dict) -> tuple[int, int]:
    """(total, attention) forward FLOPs."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(**x)
    per_op = counter.get_flop_counts()["Global"]
    attention = sum(v for k, v in per_op.items() if "attention" in str(k))
    return counter.get_total_flops(), attention


def _kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", open("/proc/self/status").read()).group(1))


def child(preset: str, views: int, frames: int, h: int, w: int) -> None:
    """Subprocess: print the peak memory (bytes) of one no-grad forward, weights and inputs excluded."""
    model = MMVDM(MMVDMConfig.preset(preset)).eval()
    x = inputs(views, frames, h, w)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark to the current RSS
    before = _kb("VmRSS")
    with torch.no_grad():
        model(**x)
    print(json.dumps({"peak_bytes": (_kb("VmHWM") - before) * 1024}))


def forward_peak(preset: str, views: int, frames: int, h: int, w: int) -> int:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, __file__, "--child", preset, str(views), str(frames), str(h), str(w)],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--res", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        preset, *dims = args.child
        child(preset, *map(int, dims))
        return

    cfg = MMVDMConfig.preset(args.preset)
    F, hw = latent_frames(args.frames), args.res // 8
    model = MMVDM(cfg).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    # 1. throughput against the matmul rate
    x = inputs(args.views, F, hw, hw)
    tokens = cfg.num_tokens(args.views, F, hw, hw)
    flops, attn = count_flops(model, x)
    assert attn == 4 * cfg.num_layers * tokens**2 * cfg.inner_dim, "attention FLOPs not counted"
    n = 4096
    a, b = torch.randn(n, n), torch.randn(n, n)
    mm_rates, fwd_rates = [], []
    with torch.no_grad():
        torch.mm(a, b), model(**x)  # warm-up
        for _ in range(args.repeats):
            mm_rates.append(2 * n**3 / _timed(lambda: torch.mm(a, b)))
            fwd_rates.append(flops / _timed(lambda: model(**x)))
    ratio = statistics.median(f / m for f, m in zip(fwd_rates, mm_rates))
    print(f"{args.preset}: {n_params / 1e6:.2f} M parameters; {args.views} views x {args.frames} frames x "
          f"{args.res} px -> {tokens} tokens, forward {flops / 1e9:.1f} GFLOP ({100 * attn / flops:.0f}% attention)")
    print(f"  fp32 matmul (4096^3 torch.mm): median {statistics.median(mm_rates) / 1e9:.0f}, best "
          f"{max(mm_rates) / 1e9:.0f} GFLOP/s; forward: median {statistics.median(fwd_rates) / 1e9:.0f}, best "
          f"{max(fwd_rates) / 1e9:.0f} GFLOP/s ({flops / max(fwd_rates):.2f} s)")
    print(f"  forward / matmul rate: median of {args.repeats} paired runs {100 * ratio:.0f}%, best / best "
          f"{100 * max(fwd_rates) / max(mm_rates):.0f}% (target >= 40%)")

    # 2. memory: N vs 2N tokens (latent width doubled)
    small, large = (forward_peak(args.preset, args.views, F, hw, hw * k) for k in (1, 2))
    n1, n2 = tokens, cfg.num_tokens(args.views, F, hw, 2 * hw)
    score = cfg.num_attention_heads * n2 * n2 * 4
    print(f"  forward peak memory (no grad, weights and inputs excluded): {n1} tokens {small / 2**20:.0f} MiB, "
          f"{n2} tokens {large / 2**20:.0f} MiB -> x{large / small:.2f} (target <= 2.3); a materialised score "
          f"matrix alone would take {score / 2**30:.1f} GiB at {n2} tokens")

    # 3. the paper configuration, counted on the meta device
    paper = MMVDMConfig.preset("paper")
    with torch.device("meta"):
        big = MMVDM(paper)
    F49, hw512 = latent_frames(49), 512 // 8
    p_flops, _ = count_flops(big, inputs(8, F49, hw512, hw512, device="meta"))
    n = paper.num_tokens(8, F49, hw512, hw512)
    p_attn = 4 * paper.num_layers * n * n * paper.inner_dim
    print(f"paper: {sum(p.numel() for p in big.parameters()):,} parameters; 8 views x 49 frames x 512 px -> "
          f"{n:,} tokens, {p_flops / 1e15:.2f} PFLOP per forward ({100 * p_attn / p_flops:.0f}% attention)")


if __name__ == "__main__":
    main()
