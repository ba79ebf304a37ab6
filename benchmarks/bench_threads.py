"""Threads per command: seconds per iteration of the demo's avatar fit (``FIT_PRESETS["demo"]`` on 8 views x
25 frames at 64 px, the size ``make demo`` fits) and per DDIM step of the embedded default's sampling, each
in a fresh process, under four thread set-ups:

* ``env 1``: ``OMP_NUM_THREADS=1`` only (what ``make demo`` did): numba's pool starts with the core count at
  the first rasterization and raises torch's count with it (morph4d/threads.py);
* ``configured 1`` / ``configured 2``: ``morph4d.threads.configure_threads(n)``, the commands' ``--threads``;
* ``conf. 2 passive``: the same with ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep instead of spinning).

Prints the table with the machine's load average; the commands' ``--threads`` default (morph4d/threads.py) comes
from it.

    python benchmarks/bench_threads.py [--iterations 80]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
{setup}
import torch, numba
from dataclasses import replace
from morph4d.avatar.fit import FIT_PRESETS, fit_sequence
stamps = []
def log(msg):
    if msg.startswith("step ") and "/" in msg.split()[1]:
        stamps.append((int(msg.split()[1].split("/")[0]), time.perf_counter()))
cfg = replace(FIT_PRESETS["demo"], iterations={iterations}, log_every=10, checkpoint_every=10**6)
fit_sequence({sequence!r}, {out!r}, cfg, log=log)
(s0, t0), (s1, t1) = stamps[0], stamps[-1]
fit = (t1 - t0) / (s1 - s0)
from morph4d.models.folder import load_models
from morph4d.generation.plan import PRESETS
from morph4d.generation.generate import GenerateConfig, run_generate
from morph4d.generation.reference import held_out_reference
from morph4d.data.heldout import held_out_identity
from morph4d.heads import load_head_model
from morph4d.heads.animation import Animation
head = load_head_model()
h = held_out_identity(head, 0, 25, 64, 0.75, 26.0)
model, vae = load_models()
t = time.perf_counter()
run_generate({gen_out!r}, model, vae, head, held_out_reference(h, "builtin"), Animation(h.params, 25.0, "builtin", "h"),
             GenerateConfig(key_steps=4, other_steps=2), {{"bench": 1}}, log=lambda *a: None)
steps = sum(j.steps for j in __import__("morph4d.generation.plan", fromlist=["x"]).build_plan(
    replace(PRESETS["small"], key_steps=4, other_steps=2)))
print(json.dumps({{"fit_s_per_iteration": fit, "generate_s_per_step": (time.perf_counter() - t) / steps,
                  "threads": [torch.get_num_threads(), numba.get_num_threads()]}}))
"""

CONFIGURE = "from morph4d.threads import configure_threads; configure_threads({n})"
SETUPS = {
    "env 1": ("", {"OMP_NUM_THREADS": "1"}),
    "configured 1": (CONFIGURE.format(n=1), {}),
    "configured 2": (CONFIGURE.format(n=2), {}),
    "conf. 2 passive": (CONFIGURE.format(n=2), {"OMP_WAIT_POLICY": "PASSIVE"}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=80)
    ap.add_argument("--out", default="out/bench_threads")
    args = ap.parse_args()
    from morph4d.data.identity import EVAL_SEEDS
    from morph4d.data.synth import SynthConfig, synthesize
    out = Path(args.out)
    names = synthesize(SynthConfig(out=str(out / "data"), identities=1, views=8, frames=25, resolution=64,
                                   split="eval", first_seed=EVAL_SEEDS.start, progress=False), log=lambda *_: None)
    sequence = str(out / "data" / (names[0] if names else sorted(p.name for p in (out / "data").iterdir()
                                                                   if p.is_dir())[0]))
    env_base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    rows = {}
    for name, (setup, env) in SETUPS.items():
        tag = name.replace(" ", "_")
        for d in (out / f"avatar_{tag}", out / f"gen_{tag}"):
            subprocess.run(["rm", "-rf", str(d)], check=True)
        code = CHILD.format(setup=setup, iterations=args.iterations, sequence=sequence,
                            out=str(out / f"avatar_{tag}"), gen_out=str(out / f"gen_{tag}"))
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env_base, **env})
        if r.returncode:
            sys.exit(f"{name}: failed\n{r.stderr[-3000:]}")
        rows[name] = {**json.loads(r.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - t}
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {args.iterations} fit iterations")
    print(f"{'set-up':14} {'threads (torch, numba)':>24} {'fit s/iteration':>16} {'sampling s/step':>16}")
    base = rows["env 1"]
    for name, r in rows.items():
        print(f"{name:14} {str(tuple(r['threads'])):>24} {r['fit_s_per_iteration']:>16.3f} "
              f"{r['generate_s_per_step']:>16.3f}   ({base['fit_s_per_iteration'] / r['fit_s_per_iteration']:.2f}x "
              f"fit, {base['generate_s_per_step'] / r['generate_s_per_step']:.2f}x sampling vs env 1)")


if __name__ == "__main__":
    main()
