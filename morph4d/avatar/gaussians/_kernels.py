"""Numba kernels of the Gaussian compositor (``rasterize.py`` holds the torch side and the reference twin).

Only the per-pixel step is compiled. Per (camera, Gaussian) it takes the 10 projected values
``(x, y, a, b, c, opacity, f0, f1, f2, f3)``: 2D mean, conic ``[[a, b], [b, c]]``, opacity and four
features (RGB and camera depth); per pixel it returns the accumulated features, the final transmittance
and the index of the last contributor. The rules are 3DGS's (Kerbl et al. 2023, ``forward.cu`` /
``backward.cu`` renderCUDA), listed in the docstring of ``rasterize.py``. Arithmetic is float64.

Work is split into one task per (camera, 16 x 16 tile), handed to threads one at a time. A task walks its
depth-sorted list front to back; for each Gaussian it visits only the rows and, per row, the columns of
the ellipse outside of which alpha < 1/255 for certain (one pixel of margin; the per-pixel alpha test
stays the rule), and skips rows whose pixels have all stopped. exp() is not called per pixel: power is
quadratic in the pixel position, so exp(power) follows from products by per-Gaussian constants from
pixel to pixel and from row to row (``_row_state``). The backward walks the same lists back to front,
recomputing alpha with the same arithmetic from the saved final transmittance and last contributor (as
3DGS), and writes one gradient row per list entry (no races, deterministic), summed per Gaussian
afterwards.
"""

from __future__ import annotations

import math

import numba
import numpy as np

TILE = 16  # tile side in pixels (3DGS BLOCK_X = BLOCK_Y = 16)
ALPHA_MAX = 0.99  # 3DGS clamps alpha so that no single Gaussian makes a pixel fully opaque
ALPHA_MIN = 1.0 / 255.0  # 3DGS skips Gaussians whose alpha at a pixel is below one 8-bit step
T_MIN = 1e-4  # 3DGS stops a pixel (and skips the Gaussian that would cross this) when T < 1e-4
NUM_PARAMS = 10  # x, y, a, b, c, opacity, f0..f3 per (camera, Gaussian)
NUM_FEATURES = 4
# Packed per (camera, Gaussian): the 10 parameters, then values derived once instead of per tile entry.
FLOOR, INV_A, HALF_HEIGHT, EXP_A, EXP_B, EXP_C, EXP_NA, EXP_NB, NUM_PACKED = range(10, 19)
# Outside [TINY, HUGE] the products of ``_row_state`` restart from exp() (only for extreme ellipses).
TINY, HUGE = 1e-200, 1e200


@numba.njit(cache=True)
def depth_order(depths):
    """(B, G) float64 -> (B, G) int64 indices sorting each row ascending, stable (ties by index).

    LSD radix sort of the float bits mapped to order-preserving unsigned keys, 8 bits per pass; passes
    whose byte is the same for every key are skipped (float32 depths cast to float64 leave 3-4 such).
    """
    B, G = depths.shape
    order = np.empty((B, G), dtype=np.int64)
    keys, keys_tmp = np.empty(G, dtype=np.uint64), np.empty(G, dtype=np.uint64)
    idx, idx_tmp = np.empty(G, dtype=np.int64), np.empty(G, dtype=np.int64)
    sign = np.uint64(1) << np.uint64(63)
    for b in range(B):
        bits = np.ascontiguousarray(depths[b]).view(np.uint64)
        for g in range(G):
            keys[g] = ~bits[g] if bits[g] & sign else bits[g] | sign  # negatives reversed, below positives
            idx[g] = g
        for shift in range(0, 64, 8):
            counts = np.zeros(257, dtype=np.int64)
            for g in range(G):
                counts[((keys[g] >> np.uint64(shift)) & np.uint64(255)) + 1] += 1
            if counts.max() == G:
                continue
            for i in range(256):
                counts[i + 1] += counts[i]
            for g in range(G):
                byte = (keys[g] >> np.uint64(shift)) & np.uint64(255)
                keys_tmp[counts[byte]] = keys[g]
                idx_tmp[counts[byte]] = idx[g]
                counts[byte] += 1
            keys, keys_tmp = keys_tmp, keys
            idx, idx_tmp = idx_tmp, idx
        order[b] = idx
    return order


