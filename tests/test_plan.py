"""MVP4D's sampling plan as a job graph: coverage, dependencies, resumption after a kill, 2 processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from morph4d.cameras import view_set
from morph4d.generation.plan import PRESETS, PlanConfig, PlanRun, build_plan, job_seed, plan_passes

LATENT = (5, 2, 2, 2)  # small preset: 17 frames -> 5 latent frames; (F_lat, C, h, w)


@pytest.mark.parametrize("name, views, frames", [("120", 32, 89), ("360", 48, 89), ("small", 8, 25)])
def test_plan_covers_every_view_and_frame_exactly_once(name, views, frames):
    cfg = PRESETS[name]
    jobs = build_plan(cfg)
    vs = view_set(cfg.views)
    assert len(vs.azimuth) == views and cfg.total_frames == frames
    covered = torch.zeros(views, frames, dtype=torch.int64)
    for job in jobs:
        new_from = 0 if job.start == 0 else cfg.overlap  # the first frames of a later window are given
        for v in job.generated_views:
            covered[v, job.start + new_from: job.start + cfg.frames_per_window] += 1
        assert len(job.views) <= 8  # V = 8 per pass, as in the paper
    assert (covered == 1).all()
    ids = [j.id for j in jobs]
    for k, job in enumerate(jobs):  # dependencies come earlier and at a lower level
        for d in job.deps:
            assert ids.index(d) < k and jobs[ids.index(d)].level < job.level
    assert [j.steps for j in jobs if j.id == "key_w0"] == [cfg.key_steps]
    assert {j.mode for j in jobs} == ({1, 2} if cfg.total_frames == cfg.frames_per_window else {1, 2, 3, 4})


def test_paper_plan_matches_the_paper():
    cfg = PRESETS["120"]
    assert (cfg.frames_per_window, cfg.overlap, cfg.total_frames, cfg.key_steps, cfg.other_steps) == (49, 9, 89, 100, 50)
    jobs = build_plan(cfg)
    key = jobs[0]
    assert key.mode == 1 and len(key.views) == 8 and not key.given_views
    cluster = jobs[1]
    assert cluster.mode == 2 and len(cluster.given_views) == 4 and len(cluster.generated_views) == 4
    ext = [j for j in jobs if j.id == "key_w1"][0]
    assert ext.mode == 3 and ext.start == 40 and ext.given_frames == 3


@pytest.mark.parametrize("kwargs, message", [
    (dict(frames_per_window=48), r"1 \+ 4k"), (dict(total_frames=90), "cannot be planned"),
    (dict(overlap=49), "overlap must be"), (dict(key_steps=0), "steps"),
])
def test_bad_plans(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_plan(PlanConfig(**kwargs))


def runner(job, given, mask, generator):
    """A deterministic stand-in network pass: noise from the job's generator plus what is given."""
    out = torch.randn(given.shape, generator=generator) + given.mean()
    return torch.where(mask[..., None, None, None], given, out)


def encode_overlap(latents, overlap):
    return latents.flip(0)  # any deterministic function of the previous window


def test_job_seeds_are_stable_and_distinct():
    assert job_seed(0, "key_w0") == job_seed(0, "key_w0") != job_seed(0, "key_w1") != job_seed(1, "key_w1")


def test_run_resume_and_refuse_another_runs_folder(tmp_path):
    cfg = PRESETS["small"]
    a = PlanRun(tmp_path / "a", cfg, {"reference": "x"})
    a.run(runner, encode_overlap, LATENT)
    assert all(a.done(j.id) for j in a.jobs)
    # given latents are exactly the dependency's latents
    key, cluster = a.load("key_w0"), a.load("cluster0_w0")
    c = a.by_id["cluster0_w0"]
    for v in c.given_views:
        assert torch.equal(cluster[c.views.index(v)], key[a.by_id["key_w0"].views.index(v)])
    b = PlanRun(tmp_path / "b", cfg, {"reference": "x"})
    b.run(runner, encode_overlap, LATENT, progress=lambda *_: None)
    for j in a.jobs:
        assert torch.equal(a.load(j.id), b.load(j.id))
    with pytest.raises(ValueError, match="different run"):
        PlanRun(tmp_path / "a", cfg, {"reference": "y"})
    frames = a.frames_of(lambda lat: lat.repeat_interleave(4, 0)[3:], 5)  # 5 latents -> 17 "frames"
    assert frames.shape[0] == cfg.total_frames


