"""4D Gaussian Splatting: rasteriser, canonical Gaussians + HexPlane deformation, fitting, export."""

from .densify import DensifyConfig, DensifyState, densify_step
from .fit import FitConfig, FitStats, fit_4dgs, render_scene
from .fmd import FMDConfig, fmd_loss
from .init import backproject_views, init_gaussians
from .model import Gaussians, HexPlane, HexPlaneConfig, Scene4D
from .rasterize import rasterize

__all__ = ["rasterize", "Gaussians", "HexPlane", "HexPlaneConfig", "Scene4D", "DensifyConfig", "DensifyState",
           "densify_step", "FitConfig", "FitStats", "fit_4dgs", "render_scene", "FMDConfig", "fmd_loss",
           "backproject_views", "init_gaussians"]
