"""``morph4d eval``'s outputs: ``report.json`` (every number), ``report.md`` (tables laid out like MVP4D Tables
4/5 and S9: rows = runs, columns = metrics), ``report.csv`` (one row per run, view and frame) and two plots
(``per_angle.png``: metrics per view against its angle from the reference; ``per_frame.png``: per frame).
All written atomically, the JSON last (its presence means the report is complete)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from morph4d.io import atomic_path, write_json

LABELS = {"psnr": "PSNR ↑", "ssim": "SSIM ↑", "lpips": "LPIPS ↓", "jod": "JOD ↑", "re": "RE ↓ (px)",
          "re_median": "RE median ↓ (px)", "csim": "CSIM ↑", "akd": "AKD ↓ (px)", "aed": "AED ↓ (mm)", "l1": "L1 ↓",
          "fid": "FID ↓", "fvd": "FVD ↓", "psnr_unmasked": "PSNR unmasked ↑", "ssim_unmasked": "SSIM unmasked ↑",
          "temporal": "temporal L1 ↓"}
DIGITS = {"psnr": 2, "ssim": 3, "lpips": 3, "jod": 2, "re": 2, "re_median": 2, "csim": 3, "akd": 2, "aed": 2,
          "l1": 4, "fid": 1, "fvd": 1, "psnr_unmasked": 2, "ssim_unmasked": 3, "temporal": 4}
CSV_COLUMNS = ("run", "view", "angle", "frame", "psnr", "ssim", "l1", "lpips", "csim", "akd", "aed", "jod", "re",
               "psnr_unmasked", "ssim_unmasked", "temporal")
VIEW_METRICS = ("jod", "temporal")   # one number per view (a video), not per frame


PLOTTED = ("psnr", "ssim", "csim", "jod", "re", "lpips", "l1", "akd", "aed")   # the first four measured are plotted


def _fmt(k: str, v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{DIGITS.get(k, 3)}f}"


def _table(title: str, report: dict, part: str, metrics: list[str]) -> list[str]:
    metrics = [x for m in metrics for x in ((m, "re_median") if m == "re" else (m,))]
    cols = [m for m in metrics if any(m in r["summary"][part] for r in report["runs"].values())]
    lines = [f"**{title}**", "", "| run | " + " | ".join(LABELS[m] for m in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name, r in report["runs"].items():
        s = r["summary"][part]
        lines.append(f"| {name} | " + " | ".join(_fmt(m, s.get(m)) for m in cols) + " |")
    return lines + [""]


def markdown(report: dict) -> str:
    t = report["truth"]
    metrics = report["metrics"]
    first = next(iter(report["runs"].values()))["summary"]
    out = [f"Ground truth `{t['name']}`: {len(t['views'])} views x {t['frames']} frames at {t['size']} px; "
           f"angles from the reference ({t['reference']}).", ""]
    if "autoencoder" in report:
        ae = report["autoencoder"]
        out += [f"Autoencoder reconstruction PSNR (held-out windows, {ae['windows']} x 9 frames): "
                f"**{ae['psnr']:.2f} dB**", ""]
    out += _table("All views", report, "all", metrics)
    out += _table(f"Self-reenactment (the {first['self_views']} views within 15 degrees of the reference)", report,
                  "self_reenactment", [m for m in metrics if m not in ("re", "fid", "fvd")])
    out += _table(f"Novel views (the {first['novel_count']} views further than 15 degrees)", report, "novel_views",
                  [m for m in metrics if m not in ("re", "fid", "fvd")])
    bins = [b["bin"] for b in first["binned"]]
    for k in ("psnr", "ssim", "psnr_unmasked", "ssim_unmasked"):
        if k not in metrics:
            continue
        out += [f"**{LABELS[k]} per angle from the reference (degrees)**", "",
                "| run | " + " | ".join(bins) + " |", "|---|" + "---|" * len(bins)]
        for name, r in report["runs"].items():
            b = {x["bin"]: x for x in r["summary"]["binned"]}
            out.append(f"| {name} | " + " | ".join(_fmt(k, b[x][k]) if x in b else "-" for x in bins) + " |")
        out.append("")
    if "ablation" in report:
        a = report["ablation"]
        cols = [m for m in ("psnr", "ssim", "l1", "lpips", "jod", "temporal", "csim") if m in metrics]
        out += [f"**MVP4D Table 7 ablation** (one {a['truth']['frames']}-frame window; guidance, views generated "
                f"jointly; the last columns: novel views only)", "",
                "| run | " + " | ".join(LABELS[m] for m in cols) + " | " + " | ".join(
                    f"novel {LABELS[m]}" for m in cols[:2]) + " |", "|---|" + "---|" * (len(cols) + len(cols[:2]))]
        for name, r in a["runs"].items():
            s, n = r["summary"]["all"], r["summary"]["novel_views"]
            out.append(f"| {name} | " + " | ".join(_fmt(m, s.get(m)) for m in cols) + " | "
                       + " | ".join(_fmt(m, n.get(m)) for m in cols[:2]) + " |")
        out.append("")
    if "avatars" in report:
        out += _table(f"Avatars ({report['avatars']['truth']['name']}): all views and frames", report["avatars"], "all",
                      [m for m in metrics if m not in ("re", "fid", "fvd")])
    if "avatar_gap" in report:
        g = report["avatar_gap"]
        cols = [m for m in ("psnr", "ssim", "l1") if m in g]
        out += [f"**One-photo avatar vs oracle avatar** where neither was fitted ({g['cells']} view-frames of "
                f"{g['identities']} identities: the held-out views at every frame, the held-out frames of every view)",
                "", "| | " + " | ".join(LABELS[m] for m in cols) + " |", "|---|" + "---|" * len(cols)]
        for name in ("oracle avatar", "avatar", "gap"):
            out.append(f"| {name} | " + " | ".join(_fmt(m, g[m][name]) for m in cols) + " |")
        out.append("")
    if report.get("notes"):
        out += ["Not measured:", ""] + [f"- {k.upper()}: {v}" for k, v in report["notes"].items()] + [""]
    if "seconds" in report:
        out += [f"({report['seconds'] / 60:.1f} min on this machine)", ""]
    return "\n".join(out)


def csv_text(report: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for name, r in report["runs"].items():
        per_view = {v["view"]: v for v in r["views"]}
        re = {f["frame"]: f.get("re", math.nan) for f in r["frames"]}
        for row in r["rows"]:
            full = {**row, "run": name, **{k: per_view[row["view"]].get(k, math.nan) for k in VIEW_METRICS},
                    "re": re[row["frame"]]}
            w.writerow([full.get(c, "") if not isinstance(full.get(c), float) else f"{full[c]:.6g}"
                        for c in CSV_COLUMNS])
    return buf.getvalue()


def plots(report: dict, per_angle: Path, per_frame: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [m for m in PLOTTED if m in report["metrics"] and m not in ("re", "fid", "fvd")][:4]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(4 * max(1, len(shown)), 3.2), squeeze=False)
    for ax, m in zip(axes[0], shown):
        for name, r in report["runs"].items():
            pts = sorted((v["angle"], v[m]) for v in r["views"] if not math.isnan(v[m]))
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name)
        ax.set_xlabel("angle from the reference (deg)")
        ax.set_title(LABELS[m])
        ax.grid(alpha=0.3)
    if shown:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, per_angle)
    plt.close(fig)
    shown = [m for m in PLOTTED if m in report["metrics"] and m not in (*VIEW_METRICS, "fid", "fvd")][:4]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(4 * max(1, len(shown)), 3.2), squeeze=False)
    for ax, m in zip(axes[0], shown):
        for name, r in report["runs"].items():
            pts = [(f["frame"], f.get(m, math.nan)) for f in r["frames"]]
            ax.plot(*zip(*pts), marker=".", label=name)   # markers: AKD / AED exist every STRIDE frames
        ax.set_xlabel("frame")
        ax.set_title(LABELS[m] + " (mean over views)" if m != "re" else LABELS[m])
        ax.grid(alpha=0.3)
    if shown:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, per_frame)
    plt.close(fig)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _json_safe(x):
    """NaN / inf -> None (JSON has no NaN), recursively."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_report(out, report: dict) -> None:
    """The four outputs; an older ``report.json`` is removed first, so that a failure half-way leaves no
    complete-looking report of mixed runs."""
    out = Path(out)
    (out / "report.json").unlink(missing_ok=True)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(markdown(report))
    with atomic_path(out / "report.csv") as tmp:
        tmp.write_text(csv_text(report))
    plots(report, out / "per_angle.png", out / "per_frame.png")
    write_json(out / "report.json", _json_safe(report))


__all__ = ["markdown", "csv_text", "plots", "write_report", "LABELS"]