WORKER = r"""
import sys, time, torch
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_plan import runner, encode_overlap, LATENT
from morph4d.generation.plan import PRESETS, PlanRun
def slow(job, given, mask, g):
    time.sleep(0.4)
    return runner(job, given, mask, g)
PlanRun({root!r}, PRESETS["small"], {{"reference": "x"}}).run(slow, encode_overlap, LATENT)
"""


def test_killed_run_resumes_to_the_same_result(tmp_path):
    root = tmp_path / "killed"
    code = WORKER.format(tests=os.path.dirname(__file__), root=str(root))
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while not (root / "jobs" / "cluster0_w0.safetensors").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # part-way: 2 of 4 jobs done
    proc.wait()
    done = sorted(p.name for p in (root / "jobs").glob("*.safetensors"))
    assert 1 <= len(done) < 4 and not list((root / "jobs").glob("*.tmp"))
    mtimes = {p: (root / "jobs" / p).stat().st_mtime_ns for p in done}
    run = PlanRun(root, PRESETS["small"], {"reference": "x"})
    ran = []
    run.run(runner, encode_overlap, LATENT, progress=lambda job, i, n: ran.append(job))
    assert set(ran).isdisjoint(j.split(".")[0] for j in done)  # finished jobs were skipped
    assert all((root / "jobs" / p).stat().st_mtime_ns == t for p, t in mtimes.items())
    ref = PlanRun(tmp_path / "uninterrupted", PRESETS["small"], {"reference": "x"})
    ref.run(runner, encode_overlap, LATENT)
    for j in ref.jobs:
        assert torch.equal(run.load(j.id), ref.load(j.id))


def _two_process_worker(rank, root, init_file):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    ran = []
    PlanRun(root, PRESETS["120"], {"reference": "x"}).run(
        runner, encode_overlap, (13, 1, 1, 1), rank=rank, world=2, barrier=dist.barrier,
        progress=lambda job, i, n: ran.append(job))
    with open(f"{root}/ran{rank}.json", "w") as fh:
        json.dump(ran, fh)
    dist.destroy_process_group()


def test_two_processes_split_the_jobs_and_match_one(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_two_process_worker, args=(str(tmp_path / "two"), str(tmp_path / "init")), nprocs=2)
    one = PlanRun(tmp_path / "one", PRESETS["120"], {"reference": "x"})
    one.run(runner, encode_overlap, (13, 1, 1, 1))
    two = PlanRun(tmp_path / "two", PRESETS["120"], {"reference": "x"})
    for j in one.jobs:
        assert torch.equal(one.load(j.id), two.load(j.id))
    ran = [set(json.loads((tmp_path / "two" / f"ran{r}.json").read_text())) for r in (0, 1)]
    assert ran[0] and ran[1] and ran[0].isdisjoint(ran[1]) and ran[0] | ran[1] == {j.id for j in one.jobs}


def test_pass_count_of_the_120_preset_follows_the_formula():
    """MVP4D S3: 100 DDIM steps for every key-view job, 50 for the clusters; multi-view CFG adds one single-view
    pass per generated view and step, none for the 4 key views a cluster is given whole."""
    vs = view_set("120")
    K, C, W = int(vs.key.sum()), len(vs.clusters), 2            # 8 keys, 6 clusters of 4, windows 0-48 and 40-88
    assert (K, C) == (8, 6)
    jobs = build_plan(PRESETS["120"])
    assert [j.steps for j in jobs if j.id.startswith("key")] == [100] * W
    steps = W * (100 + C * 50)
    assert plan_passes(jobs, "multiview") == {"jobs": W * (1 + C), "steps": steps, "joint": steps,
                                              "single": W * (100 * K + C * 50 * 4)}   # 800 joint, 4000 single
    assert plan_passes(jobs, "cfg") == {"jobs": 14, "steps": 800, "joint": 1600, "single": 0}
    assert plan_passes(jobs, "none")["joint"] == 800
