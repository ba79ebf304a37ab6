"""Export a fitted avatar (`morph4d export`) and view it in the browser (`morph4d view`).

* ``ply``: one frame as a standard 3DGS .ply (``gaussians/export.py``), for any 3DGS viewer;
* ``animated``: the whole animation as one ``.m4da`` file (``avatar/animated.py``, docs/AVATAR_FORMAT.md);
* ``html``: a viewer folder, ``index.html`` (the self-contained WebGL2 page beside this file) + ``avatar.m4da``;
  `morph4d view` writes one into a cache folder and serves it on localhost.

Animations: a built-in name or an animation .npz drives the mesh (re-animation, no per-frame deformation);
``fitted`` replays the fitted sequence's own parameters (``Avatar.fitted_params``), so ``Avatar.world(v, frame)``
adds its per-frame deformation. Other animations get the fitted person's shape (``Avatar.animate``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import torch

from morph4d.avatar.animated import bake, write_animated
from morph4d.avatar.gaussians.export import write_ply
from morph4d.avatar.model import FITTED, animation_params, load_avatar
from morph4d.errors import Morph4DError
from morph4d.io import atomic_path

PAGE = Path(__file__).with_name("index.html")
DATA_FILE = "avatar.m4da"
FORMATS = ("ply", "animated", "html")
def animation_vertices(avatar, animation: str, frames: int = 49, fps: float = 25.0
                       ) -> tuple[torch.Tensor, bool, float]:
    """Posed vertices (F, N, 3) of ``animation`` on the avatar's mesh (``avatar.animation_params``), whether
    they are the fitted sequence's frames, and the fps."""
    params, fitted, fps = animation_params(avatar, animation, frames, fps)
    with torch.no_grad():
        return avatar.vertices(params), fitted, fps


def write_viewer(folder: str | Path, anim) -> Path:
    """A viewer folder: the page as ``index.html`` and ``anim`` (AnimatedAvatar) as ``avatar.m4da``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise Morph4DError(f"{folder} exists and is not a folder")
    write_animated(folder / DATA_FILE, anim)
    with atomic_path(folder / "index.html") as tmp:
        shutil.copyfile(PAGE, tmp)
    return folder / "index.html"


def export(avatar_dir: str | Path, out: str | Path, fmt: str = "ply", animation: str = "talk", frames: int = 49,
           frame: int = 0, fps: float = 25.0, flame_path: str | None = None) -> Path:
    """`morph4d export`: validate everything, then write ``out`` atomically; returns the written path."""
    out = Path(out)
    if fmt not in FORMATS:
        raise Morph4DError(f"unknown format '{fmt}'; expected one of {', '.join(FORMATS)}")
    if fmt == "ply" and out.suffix != ".ply":
        raise Morph4DError(f"--format ply writes a .ply file, got '{out}'")
    if fmt == "animated" and not (out.suffix == ".m4da" or out.is_dir() or not out.suffix):
        raise Morph4DError(f"--format animated writes a .m4da file or into a folder, got '{out}'")
    if fmt == "animated" and out.suffix != ".m4da":
        out = out / DATA_FILE
    if out.is_dir() and fmt != "html":
        raise Morph4DError(f"{out} is a folder; give the {out.suffix} file to write")
    if fmt == "html" and out.exists() and not out.is_dir():
        raise Morph4DError(f"{out} exists and is not a folder")
    if frames < 1:
        raise Morph4DError(f"--frames must be >= 1, got {frames}")
    avatar = load_avatar(avatar_dir, flame_path=flame_path)
    vertices, fitted, fps = animation_vertices(avatar, animation, frames, fps)
    if fmt == "ply":
        if not 0 <= frame < vertices.shape[0]:
            raise Morph4DError(f"--frame {frame} is outside the animation's {vertices.shape[0]} frames")
        with torch.no_grad():
            write_ply(out, avatar.world(vertices[frame], frame if fitted else None))
        return out
    anim = bake(avatar, vertices, fitted, fps, {"animation": animation, "head_model": avatar.head.name,
                                                "avatar": str(Path(avatar_dir).resolve())})
    if fmt == "animated":
        write_animated(out, anim)
        return out
    return write_viewer(out, anim)


def cache_folder(avatar_dir: str | Path, animation: str, cache: str | Path | None = None) -> Path:
    """Where `morph4d view` writes its viewer folder: ``CACHE/morph4d/view/<hash>``, CACHE = ``cache`` or
    ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    root = Path(cache or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "morph4d" / "view"
    key = hashlib.sha1(f"{Path(avatar_dir).resolve()}\0{animation}".encode()).hexdigest()[:16]
    return root / key


def serve(folder: str | Path, port: int = 8000, open_browser: bool = True, log=print) -> None:
    """Serve ``folder`` on http://127.0.0.1:PORT/ (port 0: a free one) until Ctrl-C, then stop cleanly."""
    import functools
    import webbrowser
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # one line per request would drown the URL
            pass

    if not 0 <= port <= 65535:
        raise Morph4DError(f"--port must be in [0, 65535], got {port}")
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Quiet, directory=str(folder)))
    except OSError as e:
        raise Morph4DError(f"cannot serve on port {port} ({e.strerror}); pick another with --port (0: any free "
                           f"port)") from e
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    log(f"serving {url} (Ctrl-C stops)")
    sys.stdout.flush()  # the URL must reach a reading process (tests, scripts) before the server blocks
    if open_browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log("stopped")
    finally:
        server.server_close()


__all__ = ["animation_vertices", "cache_folder", "export", "serve", "write_viewer", "FORMATS", "FITTED"]