@numba.njit(cache=True)
def bin_gaussians(rects, order, tiles_x, tiles_y):
    """Per-tile lists of Gaussians in depth order (3DGS duplicateWithKeys + sort + identifyTileRanges).

    rects: (4, B, G) int64 tile rectangle (x0, x1, y0, y1), end-exclusive; empty for culled Gaussians
    order: (B, G) int64 Gaussian ids of each camera sorted front to back
    Returns ``offsets`` (B * tiles + 1,) int64 and ``entries`` (E,) int64: the list of tile
    ``b * tiles + ty * tiles_x + tx`` is ``entries[offsets[t]:offsets[t + 1]]``. A counting sort by
    tile of the depth-ordered stream keeps each tile's list in depth order.
    """
    B, G = order.shape
    num_tiles = tiles_x * tiles_y
    offsets = np.zeros(B * num_tiles + 1, dtype=np.int64)
    for b in range(B):
        for g in range(G):
            for ty in range(rects[2, b, g], rects[3, b, g]):
                for tx in range(rects[0, b, g], rects[1, b, g]):
                    offsets[b * num_tiles + ty * tiles_x + tx + 1] += 1
    for t in range(B * num_tiles):
        offsets[t + 1] += offsets[t]
    fill = offsets[:-1].copy()
    entries = np.empty(offsets[-1], dtype=np.int64)
    for b in range(B):
        for j in range(G):
            g = order[b, j]
            for ty in range(rects[2, b, g], rects[3, b, g]):
                for tx in range(rects[0, b, g], rects[1, b, g]):
                    t = b * num_tiles + ty * tiles_x + tx
                    entries[fill[t]] = g
                    fill[t] += 1
    return offsets, entries


@numba.njit(cache=True)
def pack(params):
    """(10, B, G) parameters -> (B, G, NUM_PACKED) float64, one cache-friendly row per Gaussian, plus:

    FLOOR: a power below which alpha = o exp(power) < ALPHA_MIN for certain, ln(ALPHA_MIN / o) less
        1e-6 (far above the rounding of exp, so skipping there changes no decision);
    INV_A: 1 / a;
    HALF_HEIGHT: half-height of the ellipse power >= FLOOR, sqrt(-2 FLOOR (Q^-1)_yy) with
        (Q^-1)_yy = a / det, plus one pixel of margin; -1 when nothing can be drawn (o < 1/255 or a
        conic that is not positive definite; the projection never makes those);
    EXP_A, EXP_B, EXP_C, EXP_NA, EXP_NB: exp(-a), exp(-b), exp(-c), exp(a), exp(b) for ``_row_state``
        (|a|, |b|, |c| <= 1 / 0.3 after the 3DGS dilation, so these never overflow).
    """
    B, G = params.shape[1], params.shape[2]
    out = np.zeros((B, G, NUM_PACKED))
    for i in range(B * G):
        b, g = i // G, i % G
        for j in range(NUM_PARAMS):
            out[b, g, j] = params[j, b, g]
        qa, qb, qc, o = params[2, b, g], params[3, b, g], params[4, b, g], params[5, b, g]
        det = qa * qc - qb * qb
        floor = math.log(ALPHA_MIN / o) - 1e-6 if o > 0.0 else -1.0
        out[b, g, FLOOR] = floor
        out[b, g, HALF_HEIGHT] = -1.0
        if det > 0.0 and qa > 0.0 and floor < 0.0:
            out[b, g, INV_A] = 1.0 / qa
            out[b, g, HALF_HEIGHT] = math.sqrt(-2.0 * floor * qa / det) + 1.0
            out[b, g, EXP_A], out[b, g, EXP_B], out[b, g, EXP_C] = math.exp(-qa), math.exp(-qb), math.exp(-qc)
            out[b, g, EXP_NA], out[b, g, EXP_NB] = math.exp(qa), math.exp(qb)
    return out


@numba.njit(cache=True, inline="always")
def _rows(gauss, r0, r1):
    """Rows [ra, rb) of the tile rows [r0, r1) that can hold a pixel with power >= FLOOR.

    Row i (centre i + 0.5) is within e of y iff ceil(y - e - 0.5) <= i <= floor(y + e - 0.5); truncating
    (after clamping to the tile, so no overflow) can only widen the range.
    """
    e = gauss[HALF_HEIGHT]
    if e < 0.0:
        return r0, r0
    y = gauss[1]
    ra = max(r0, int(max(y - e - 0.5, r0 - 1.0)))
    rb = min(r1, int(min(max(y + e - 0.5, r0 - 1.0), r1 + 0.0)) + 1)
    return ra, max(ra, rb)


