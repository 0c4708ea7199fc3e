"""Canonical 3D Gaussians + HexPlane deformation field (SPEC 6; 4D-GS, Wu et al. CVPR 2024).

A Gaussian at time ``t`` is ``(mu + dmu, q + dq, log s + dlog s)`` with
``(dmu, dq, dlog s) = heads(MLP(f(mu, t)))`` and ``f`` the HexPlane feature: for each resolution
``r`` the product over the six planes ``P_r^{ab}`` (ab in xy, xz, yz, xt, yt, zt) of the bilinear
sample at the normalised coordinates ``(a, b)``, concatenated over resolutions (K-Planes / 4D-GS).
Coordinates are normalised to [-1, 1] by an AABB (space) and the time range (time).
The heads are zero-initialised, so a fresh field is the identity deformation. The scale offset is bounded
smoothly, ``dlog s -> B tanh(dlog s / B)`` with ``B = MAX_DLOG_SCALE`` (identity for small offsets): a Gaussian
may grow or shrink ``e^B`` times over time, never to an overflowing size (the fit's guard rails).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .sh import eval_sh

__all__ = ["Gaussians", "HexPlaneConfig", "HexPlane", "Scene4D", "PLANES", "GAUSSIAN_KEYS", "contract",
           "MAX_DLOG_SCALE"]

# (a, b) coordinate indices into (x, y, z, t) of the six planes
PLANES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
GAUSSIAN_KEYS = ("means", "quats", "log_scales", "opacity_logits", "sh_dc", "sh_rest")
MAX_DLOG_SCALE = 3.0  # bound of the deformation's log-scale offset (module docstring)


@dataclass
class Gaussians:
    """Canonical Gaussians, parameters only (STYLE 9).

    means (N, 3); quats (N, 4) wxyz (unnormalised); log_scales (N, 3); opacity_logits (N,);
    sh_dc (N, 1, 3); sh_rest (N, (d+1)^2 - 1, 3) for SH degree d (3DGS layout).
    """

    means: Tensor
    quats: Tensor
    log_scales: Tensor
    opacity_logits: Tensor
    sh_dc: Tensor
    sh_rest: Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        shapes = {"means": (n, 3), "quats": (n, 4), "log_scales": (n, 3), "opacity_logits": (n,)}
        for k, s in shapes.items():
            if tuple(getattr(self, k).shape) != s:
                raise ValueError(f"Gaussians.{k} must have shape {s}, got {tuple(getattr(self, k).shape)}")
        if tuple(self.sh_dc.shape) != (n, 1, 3) or self.sh_rest.shape[0] != n or self.sh_rest.shape[-1] != 3:
            raise ValueError(f"Gaussians SH must be sh_dc (N, 1, 3), sh_rest (N, K-1, 3), got "
                             f"{tuple(self.sh_dc.shape)}, {tuple(self.sh_rest.shape)}")

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return int(round((self.sh_rest.shape[1] + 1) ** 0.5)) - 1

    def as_dict(self) -> dict[str, Tensor]:
        return {k: getattr(self, k) for k in GAUSSIAN_KEYS}

    @classmethod
    def from_dict(cls, d: dict[str, Tensor]) -> "Gaussians":
        missing = [k for k in GAUSSIAN_KEYS if k not in d]
        if missing:
            raise ValueError(f"Gaussians: missing tensors {missing}")
        return cls(**{k: d[k] for k in GAUSSIAN_KEYS})

    @property
    def sh(self) -> Tensor:
        """(N, (d+1)^2, 3) all SH coefficients."""
        return torch.cat([self.sh_dc, self.sh_rest], 1)


@dataclass(frozen=True)
class HexPlaneConfig:
    """feature_dim C per plane; spatial resolution ``base_res * m`` and temporal ``time_res`` for each
    multiplier m in ``multires``; MLP width ``hidden`` with ``depth`` hidden layers."""

    feature_dim: int = 16
    base_res: int = 32
    time_res: int = 16
    multires: tuple[int, ...] = (1, 2)
    hidden: int = 64
    depth: int = 1

    def __post_init__(self) -> None:
        for k in ("feature_dim", "base_res", "time_res", "hidden"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"HexPlaneConfig.{k} must be >= 1, got {getattr(self, k)}")
        if not self.multires or any(int(m) < 1 for m in self.multires):
            raise ValueError(f"HexPlaneConfig.multires must be positive integers, got {self.multires}")

    def to_json_dict(self) -> dict:
        d = asdict(self)
        d["multires"] = list(self.multires)
        return d


class HexPlane(nn.Module):
    """Deformation field; ``forward(xyz (N, 3) normalised, t (N, 1) normalised) -> (dmu (N,3), dq (N,4),
    dlog_s (N,3))``. Planes ``planes[r*6 + p]`` of shape (1, C, res_b, res_a) for plane p = (a, b)."""

    def __init__(self, config: HexPlaneConfig = HexPlaneConfig(), device: torch.device | str | None = None):
        super().__init__()
        self.config = config
        C = config.feature_dim
        planes = []
        for m in config.multires:
            res = [config.base_res * m] * 3 + [config.time_res]
            for a, b in PLANES:
                p = torch.empty(1, C, res[b], res[a], device=device)
                if b == 3:
                    nn.init.ones_(p)  # time planes start at 1: a static field (K-Planes)
                else:
                    nn.init.uniform_(p, 0.1, 0.5)
                planes.append(nn.Parameter(p))
        self.planes = nn.ParameterList(planes)
        layers: list[nn.Module] = [nn.Linear(C * len(config.multires), config.hidden, device=device), nn.ReLU()]
        for _ in range(config.depth):
            layers += [nn.Linear(config.hidden, config.hidden, device=device), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.head_mean = nn.Linear(config.hidden, 3, device=device)
        self.head_rot = nn.Linear(config.hidden, 4, device=device)
        self.head_scale = nn.Linear(config.hidden, 3, device=device)
        for h in (self.head_mean, self.head_rot, self.head_scale):
            nn.init.zeros_(h.weight)
            nn.init.zeros_(h.bias)

    def features(self, xyz: Tensor, t: Tensor) -> Tensor:
        """xyz (N, 3), t (N, 1) in [-1, 1] -> (N, C * len(multires))."""
        coords = torch.cat([xyz, t], -1)  # (N, 4)
        out = []
        for r in range(len(self.config.multires)):
            f = None
            for p, (a, b) in enumerate(PLANES):
                grid = coords[:, [a, b]].reshape(1, -1, 1, 2)
                s = F.grid_sample(self.planes[r * 6 + p], grid, mode="bilinear", padding_mode="border",
                                  align_corners=True)  # (1, C, N, 1)
                s = s[0, :, :, 0].T
                f = s if f is None else f * s
            out.append(f)
        return torch.cat(out, -1)

    def forward(self, xyz: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.trunk(self.features(xyz, t))
        return self.head_mean(h), self.head_rot(h), self.head_scale(h)

    def tv_loss(self) -> Tensor:
        """Total variation: mean over planes of the mean squared difference of neighbouring texels."""
        total = self.planes[0].new_zeros(())
        for p in self.planes:
            total = total + (p[..., 1:, :] - p[..., :-1, :]).pow(2).mean() + (p[..., :, 1:] - p[..., :, :-1]).pow(2).mean()
        return total / len(self.planes)


def contract(points: Tensor, box: Tensor) -> Tensor:
    """Unbounded-scene contraction (mip-NeRF 360 / MERF, L-inf form): points (N, 3) -> (N, 3) in [-1, 1].

    With ``u = 2 (x - lo) / (hi - lo) - 1`` for the inner box ``box`` (2, 3) [lo; hi], points inside the
    box (``|u|_inf <= 1``) map linearly to ``u / 2`` in [-1/2, 1/2]; points outside to
    ``(1 - 1 / (2 |u|_inf)) u / |u|_inf`` in (1/2, 1). The deformation grid thus spends half its
    resolution on the inner box (the subject) and still covers a far background such as a sky dome."""
    lo, hi = box[0], box[1]
    u = 2 * (points - lo) / (hi - lo).clamp_min(1e-9) - 1
    n = u.abs().amax(-1, keepdim=True)
    far = (1 - 0.5 / n.clamp_min(1.0)) * u / n.clamp_min(1.0)
    return torch.where(n <= 1, 0.5 * u, far)


@dataclass
class Scene4D:
    """A 4D Gaussian scene: canonical Gaussians, HexPlane, time range (t0, t1), inner box ``aabb`` (2, 3)
    [min; max] of the deformation grid (positions outside it are contracted, ``contract``), SH degree."""

    gaussians: Gaussians
    hexplane: HexPlane
    time_range: tuple[float, float]
    aabb: Tensor
    sh_degree: int = 3
    extras: dict = field(default_factory=dict)

    def normalise(self, means: Tensor, time: float) -> tuple[Tensor, Tensor]:
        """HexPlane coordinates: space contracted into [-1, 1]^3 (``contract``) by the inner box ``aabb``,
        time mapped linearly from ``time_range`` to [-1, 1]."""
        xyz = contract(means, self.aabb.to(means))
        t0, t1 = self.time_range
        tn = 0.0 if t1 <= t0 else 2 * (float(time) - t0) / (t1 - t0) - 1
        return xyz, torch.full_like(means[:, :1], max(-1.0, min(1.0, tn)))

    def at(self, time: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Deformed Gaussians at ``time``: means (N, 3), quats (N, 4) unit wxyz, scales (N, 3) linear,
        opacities (N,) in (0, 1), sh (N, (d+1)^2, 3)."""
        g = self.gaussians
        xyz, tn = self.normalise(g.means, time)
        dmu, dq, ds = self.hexplane(xyz, tn)
        q = g.quats + dq
        q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        ds = MAX_DLOG_SCALE * torch.tanh(ds / MAX_DLOG_SCALE)
        return g.means + dmu, q, torch.exp(g.log_scales + ds), torch.sigmoid(g.opacity_logits), g.sh

    def colors(self, means: Tensor, sh: Tensor, camera_center: Tensor, degree: int | None = None) -> Tensor:
        """View-dependent RGB (N, 3) from SH (``eval_sh``) for a camera centre (3,)."""
        d = self.sh_degree if degree is None else min(int(degree), self.sh_degree)
        return eval_sh(d, sh, means - camera_center.to(means))

    def __len__(self) -> int:
        return len(self.gaussians)

    @property
    def device(self) -> torch.device:
        return self.gaussians.means.device

    def to(self, device: torch.device | str) -> "Scene4D":
        """This scene on ``device`` (itself when already there; else a copy, parameters detached)."""
        if self.device == torch.device(device):
            return self
        g = Gaussians.from_dict({k: v.detach().to(device) for k, v in self.gaussians.as_dict().items()})
        hp = copy.deepcopy(self.hexplane).to(device)
        return Scene4D(g, hp, self.time_range, self.aabb.to(device), self.sh_degree, dict(self.extras))
