"""comfyui-full4d engine: plain torch, laid out by pipeline stage (docs/architecture.md).

Imports run down the stages only (tests/test_layout.py):

    common  <  geometry, diffusion  <  media  <  gaussians  <  host  <  training, client

``common`` (progress, atomic writes, FSDP tensor helpers) is at the bottom; ``geometry`` (cameras, rigs,
depth, projection) and ``diffusion`` (the T-V attention rule, the adapter, sampling layout) are the
maths; ``media`` reads, makes and measures frames; ``gaussians`` fits and renders the 4D scene; ``host``
is the only package that imports ComfyUI; ``training`` and ``client`` are the command-line applications
on top (the pack's ``nodes/`` sit beside them).
"""
