"""Benchmark: synthetic data throughput, `morph4d data synth` end to end (identities, rendering, PNGs,
crops, index) into a temporary folder.

Target on the 2-core CPU: 100 sequences of 4 views x 9 frames at 64x64 (3,600 images) in <= 120 s.
The machine is shared: the load average before the run is printed beside the time, and the stage split
(identity / render / write) comes from one extra profiled sequence run alone.

    python benchmarks/bench_synth.py [--sequences 100] [--views 4] [--frames 9] [--res 64]
"""

import argparse
import os
import tempfile
import time

import numba
import torch

from morph4d.data.format import write_index
from morph4d.data.identity import IdentityConfig, sample_identity
from morph4d.data.synth import SynthConfig, make_sequence, synthesize, write_synth_sequence
from morph4d.heads.builtin import load_builtin_head
from morph4d.threads import torch_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=100)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--modality", default="multiview_video")
    args = ap.parse_args()
    model = load_builtin_head()
    cfg = SynthConfig(identities=args.sequences, modality=args.modality, views=args.views, frames=args.frames,
                      resolution=args.res, first_seed=10_000, progress=False)
    print(f"{args.sequences} sequences x {args.views} views x {args.frames} frames at {args.res}x{args.res} "
          f"({args.modality}); torch threads {cfg.torch_threads}, numba threads {numba.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: numba kernels loaded from their cache, first-call allocations
        synthesize(SynthConfig(**{**cfg.__dict__, "out": os.path.join(tmp, "warm"), "identities": 1}), model,
                   log=lambda *_: None)
        start = time.perf_counter()
        written = synthesize(SynthConfig(**{**cfg.__dict__, "out": os.path.join(tmp, "bench")}), model,
                             log=lambda *_: None)
        seconds = time.perf_counter() - start
        images = len(written) * args.views * args.frames
        print(f"\nsynthesize: {seconds:.1f} s for {len(written)} sequences = {1e3 * seconds / len(written):.0f} ms "
              f"per sequence, {1e3 * seconds / images:.1f} ms per image ({images} images); target <= 120 s: "
              f"{'PASS' if seconds <= 120 else 'FAIL'}")
        # stage split of one more sequence
        resolved = cfg.resolved()
        with torch_threads(cfg.torch_threads):
            t0 = time.perf_counter()
            sample_identity(20_000, model, IdentityConfig(texture_size=resolved.texture_size))
            t1 = time.perf_counter()
        seq = make_sequence(model, resolved, 20_000, 0)
        t2 = time.perf_counter()
        write_synth_sequence(os.path.join(tmp, "bench"), seq, resolved.crop_smooth_sigma)
        write_index(os.path.join(tmp, "bench"), {})
        t3 = time.perf_counter()
        print(f"one sequence: identity {1e3 * (t1 - t0):.0f} ms, identity + lighting + animation + render + crops "
              f"{1e3 * (t2 - t1):.0f} ms, PNG + npz + index {1e3 * (t3 - t2):.0f} ms; "
              f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