@numba.njit(cache=True, inline="always")
def _row_state(gauss, dy, c0, c1, fresh, col, G, E, F):
    """Columns [ca, cb) of a row that can hold power >= FLOOR, and (G, E, F) at column ca.

    The columns solve a dx^2 + 2 b dy dx + c dy^2 + 2 FLOOR <= 0 (dx = x - (col + 0.5)), widened by one
    pixel. With power(col, row) = -(a dx^2 + c dy^2) / 2 - b dx dy, one column to the right (dx - 1)
    or one row down (dy - 1) adds
        D = a dx - a / 2 + b dy   and   D' = c dy - c / 2 + b dx,
    which themselves change by -a, -b (D) and -b, -c (D') per step. So G = exp(power), E = exp(D) and
    F = exp(D') move to a neighbouring pixel by products with exp(-a), exp(-b), exp(-c) (or exp(a),
    exp(b) going left): the caller walks a row with G *= E, E *= exp(-a), and this function moves the
    previous row's (col, G, E, F) one row down and sideways to ca. ``fresh`` (no previous row) or a value
    outside [TINY, HUGE] restarts from three exp() calls. Relative error over a 16 x 16 tile ~1e-14.
    Returns (ca, cb, col, G, E, F, fresh) with fresh = True when the row is empty.
    """
    x, qa, qb, qc, floor = gauss[0], gauss[2], gauss[3], gauss[4], gauss[FLOOR]
    disc = (qb * dy) ** 2 - qa * (qc * dy * dy + 2.0 * floor)
    if not disc >= 0.0:
        return c0, c0, col, G, E, F, True
    root = math.sqrt(disc)
    lo = x - 0.5 - (root - qb * dy) * gauss[INV_A] - 1.0
    hi = x - 0.5 + (root + qb * dy) * gauss[INV_A] + 1.0
    ca = max(c0, int(max(lo, c0 - 1.0)))
    cb = min(c1, int(min(max(hi, c0 - 1.0), c1 + 0.0)) + 1)
    if cb <= ca:
        return ca, ca, col, G, E, F, True
    if not fresh:
        G *= F  # one row down at the previous start column
        F *= gauss[EXP_C]
        E *= gauss[EXP_B]
        while col < ca:
            G *= E
            E *= gauss[EXP_A]
            F *= gauss[EXP_B]
            col += 1
        while col > ca:
            E *= gauss[EXP_NA]
            G /= E
            F *= gauss[EXP_NB]
            col -= 1
        fresh = not (TINY < G < HUGE and TINY < E < HUGE and TINY < F < HUGE)
    if fresh:
        dx = x - (ca + 0.5)
        G = math.exp(-0.5 * (qa * dx * dx + qc * dy * dy) - qb * dx * dy)
        E = math.exp(qa * dx - 0.5 * qa + qb * dy)
        F = math.exp(qc * dy - 0.5 * qc + qb * dx)
    return ca, cb, ca, G, E, F, False


