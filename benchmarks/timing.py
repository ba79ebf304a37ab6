"""The timing rule of the benchmarks: the median of ``repeats`` calls after one warm-up call (first calls load,
compile and let oneDNN pick its kernels)."""

import statistics
import time


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
