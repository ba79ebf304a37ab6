"""morph4d: one portrait photo -> animatable, real-time 4D head avatar (MVP4D, IM-Portrait).

Note on processes: our numba kernels run on numba's default OpenMP threading layer (fastest here), which
aborts a process forked after a parallel call; start worker processes with "spawn" (``make_loader``,
torchrun and accelerate already do). Setting NUMBA_THREADING_LAYER=workqueue makes fork safe at ~1.5x
slower rasterization.
"""

__version__ = "0.1.0"
