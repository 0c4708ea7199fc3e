"""The CPU path of ``rasterize``: a tiled front-to-back compositor in torch with a hand-written backward
(the algorithm is described in ``rasterize``'s module docstring). Works on screen-space Gaussians
(``rasterize.Projection``) and obeys the same image formation as gsplat and the reference: alphas clamped to
``ALPHA_MAX``, skipped below ``ALPHA_MIN``, a pixel stops before its transmittance reaches ``T_MIN``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from .rasterize import Projection

__all__ = ["ALPHA_MIN", "ALPHA_MAX", "T_MIN", "composite_tiles"]

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999  # gsplat 1.5.3's clamp (RasterizeToPixels3DGSFwd.cu)
T_MIN = 1e-4
_CPU_TILE = 8  # CPU tile size (any size gives the same image)
_BATCH_ELEMS = 1 << 17  # (pixel, Gaussian) pairs per chunk: small enough to stay in cache
_CHUNK_G = 64  # Gaussians per depth chunk inside a tile batch
_FAR = 1.0e4  # exponent of padding entries (alpha = exp(-1e4) = 0)
# exponents are clamped here before exp: exp(-20) = 2e-9 < ALPHA_MIN, so the threshold zeroes those alphas exactly as
# before, while exp of arguments below about -87 (float32) lands in the subnormal / underflow range, which CPUs
# compute on a slow path (measured ~100x slower per element); most (pixel, Gaussian) pairs of a tile are far out
_EXP_FLOOR = -20.0


def _tile_intersections(proj: Projection, tile: int, tiles_x: int, tiles_y: int) -> tuple[Tensor, Tensor]:
    """(tile, Gaussian) pairs sorted by tile then depth. Returns tile_ids (M,), gauss_ids (M,) int64."""
    with torch.no_grad():
        ids = torch.nonzero((proj.radii > 0).all(-1)).squeeze(-1)
        ids = ids[torch.argsort(proj.depths.detach()[ids], stable=True)]
        m = proj.means2d.detach()[ids] / tile
        r = proj.radii[ids].to(m.dtype) / tile
        limit = torch.tensor([tiles_x, tiles_y], dtype=m.dtype, device=m.device)
        lo = torch.floor(m - r).clamp(min=0).minimum(limit).long()  # clamp before the cast: huge boxes stay exact
        hi = torch.ceil(m + r).clamp(min=0).minimum(limit).long()
        (x0, y0), (x1, y1) = lo.unbind(-1), hi.unbind(-1)
        nx, n = x1 - x0, (x1 - x0) * (y1 - y0)
        local = torch.arange(int(n.sum()), device=m.device) - (torch.cumsum(n, 0) - n).repeat_interleave(n)
        nx_rep = nx.repeat_interleave(n)  # one entry per (Gaussian, tile) pair, Gaussians in depth order
        tile_ids = (y0.repeat_interleave(n) + local // nx_rep) * tiles_x + x0.repeat_interleave(n) + local % nx_rep
        gauss = ids.repeat_interleave(n)
        key = tile_ids.to(torch.int16 if tiles_x * tiles_y < 2**15 else torch.int32)  # narrow keys sort ~10x faster
        order = torch.argsort(key, stable=True)  # stable: keeps depth order inside a tile
        return tile_ids.index_select(0, order), gauss.index_select(0, order)


def _pixel_basis(tile: int, dtype, device) -> Tensor:
    """(P, 6), P = tile^2: ``[u^2, uv, v^2, u, v, 1]`` of a tile's pixel centres relative to the tile centre."""
    c = torch.arange(tile, dtype=dtype, device=device) + 0.5 - tile / 2
    v, u = torch.meshgrid(c, c, indexing="ij")
    u, v = u.reshape(-1), v.reshape(-1)
    return torch.stack([u * u, u * v, v * v, u, v, torch.ones_like(u)], -1)


def _chunk_state(basis: Tensor, coef: Tensor, T: Tensor, first: bool):
    """One depth chunk: basis (B, P, 6), coef (B, 6, g), carried T (B, P, 1) -> alpha, 1 - alpha, T_excl, T_incl,
    alive (1 until the pixel stops, else 0), weights ``w = alpha T_excl alive``, each (B, P, g)."""
    alpha = torch.bmm(basis, coef.neg()).clamp_min_(_EXP_FLOOR).exp_()  # o exp(-sigma), far tails at 2e-9
    alpha.clamp_max_(ALPHA_MAX)
    F.threshold_(alpha, ALPHA_MIN, 0.0)  # alpha < 1/255 is skipped
    one_minus = torch.rsub(alpha, 1.0)
    T_incl = torch.cumprod(one_minus, dim=-1)
    if not first:
        T_incl.mul_(T)
    T_excl = torch.cat([T.expand(-1, -1, 1), T_incl[..., :-1]], -1)
    alive = torch.gt(T_incl, T_MIN, out=torch.empty_like(T_incl))  # float 0/1 mask (a bool mask costs a cast)
    w = torch.mul(alpha, T_excl).mul_(alive)
    return alpha, one_minus, T_excl, T_incl, alive, w


