"""Thread counts hold (morph4d/threads.py): set once, they survive numba's first parallel kernel, and a
configured count does not slow torch's attention down by nesting OpenMP teams."""

import os
import subprocess
import sys

import pytest

from morph4d.cli import _leaf_parsers, build_parser, main

PROBE = """
import os, sys, time, torch, numba
{setup}
from morph4d.cameras import orbit_cameras
from morph4d.heads import load_head_model
from morph4d.mesh.raster import rasterize
head = load_head_model()
cam = orbit_cameras(torch.tensor([0.0]), torch.tensor([0.0]), 0.75, 26.0, 64, 64)
rasterize(head(head.zero_params())[None], head.faces, cam)   # numba's parallel kernel: starts its OpenMP pool
import ctypes
print(torch.get_num_threads(), numba.get_num_threads(), ctypes.CDLL("libgomp.so.1").omp_get_max_active_levels())
"""
CONFIGURE = "from morph4d.threads import configure_threads; configure_threads({n})"


def probe(setup: str, env: dict) -> tuple[int, int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], capture_output=True, text=True,
                         env={**os.environ, **env}, check=True).stdout.split()
    return int(out[0]), int(out[1]), int(out[2])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to see numba raise the thread count")
def test_configured_threads_survive_a_numba_kernel():
    env = {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": str(os.cpu_count())}   # numba's default: the cores
    # without configure_threads, OMP_NUM_THREADS=1 does not hold: numba's pool start raises torch's count
    assert probe("", env)[0] > 1
    # configured: the count holds for both libraries, and OpenMP runs one active level (no nested teams)
    assert probe(CONFIGURE.format(n=1), env) == (1, 1, 1)
    assert probe(CONFIGURE.format(n=2), env) == (2, 2, 1)


def test_torch_threads_also_forbids_nested_teams():
    setup = "from morph4d.threads import torch_threads\nwith torch_threads(2): pass"
    assert probe(setup, {})[2] == 1


def test_every_command_takes_threads(capsys):
    leaves = dict(_leaf_parsers(build_parser()))
    assert {"demo", "generate", "fit", "train", "data synth", "model init"} <= set(leaves)
    for name, parser in leaves.items():
        assert any("--threads" in a.option_strings for a in parser._actions), name
    for bad in ("0", "-1", "two", str(4 * (os.cpu_count() or 1) + 1)):
        assert main(["head", "info", "--threads", bad]) == 2
        assert "--threads: must be a whole number" in capsys.readouterr().err


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores for a count that differs from 1")
def test_threads_reach_the_command(one_thread, monkeypatch, capsys):
    import numba
    import torch
    for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):   # configure_threads exports them: restored after
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    before = numba.get_num_threads()
    try:
        assert main(["head", "info", "--threads", "2"]) == 0
        assert (torch.get_num_threads(), numba.get_num_threads()) == (2, 2)
        assert os.environ["OMP_NUM_THREADS"] == "2"
    finally:
        numba.set_num_threads(before)
