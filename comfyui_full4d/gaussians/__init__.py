"""4D Gaussian Splatting: rasteriser, canonical Gaussians + HexPlane deformation, fitting, export."""

from .rasterize import rasterize

__all__ = ["rasterize"]
