"""morph4d: one portrait photo -> animatable, real-time 4D head avatar (MVP4D, IM-Portrait).

The package is laid out by pipeline stage (ARCHITECTURE.md). ``STAGES`` maps each stage to its modules'
prefix and to the earlier stages it may import; a stage never imports a later one (tests/test_layout.py
checks every import of every module against it).

Note on processes: our numba kernels run on numba's default OpenMP threading layer (fastest here), which
aborts a process forked after a parallel call; start worker processes with "spawn" (``make_loader``,
torchrun and accelerate already do). Setting NUMBA_THREADING_LAYER=workqueue makes fork safe at ~1.5x
slower rasterization.
"""

__version__ = "0.1.0"

FOUNDATION = ("morph4d", "morph4d.errors", "morph4d.validate", "morph4d.io", "morph4d.video", "morph4d.threads",
              "morph4d.metrics", "morph4d.cameras", "morph4d.cliargs")

# stage -> stages it may import besides itself, in data-flow order. training and generation are siblings
# (both use the diffusion stage; neither imports the other), and so are avatar and training.
STAGES = {
    "foundation": (),
    "heads": ("foundation",),
    "mesh": ("foundation", "heads"),
    "models": ("foundation",),
    "conditioning": ("foundation", "heads", "mesh", "models"),
    "data": ("foundation", "heads", "mesh", "models", "conditioning"),
    "diffusion": ("foundation", "heads", "mesh", "models", "conditioning", "data"),
    "training": ("foundation", "heads", "mesh", "models", "conditioning", "data", "diffusion"),
    "generation": ("foundation", "heads", "mesh", "models", "conditioning", "data", "diffusion"),
    "tracking": ("foundation", "heads", "mesh", "models", "conditioning", "data", "diffusion", "generation"),
    "avatar": ("foundation", "heads", "mesh", "models", "conditioning", "data", "diffusion", "generation"),
    # IM-Portrait, the second system: a sibling of generation (its own sampler over diffusion); its training loop
    # reuses training's checkpoint and log helpers
    "portrait": ("foundation", "heads", "mesh", "models", "conditioning", "data", "diffusion", "training"),
    "eval": ("foundation", "heads", "mesh", "models", "conditioning", "data", "diffusion", "training", "generation",
             "tracking", "avatar", "portrait"),
    "pipeline": ("foundation", "heads", "mesh", "models", "conditioning", "data", "diffusion", "training",
                 "generation", "tracking", "avatar", "portrait", "eval"),
    "cli": ("foundation", "heads", "mesh", "models", "conditioning", "data", "diffusion", "training",
            "generation", "tracking", "avatar", "portrait", "eval", "pipeline"),
}


def stage_of(module: str) -> str:
    """The stage of a module name (``morph4d.avatar.fit`` -> ``avatar``; ``morph4d.cli`` -> ``cli``)."""
    if module in FOUNDATION:
        return "foundation"
    name = module.split(".")[1]
    if name not in STAGES:
        raise ValueError(f"module {module} belongs to no stage of morph4d.STAGES")
    return name
