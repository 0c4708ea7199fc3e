"""Fuzz the engine's public functions (hypothesis): finite results or ValueError, nothing else escapes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfyui_full4d.diffusion.attention import frame_visibility, fused_tv_attention
from comfyui_full4d.gaussians import rasterize
from comfyui_full4d.geometry.projection import project_to_cameras
from comfyui_full4d.geometry.rig import interpolate_rig

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)


def finite_or_value_error(fn, *args, **kw):
    try:
        out = fn(*args, **kw)
    except ValueError as e:
        assert str(e), "ValueError without a message"
        return None
    for x in out if isinstance(out, tuple) else (out,):
        if torch.is_tensor(x) and x.is_floating_point():
            assert torch.isfinite(x).all(), f"{fn.__name__} returned non-finite values"
    return out


@SETTINGS
@given(v=st.integers(-2, 7), f=st.integers(-2, 9))
def test_frame_visibility(v, f):
    finite_or_value_error(frame_visibility, v, f)


@SETTINGS
@given(B=st.integers(1, 2), H=st.integers(1, 2), V=st.integers(0, 3), F=st.integers(0, 5), S=st.integers(1, 5),
       D=st.integers(1, 8), extra=st.integers(0, 2), value=st.sampled_from([0.0, 1.0, float("nan")]))
def test_fused_tv_attention(B, H, V, F, S, D, extra, value):
    N = max(V, 1) * max(F, 1) * S + extra
    q = torch.randn(B, H, N, D)
    if value != 0.0:
        q[..., 0, 0] = value
    k, v = torch.randn_like(q), torch.randn_like(q)
    try:
        out = fused_tv_attention(q, k, v, V, F)
    except ValueError:
        return
    if math.isfinite(value):
        assert torch.isfinite(out).all()


@SETTINGS
@given(V=st.integers(0, 6), n=st.integers(-1, 50), scale=floats, dtype=st.sampled_from([torch.float32, torch.float64]))
def test_interpolate_rig(V, n, scale, dtype):
    from comfyui_full4d.geometry.cameras import intrinsics_from_fov
    from comfyui_full4d.geometry.rig import ring_rig

    if V >= 2:
        rig = ring_rig(V, intrinsics_from_fov(50, 64, 48), 64, 48)
        R, t = rig.cameras.R.to(dtype), rig.cameras.t.to(dtype) * (scale if math.isfinite(scale) else 1.0)
        if not math.isfinite(scale):
            t = t.clone()
            t[0, 0] = scale
    else:
        R, t = torch.eye(3, dtype=dtype).expand(V, 3, 3), torch.zeros(V, 3, dtype=dtype)
    finite_or_value_error(interpolate_rig, R, t, n)


@SETTINGS
@given(T=st.integers(0, 2), H=st.integers(1, 6), W=st.integers(1, 6), V=st.integers(0, 2), d=floats,
       radius=st.integers(-1, 2), size=st.sampled_from([None, (4, 5), (0, 3)]))
def test_project_to_cameras(T, H, W, V, d, radius, size):
    images = torch.rand(T, H, W, 3)
    depth = torch.full((T, H, W), d)
    K = torch.tensor([[5.0, 0, W / 2], [0, 5.0, H / 2], [0, 0, 1]])
    w2c = torch.eye(4)
    w2c_dst = torch.eye(4).expand(V, 4, 4).clone()
    K_dst = K.expand(V, 3, 3).clone()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        finite_or_value_error(project_to_cameras, images, depth, K, w2c, K_dst, w2c_dst, size=size,
                              point_radius=radius)


@SETTINGS
@given(N=st.integers(0, 20), W=st.integers(-1, 12), H=st.integers(1, 10), m=floats, s=floats,
       o=st.floats(-0.5, 1.5))
def test_rasterize(N, W, H, m, s, o):
    g = torch.Generator().manual_seed(0)
    means = torch.randn(N, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 2.0])
    if N:
        means[0, 2] = m
    quats = torch.randn(N, 4, generator=g)
    scales = torch.full((N, 3), s)
    opac = torch.full((N,), o)
    colors = torch.rand(N, 3, generator=g)
    K = torch.tensor([[10.0, 0, 6], [0, 10.0, 5], [0, 0, 1]])
    finite_or_value_error(rasterize, means, quats, scales, opac, colors, torch.eye(4), K, W, H)