def _coefficients(p: Tensor, centres: Tensor) -> Tensor:
    """Exponent ``0.5 d^T Q d - log o`` of (tile, Gaussian) pairs in the pixel basis, ``d = (u - ex, v - ey)``,
    ``(ex, ey)`` the mean relative to the tile centre. p (B, g, 6) ``[mx, my, a, b, c, log o]``, centres (B, 2)
    -> (B, 6, g)."""
    mx, my, a, b, c, log_o = p.unbind(-1)
    ex, ey = mx - centres[:, :1], my - centres[:, 1:]
    qx, qy = a * ex + b * ey, b * ex + c * ey  # Q (ex, ey)
    return torch.stack([0.5 * a, b, 0.5 * c, -qx, -qy, 0.5 * (ex * qx + ey * qy) - log_o], 1)


def _coefficients_vjp(p: Tensor, centres: Tensor, d_coef: Tensor) -> Tensor:
    """Vector-Jacobian product of ``_coefficients``: d_coef (B, 6, g) -> d_p (B, g, 6)."""
    mx, my, a, b, c, _ = p.unbind(-1)
    ex, ey = mx - centres[:, :1], my - centres[:, 1:]
    d0, d1, d2, d3, d4, d5 = d_coef.unbind(1)
    d_ex = (a * ex + b * ey) * d5 - a * d3 - b * d4
    d_ey = (b * ex + c * ey) * d5 - b * d3 - c * d4
    d_a = 0.5 * d0 - ex * d3 + 0.5 * ex * ex * d5
    d_b = d1 - ey * d3 - ex * d4 + ex * ey * d5
    d_c = 0.5 * d2 - ey * d4 + 0.5 * ey * ey * d5
    return torch.stack([d_ex, d_ey, d_a, d_b, d_c, -d5], -1)


@dataclass(frozen=True)
class _Batch:
    """Tiles composited together: tiles (B,) ids, idx (B, G) depth-ordered Gaussian ids (N = padding),
    centres (B, 2) tile centres in pixels."""

    tiles: Tensor
    idx: Tensor
    centres: Tensor


class _Composite(torch.autograd.Function):
    """Front-to-back compositing of all tiles with a hand-written backward that recomputes alphas chunk by chunk,
    so memory is O(pairs) indices instead of O(pairs x pixels) activations.

    gparams (N+1, 6) ``[mx, my, a, b, c, log o]`` (row N: padding, alpha = 0), feats (N+1, 4) ``[rgb, 1]``,
    basis (P, 6) -> (n_tiles, P, 4) ``[sum_i w_i c_i, sum_i w_i]``, ``w_i = alpha_i T_i``.
    Backward (``S_k`` = what lies behind Gaussian k): ``dL/dalpha_k = T_k (g . c_k) - (g . S_k) / (1 - alpha_k)``,
    ``g . S_k = g . C - sum_{i<=k} w_i (g . c_i)``; ``dL/dsigma_k = -alpha_k dL/dalpha_k`` where alpha_k is live
    (not skipped, not clamped, pixel not stopped), else 0.
    """

    @staticmethod
    def forward(ctx, gparams: Tensor, feats: Tensor, basis: Tensor, batches: list, n_tiles: int) -> Tensor:
        P, dt, dev = basis.shape[0], feats.dtype, feats.device
        out = torch.zeros(n_tiles, P, feats.shape[-1], dtype=dt, device=dev)
        ctx.actives = []  # per batch, per chunk: the tiles (rows of the batch) still unsaturated
        for bt in batches:
            B, G = bt.idx.shape
            T = torch.ones(B, P, 1, dtype=dt, device=dev)  # carried transmittance of every tile of the batch
            acc = torch.zeros(B, P, feats.shape[-1], dtype=dt, device=dev)
            act, actives = torch.arange(B, device=dev), []
            for s in range(0, G, _CHUNK_G):
                sub = bt.idx[act, s : s + _CHUNK_G]
                coef = _coefficients(gparams[sub], bt.centres[act])
                _, _, _, T_incl, _, w = _chunk_state(basis.expand(len(act), -1, -1), coef, T[act], first=s == 0)
                acc.index_add_(0, act, torch.bmm(w, feats[sub]))
                T.index_copy_(0, act, T_incl[..., -1:])
                actives.append(act)
                open_tiles = (T_incl[..., -1] > T_MIN).any(-1)
                if not bool(open_tiles.all()):
                    act = act[open_tiles]  # saturated tiles are done: everything behind is hidden
                    if not len(act):
                        break
            ctx.actives.append(actives)
            out.index_copy_(0, bt.tiles, acc)
        ctx.batches = batches
        ctx.save_for_backward(gparams, feats, basis, out)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        gparams, feats, basis, out = ctx.saved_tensors
        d_gparams, d_feats = torch.zeros_like(gparams), torch.zeros_like(feats)
        for bt, actives in zip(ctx.batches, ctx.actives):
            g_all = grad_out.index_select(0, bt.tiles)  # (B, P, 4)
            g_total_all = (g_all * out.index_select(0, bt.tiles)).sum(-1, keepdim=True)  # g . C, (B, P, 1)
            T = torch.ones_like(g_total_all)
            prefix = torch.zeros_like(g_total_all)  # sum_{i<=k} w_i (g . c_i), carried over chunks
            for c, act in enumerate(actives):
                sub = bt.idx[act, c * _CHUNK_G : (c + 1) * _CHUNK_G]
                p, f, g, g_total = gparams[sub], feats[sub], g_all[act], g_total_all[act]
                basis_b = basis.expand(len(act), -1, -1)
                alpha, one_minus, _, T_incl, alive, w = _chunk_state(
                    basis_b, _coefficients(p, bt.centres[act]), T[act], first=c == 0
                )
                d_feats.index_add_(0, sub.reshape(-1), torch.bmm(w.transpose(1, 2), g).reshape(-1, f.shape[-1]))
                wg = torch.bmm(g, f.transpose(1, 2)).mul_(w)  # w_k (g . c_k)
                behind = torch.cumsum(wg, dim=-1).add_(prefix[act])
                prefix.index_copy_(0, act, behind[..., -1:])
                behind = torch.rsub(behind, g_total).mul_(alpha).div_(one_minus)  # alpha_k (g . S_k) / (1 - alpha_k)
                live = torch.lt(alpha, ALPHA_MAX, out=torch.empty_like(alpha)).mul_(alive)  # not clamped/stopped
                alpha_d_alpha = wg.sub_(behind).mul_(live)  # alpha_k dL/dalpha_k
                d_coef = torch.bmm(basis_b.transpose(1, 2), alpha_d_alpha).neg_()  # (B', 6, g)
                d_p = _coefficients_vjp(p, bt.centres[act], d_coef)
                d_gparams.index_add_(0, sub.reshape(-1), d_p.reshape(-1, 6))
                T.index_copy_(0, act, T_incl[..., -1:])
        return d_gparams, d_feats, None, None, None


