"""Test-only node pack linked into the test server's custom_nodes/ (never part of the product).

The host's Wan text-encoder loader only accepts the full-size umT5-XXL, so server tests get their
CONDITIONING from here: a seeded random ``(1, L, 4096)`` tensor in the host's conditioning format.
"""

import torch
from comfy_api.latest import ComfyExtension, io


class Full4DTestConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="Full4DTestConditioning", category="testing",
                         inputs=[io.Int.Input("seed", default=0), io.Int.Input("length", default=8, min=1)],
                         outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, seed, length) -> io.NodeOutput:
        g = torch.Generator().manual_seed(seed)
        return io.NodeOutput([[torch.randn(1, length, 4096, generator=g) * 0.1, {}]])


class Full4DTestLatents(io.ComfyNode):
    """Seeded random latents standing in for VAE-encoded videos (the host's VAE loader only builds
    the full-size Wan2.2 VAE): a source (1, 48, T, h, w) and V-1 projections (V-1, 48, T, h, w)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="Full4DTestLatents", category="testing",
                         inputs=[io.Int.Input("seed", default=0), io.Int.Input("num_views", default=3, min=2),
                                 io.Int.Input("frames", default=2, min=1), io.Int.Input("height", default=4, min=2),
                                 io.Int.Input("width", default=6, min=2)],
                         outputs=[io.Latent.Output(display_name="source"), io.Latent.Output(display_name="projections")])

    @classmethod
    def execute(cls, seed, num_views, frames, height, width) -> io.NodeOutput:
        g = torch.Generator().manual_seed(seed)
        src = torch.randn(1, 48, frames, height, width, generator=g)
        proj = torch.randn(num_views - 1, 48, frames, height, width, generator=g)
        return io.NodeOutput({"samples": src}, {"samples": proj})


class Full4DTestGeometry(io.ComfyNode):
    """A source video + Geometry with deliberately bad depth (for the reliability suite)."""

    @classmethod
    def define_schema(cls):
        from comfy_api.latest import io as _io
        return io.Schema(node_id="Full4DTestGeometry", category="testing",
                         inputs=[io.Combo.Input("kind", options=["good", "nan", "inf", "zero", "half_nan", "conf0"]),
                                 io.Int.Input("frames", default=5, min=1), io.Int.Input("height", default=32, min=2),
                                 io.Int.Input("width", default=48, min=2)],
                         outputs=[io.Image.Output(display_name="source"), _io.Custom("FULL4D_GEOMETRY").Output()])

    @classmethod
    def execute(cls, kind, frames, height, width) -> io.NodeOutput:
        from comfyui_full4d.geometry.cameras import intrinsics_from_fov
        from comfyui_full4d.geometry.source import Geometry

        g = torch.Generator().manual_seed(0)
        img = torch.rand(frames, height, width, 3, generator=g)
        depth = 2.0 + torch.rand(frames, height, width, generator=g)
        conf = torch.ones_like(depth)
        K = intrinsics_from_fov(50.0, width, height)
        w2c = torch.eye(4).expand(frames, 4, 4).clone()
        if kind == "nan":
            depth[:] = float("nan")
        elif kind == "inf":
            depth[:] = float("inf")
        elif kind == "zero":
            depth[:] = 0.0
        elif kind == "half_nan":
            depth[:, : height // 2] = float("nan")
        elif kind == "conf0":
            conf[:] = 0.0
        # scale from the good values (the bad ones are what the nodes downstream must catch)
        return io.NodeOutput(img, Geometry(depth=depth, K=K, w2c=w2c, scale=2.5, conf=conf))


class Full4DTestScene(io.ComfyNode):
    """A static 4D scene made from the synthetic capture's ground truth, no fit (seconds, not minutes): one
    Gaussian per ground-truth depth pixel of frame 0 of every ring view (subsampled to ``max_points``), sized by
    its neighbours, nearly opaque, with the identity deformation. The whole world is enlarged ``world_scale``
    times, so the scene's metric scale (``extras["scale"]``, what its renders use) is ``world_scale`` times the
    synthetic one (about 2): far from 1, where a rig drawn in scene units misses the scene. Also gives the ring
    rig (scene units) and a GEOMETRY carrying that scale (as a source geometry does)."""

    @classmethod
    def define_schema(cls):
        from comfy_api.latest import io as _io
        return io.Schema(node_id="Full4DTestScene", category="testing",
                         inputs=[io.Int.Input("num_views", default=6, min=2), io.Int.Input("width", default=160),
                                 io.Int.Input("height", default=96), io.Float.Input("world_scale", default=2.0),
                                 io.Int.Input("max_points", default=30000, min=100)],
                         outputs=[_io.Custom("FULL4D_SCENE4D").Output(), _io.Custom("FULL4D_RIG").Output(),
                                  _io.Custom("FULL4D_GEOMETRY").Output()])

    @classmethod
    def execute(cls, num_views, width, height, world_scale, max_points) -> io.NodeOutput:
        from comfyui_full4d.gaussians.fit import scene_aabb
        from comfyui_full4d.gaussians.init import backproject_views, init_gaussians
        from comfyui_full4d.gaussians.model import HexPlane, HexPlaneConfig, Scene4D
        from comfyui_full4d.geometry.source import Geometry
        from comfyui_full4d.media.synthetic import make_capture

        cap = make_capture(num_views=num_views, num_frames=1, height=height, width=width)
        scale = cap.scale * world_scale
        cams = cap.rig.metric(scale)
        depth = cap.depth[:, 0] * world_scale  # (V, H, W): metric depth of the enlarged world
        pts, cols = backproject_views(depth, cap.views[:, 0], cams, max_points=max_points)
        g = init_gaussians(pts, cols, sh_degree=0, opacity=0.95)
        torch.manual_seed(0)
        hp = HexPlane(HexPlaneConfig(feature_dim=2, base_res=2, time_res=2, multires=(1,), hidden=4))
        scene = Scene4D(g, hp, (0.0, 1.0), scene_aabb(pts, cams), 0, {"scale": scale, "background": [0.0, 0.0, 0.0]})
        geometry = Geometry(depth=depth[:1], K=cams.K[0], w2c=torch.eye(4)[None], scale=scale)
        return io.NodeOutput(scene, cap.rig, geometry)
class Full4DTestTinyVAE(io.ComfyNode):
    """A small Wan2.2-layout video VAE (tests/fixtures/wan.py ``tiny_wan_vae``: 48 channels, x16 space, x4 time)
    standing in for Load VAE, whose loader only builds the full-size Wan2.2 VAE."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="Full4DTestTinyVAE", category="testing", inputs=[io.Int.Input("seed", default=0)],
                         outputs=[io.Vae.Output()])

    @classmethod
    def execute(cls, seed) -> io.NodeOutput:
        import sys
        from pathlib import Path

        tests = str(Path(__file__).resolve().parents[1])  # tests/fixtures
        if tests not in sys.path:
            sys.path.append(tests)
        from fixtures.wan import tiny_wan_vae

        return io.NodeOutput(tiny_wan_vae(seed=seed))


class _Ext(ComfyExtension):
    async def get_node_list(self):
        return [Full4DTestConditioning, Full4DTestLatents, Full4DTestGeometry, Full4DTestScene, Full4DTestTinyVAE]


async def comfy_entrypoint():
    return _Ext()