@numba.njit(cache=True, parallel=True)
def composite_forward(packed, offsets, entries, tiles_x, height, width, out_features, out_T, out_last):
    """Front-to-back alpha compositing (3DGS renderCUDA), one (camera, tile) task per iteration.

    packed: (B, G, NUM_PACKED) from ``pack``. Fills out_features (B, H, W, 4) = sum_i w_i f_i,
    out_T (B, H, W) = final transmittance, out_last (B, H, W) int64 = entry index of the last
    contributor (-1 when none). 3DGS's "skip if power > 0" can only fire for a conic that is not
    positive definite; ``pack`` drops such Gaussians whole, so there is no per-pixel test for it (the
    recurrence's exp(power) may exceed 1 by rounding at power = 0 and must not be skipped).
    """
    B = packed.shape[0]
    num_tiles = (offsets.shape[0] - 1) // B
    for task in numba.prange(B * num_tiles):
        b, tile = task // num_tiles, task % num_tiles
        r0, c0 = (tile // tiles_x) * TILE, (tile % tiles_x) * TILE
        r1, c1 = min(r0 + TILE, height), min(c0 + TILE, width)
        T = np.ones(TILE * TILE)
        acc = np.zeros((TILE * TILE, NUM_FEATURES))
        last = np.full(TILE * TILE, -1, dtype=np.int64)
        # Bit c - c0 of alive[r - r0] is set while pixel (r, c) still composites, so that rows whose
        # pixels are all done cost one test (most of a list lies behind the first opaque layers).
        alive = np.zeros(TILE, dtype=np.int64)
        alive[:r1 - r0] = (1 << (c1 - c0)) - 1
        num_alive = (r1 - r0) * (c1 - c0)
        for k in range(offsets[task], offsets[task + 1]):
            if num_alive == 0:
                break
            gauss = packed[b, entries[k]]
            y, o, exp_a = gauss[1], gauss[5], gauss[EXP_A]
            f0, f1, f2, f3 = gauss[6], gauss[7], gauss[8], gauss[9]
            fresh, col, G, E, F = True, 0, 0.0, 0.0, 0.0
            ra, rb = _rows(gauss, r0, r1)
            for r in range(ra, rb):
                row = alive[r - r0]
                if row == 0:
                    fresh = True
                    continue
                ca, cb, col, G, E, F, fresh = _row_state(gauss, y - (r + 0.5), c0, c1, fresh, col, G, E, F)
                g_pix, e_pix = G, E
                for c in range(ca, cb):
                    exp_power = g_pix
                    g_pix *= e_pix
                    e_pix *= exp_a
                    if not (row >> (c - c0)) & 1:
                        continue
                    alpha = min(ALPHA_MAX, o * exp_power)
                    if alpha < ALPHA_MIN:
                        continue
                    p = (r - r0) * TILE + (c - c0)
                    t = T[p]
                    test_T = t * (1.0 - alpha)
                    if test_T < T_MIN:
                        row &= ~(1 << (c - c0))
                        num_alive -= 1
                        continue
                    w = alpha * t
                    acc[p, 0] += f0 * w
                    acc[p, 1] += f1 * w
                    acc[p, 2] += f2 * w
                    acc[p, 3] += f3 * w
                    T[p] = test_T
                    last[p] = k
                alive[r - r0] = row
        for r in range(r0, r1):
            for c in range(c0, c1):
                p = (r - r0) * TILE + (c - c0)
                out_T[b, r, c] = T[p]
                out_last[b, r, c] = last[p]
                for ch in range(NUM_FEATURES):
                    out_features[b, r, c, ch] = acc[p, ch]


@numba.njit(cache=True, parallel=True)
def composite_backward(packed, offsets, entries, tiles_x, height, width, final_T, last, grad_features, grad_T,
                       grad_entries):
    """Gradients of ``composite_forward`` (3DGS renderCUDA backward), back to front per tile.

    grad_features (B, H, W, 4) and grad_T (B, H, W) are dL/d(out_features) and dL/d(out_T). Writes
    grad_entries (E, 10): per list entry, dL/d(x, y, a, b, c, opacity, f0..f3) from that tile's pixels.
    With C = sum_i f_i a_i T_i and T_final = prod_i (1 - a_i): dC/da_i = T_i (f_i - S_i),
    S_i = sum_{j > i} f_j a_j prod_{i < k < j} (1 - a_k) (built back to front), and
    dT_final/da_i = -T_final / (1 - a_i); T_i is recovered as T_{i+1} / (1 - a_i). Where the 0.99 clamp
    is active alpha does not depend on the Gaussian (zero gradient, as gsplat; 3DGS ignores the clamp).
    """
    B = packed.shape[0]
    num_tiles = (offsets.shape[0] - 1) // B
    for task in numba.prange(B * num_tiles):
        b, tile = task // num_tiles, task % num_tiles
        r0, c0 = (tile // tiles_x) * TILE, (tile % tiles_x) * TILE
        r1, c1 = min(r0 + TILE, height), min(c0 + TILE, width)
        start = offsets[task]
        T = np.empty(TILE * TILE)
        rec = np.zeros((TILE * TILE, NUM_FEATURES))  # S_i of the docstring
        last_alpha = np.zeros(TILE * TILE)
        last_f = np.zeros((TILE * TILE, NUM_FEATURES))
        row_last = np.full(TILE, start - 1, dtype=np.int64)  # per row, the last contributor of any pixel
        for r in range(r0, r1):
            for c in range(c0, c1):
                T[(r - r0) * TILE + (c - c0)] = final_T[b, r, c]
                row_last[r - r0] = max(row_last[r - r0], last[b, r, c])
        stop = row_last.max()
        for k in range(stop, start - 1, -1):
            gauss = packed[b, entries[k]]
            x, y, qa, qb, qc, o, exp_a = gauss[0], gauss[1], gauss[2], gauss[3], gauss[4], gauss[5], gauss[EXP_A]
            f0, f1, f2, f3 = gauss[6], gauss[7], gauss[8], gauss[9]
            gx = gy = ga = gb = gc = go = g0 = g1 = g2 = g3 = 0.0  # dL/d(this entry's 10 values)
            fresh, col, G, E, F = True, 0, 0.0, 0.0, 0.0
            ra, rb = _rows(gauss, r0, r1)
            for r in range(ra, rb):
                if k > row_last[r - r0]:
                    fresh = True
                    continue
                dy = y - (r + 0.5)
                ca, cb, col, G, E, F, fresh = _row_state(gauss, dy, c0, c1, fresh, col, G, E, F)
                g_pix, e_pix = G, E
                for c in range(ca, cb):
                    exp_power = g_pix
                    g_pix *= e_pix
                    e_pix *= exp_a
                    if k > last[b, r, c]:
                        continue
                    alpha = min(ALPHA_MAX, o * exp_power)
                    if alpha < ALPHA_MIN:
                        continue
                    p = (r - r0) * TILE + (c - c0)
                    inv = 1.0 / (1.0 - alpha)
                    t = T[p] * inv  # T_i, before this Gaussian
                    T[p] = t
                    w = alpha * t
                    la = last_alpha[p]
                    d0, d1 = grad_features[b, r, c, 0], grad_features[b, r, c, 1]
                    d2, d3 = grad_features[b, r, c, 2], grad_features[b, r, c, 3]
                    s0 = la * last_f[p, 0] + (1.0 - la) * rec[p, 0]
                    s1 = la * last_f[p, 1] + (1.0 - la) * rec[p, 1]
                    s2 = la * last_f[p, 2] + (1.0 - la) * rec[p, 2]
                    s3 = la * last_f[p, 3] + (1.0 - la) * rec[p, 3]
                    rec[p, 0], rec[p, 1], rec[p, 2], rec[p, 3] = s0, s1, s2, s3
                    last_f[p, 0], last_f[p, 1], last_f[p, 2], last_f[p, 3] = f0, f1, f2, f3
                    last_alpha[p] = alpha
                    g0 += w * d0
                    g1 += w * d1
                    g2 += w * d2
                    g3 += w * d3
                    dL_dalpha = ((f0 - s0) * d0 + (f1 - s1) * d1 + (f2 - s2) * d2 + (f3 - s3) * d3) * t
                    dL_dalpha -= final_T[b, r, c] * inv * grad_T[b, r, c]
                    if o * exp_power <= ALPHA_MAX:
                        dx = x - (c + 0.5)
                        dL_dG = o * dL_dalpha
                        gdx, gdy = exp_power * dx, exp_power * dy
                        gx += dL_dG * (-gdx * qa - gdy * qb)
                        gy += dL_dG * (-gdy * qc - gdx * qb)
                        ga += -0.5 * gdx * dx * dL_dG
                        gb += -gdx * dy * dL_dG
                        gc += -0.5 * gdy * dy * dL_dG
                        go += exp_power * dL_dalpha
            grad = grad_entries[k]
            grad[0], grad[1], grad[2], grad[3], grad[4] = gx, gy, ga, gb, gc
            grad[5], grad[6], grad[7], grad[8], grad[9] = go, g0, g1, g2, g3
        for k in range(stop + 1, offsets[task + 1]):  # entries behind every pixel's last contributor
            grad_entries[k] = 0.0


@numba.njit(cache=True)
def sum_entries(grad_entries, offsets, entries, B, G):
    """Per-entry gradient rows (E, 10) -> per-Gaussian sums (10, B, G), in entry order (deterministic)."""
    out = np.zeros((NUM_PARAMS, B, G))
    num_tiles = (offsets.shape[0] - 1) // B
    for task in range(B * num_tiles):
        b = task // num_tiles
        for k in range(offsets[task], offsets[task + 1]):
            g = entries[k]
            for j in range(NUM_PARAMS):
                out[j, b, g] += grad_entries[k, j]
    return out
