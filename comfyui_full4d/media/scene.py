"""The procedural scene's layout and motion (SPEC 9): what is where at a scene time, in metric world units
(the source camera's OpenCV frame, world up ``-y``). ``media.synthetic`` ray-casts it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SceneSpec", "make_scene", "object_states", "ELLIPSOID", "BOX", "LAYOUT_DEPTH"]

ELLIPSOID, BOX = 0, 1
LAYOUT_DEPTH = 2.0  # metres from the source camera to the layout's look-at point


@dataclass(frozen=True)
class SceneSpec:
    """Procedural scene in metric world units (the source camera's OpenCV frame).

    center: (3,) look-at point of the layout.
    plane_n: (P, 3) unit normals, plane_d: (P,) offsets (plane ``n . X = d``); plane_color (P, 2, 3)
      albedos blended by ``0.5 + 0.5 sin(2 pi x / w) sin(2 pi z / w)``, plane_wave (P,) wavelength w,
      faded to the mean colour with distance from ``center`` (plane_fade (P,) e-folding radius).
    backdrop_radius: radius of the backdrop sphere about ``center`` (``inf`` = none);
      backdrop_color (2, 3) albedos (horizon / zenith blend, modulated by a soft lon-lat checker).
    obj_kind: (N,) int64, ``ELLIPSOID`` or ``BOX``.
    obj_center: (N, 3) rest centre; path ``c(t) = center + amp * sin(2 pi f t + phase)``:
      obj_amp (N, 3), obj_freq (N,), obj_phase (N, 3).
    obj_axis: (N, 3) unit spin axis, obj_spin (N,) radians per unit time, obj_angle (N,) at t = 0.
    obj_size: (N, 3) radii / half extents; ``s(t) = size * (1 + size_amp * sin(2 pi t + size_phase))``:
      obj_size_amp (N, 3), obj_size_phase (N, 3).
    obj_color: (N, 2, 3) albedos; obj_tex (N, 3) cycles of the local texture per unit ``q``,
      obj_tex_phase (N, 3).
    """

    center: Tensor
    plane_n: Tensor
    plane_d: Tensor
    plane_color: Tensor
    plane_wave: Tensor
    plane_fade: Tensor
    backdrop_radius: float
    backdrop_color: Tensor
    obj_kind: Tensor
    obj_center: Tensor
    obj_amp: Tensor
    obj_freq: Tensor
    obj_phase: Tensor
    obj_axis: Tensor
    obj_spin: Tensor
    obj_angle: Tensor
    obj_size: Tensor
    obj_size_amp: Tensor
    obj_size_phase: Tensor
    obj_color: Tensor
    obj_tex: Tensor
    obj_tex_phase: Tensor

    @property
    def num_objects(self) -> int:
        return int(self.obj_kind.shape[0])


def make_scene(seed: int = 0) -> SceneSpec:
    """The default layout (ground, backdrop, 2 ellipsoids incl. a deforming one, 2 spheres, a box),
    jittered deterministically from ``seed`` (positions, phases, colours, texture frequencies)."""
    g = torch.Generator().manual_seed(int(seed))

    def u(*shape: int, lo: float = 0.0, hi: float = 1.0) -> Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)

    D = LAYOUT_DEPTH
    c = torch.tensor([0.0, 0.0, D], dtype=torch.float64)
    h = 0.26 * D  # ground below the source camera
    # kind, rest offset from c (units of D), path amplitude (D), size (D), size_amp, spin (rad)
    layout = [
        (ELLIPSOID, (0.00, 0.00, 0.05), (0.08, 0.00, 0.05), (0.24, 0.24, 0.24), 0.00, 2.0),   # sphere
        (ELLIPSOID, (-0.37, 0.00, -0.05), (0.00, 0.04, 0.00), (0.13, 0.20, 0.13), 0.22, 1.5),  # deforming
        (BOX, (0.37, 0.06, 0.00), (0.00, 0.00, 0.06), (0.12, 0.12, 0.12), 0.00, 3.0),         # spinning box
        (ELLIPSOID, (0.08, -0.22, -0.22), (0.15, 0.05, 0.06), (0.07, 0.07, 0.07), 0.00, 4.0),  # small sphere
        (ELLIPSOID, (-0.05, 0.18, 0.26), (0.00, 0.00, 0.04), (0.20, 0.07, 0.11), 0.10, 1.0),   # flat ellipsoid
    ]
    N = len(layout)
    kind = torch.tensor([k for k, *_ in layout], dtype=torch.int64)
    rest = torch.tensor([o for _, o, *_ in layout], dtype=torch.float64) * D
    amp = torch.tensor([a for _, _, a, *_ in layout], dtype=torch.float64) * D
    size = torch.tensor([s for *_, s, _, _ in layout], dtype=torch.float64) * D
    size_amp = torch.tensor([[sa] for *_, sa, _ in layout], dtype=torch.float64) * torch.tensor([1.0, -0.8, 0.6])
    spin = torch.tensor([sp for *_, sp in layout], dtype=torch.float64) * u(N, lo=0.8, hi=1.2)
    rest = rest + u(N, 3, lo=-0.03, hi=0.03) * D
    reach = torch.where(kind == BOX, size.norm(dim=1), size.amax(dim=1)) * (1 + size_amp.abs().amax(dim=1))
    rest[:, 1] = torch.minimum(rest[:, 1], torch.tensor(h) - reach - amp[:, 1])  # above the ground
    axis = torch.nn.functional.normalize(_f64([0.0, -1.0, 0.0]) + u(N, 3, lo=-0.4, hi=0.4), dim=-1)  # ~vertical
    hue = u(N) + torch.arange(N) / N
    colors = torch.stack([_hue_rgb(hue, 0.75, 0.9), _hue_rgb(hue + 0.5, 0.35, 0.35)], dim=1)
    return SceneSpec(
        center=c, plane_n=_f64([[0.0, 1.0, 0.0]]), plane_d=_f64([h]),
        plane_color=torch.stack([_hue_rgb(u(1), 0.25, 0.65), _hue_rgb(u(1), 0.3, 0.35)], dim=1),
        plane_wave=_f64([0.6 * D]), plane_fade=_f64([1.1 * D]),
        backdrop_radius=6.0 * D,
        backdrop_color=torch.stack([_hue_rgb(u(1), 0.35, 0.55)[0], _f64([0.75, 0.82, 0.92])]),
        obj_kind=kind, obj_center=c + rest, obj_amp=amp, obj_freq=u(N, lo=0.7, hi=1.0),
        obj_phase=u(N, 3, hi=2 * math.pi), obj_axis=axis, obj_spin=spin, obj_angle=u(N, hi=2 * math.pi),
        obj_size=size, obj_size_amp=size_amp, obj_size_phase=u(N, 3, hi=2 * math.pi), obj_color=colors,
        obj_tex=u(N, 3, lo=1.0, hi=2.0), obj_tex_phase=u(N, 3, hi=2 * math.pi),
    )


def _f64(x) -> Tensor:
    return torch.tensor(x, dtype=torch.float64)


def _hue_rgb(hue: Tensor, sat: float, val: float) -> Tensor:
    """(N,) hue in turns -> (N, 3) rgb, smooth cosine palette."""
    k = torch.tensor([0.0, 1.0 / 3.0, 2.0 / 3.0], dtype=torch.float64)
    base = 0.5 + 0.5 * torch.cos(2 * math.pi * (hue[:, None] - k))
    return val * ((1 - sat) + sat * base)


def _rotation(axis: Tensor, angle: Tensor) -> Tensor:
    """Rodrigues: axis (..., 3) unit, angle (...) -> (..., 3, 3) local-to-world rotation."""
    x, y, z = axis.unbind(-1)
    c, s = torch.cos(angle), torch.sin(angle)
    C = 1 - c
    return torch.stack([
        torch.stack([c + x * x * C, x * y * C - z * s, x * z * C + y * s], -1),
        torch.stack([y * x * C + z * s, c + y * y * C, y * z * C - x * s], -1),
        torch.stack([z * x * C - y * s, z * y * C + x * s, c + z * z * C], -1)], -2)


def object_states(scene: SceneSpec, times: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Object poses at scene times (T,): centres (T, N, 3), rotations (T, N, 3, 3) local-to-world,
    sizes (T, N, 3) (radii or half extents). ``X = c + Rot @ (size * q)``."""
    t = times.to(torch.float64).reshape(-1, 1)
    tau = 2 * math.pi
    cen = scene.obj_center + scene.obj_amp * torch.sin(tau * scene.obj_freq[:, None] * t[..., None] + scene.obj_phase)
    rot = _rotation(scene.obj_axis.expand(t.shape[0], -1, -1), scene.obj_angle + scene.obj_spin * t)
    size = scene.obj_size * (1 + scene.obj_size_amp * torch.sin(tau * t[..., None] + scene.obj_size_phase))
    return cen, rot, size