def composite_tiles(proj: Projection, opacities: Tensor, colors: Tensor, width: int, height: int) -> Tensor:
    """Tiled front-to-back compositing -> (H, W, 4) ``[sum w c, alpha]`` (no background)."""
    dt, dev, tile = proj.means2d.dtype, proj.means2d.device, _CPU_TILE
    tiles_x, tiles_y = math.ceil(width / tile), math.ceil(height / tile)
    n_tiles, P = tiles_x * tiles_y, tile * tile
    N = proj.means2d.shape[0]
    pad = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, -_FAR]], dtype=dt, device=dev)  # alpha = 0 everywhere
    gparams = torch.cat(
        [torch.cat([proj.means2d, proj.conics, torch.log(opacities.clamp_min(1e-30))[:, None]], -1), pad], 0
    )
    feats = torch.cat([torch.cat([colors, torch.zeros(1, 3, dtype=dt, device=dev)], 0),
                       torch.ones(N + 1, 1, dtype=dt, device=dev)], -1)  # (N+1, 4)
    full = _Composite.apply(gparams, feats, _pixel_basis(tile, dt, dev), _plan(proj, tile, tiles_x, tiles_y), n_tiles)
    img = full.reshape(tiles_y, tiles_x, tile, tile, 4).permute(0, 2, 1, 3, 4)
    return img.reshape(tiles_y * tile, tiles_x * tile, 4)[:height, :width]


def _plan(proj: Projection, tile: int, tiles_x: int, tiles_y: int) -> list[_Batch]:
    """Group non-empty tiles with similar Gaussian counts into batches of about ``_BATCH_ELEMS`` pairs per chunk."""
    with torch.no_grad():
        tile_ids, gauss_ids = _tile_intersections(proj, tile, tiles_x, tiles_y)
        if not len(tile_ids):
            return []
        dev, N, P = tile_ids.device, proj.means2d.shape[0], tile * tile
        counts = torch.bincount(tile_ids, minlength=tiles_x * tiles_y)
        offsets = torch.cumsum(counts, 0) - counts
        order = torch.argsort(counts, descending=True)  # similar counts share a batch: little padding
        order = order[counts[order] > 0]
        counts_sorted = counts[order].tolist()
        batches, i = [], 0
        while i < len(order):
            gmax = counts_sorted[i]
            nb = max(1, min(len(order) - i, _BATCH_ELEMS // (P * min(gmax, _CHUNK_G))))
            tb = order[i : i + nb]
            ar = torch.arange(gmax, device=dev)
            pos = offsets[tb, None] + ar
            idx = torch.where(ar < counts[tb, None], torch.take(gauss_ids, pos.clamp_max(len(gauss_ids) - 1)), N)
            centres = torch.stack([tb % tiles_x, tb // tiles_x], -1).to(proj.means2d.dtype) * tile + tile / 2
            batches.append(_Batch(tiles=tb, idx=idx, centres=centres))
            i += nb
        return batches
