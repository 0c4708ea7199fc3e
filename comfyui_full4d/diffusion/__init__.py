"""Stage 2, multi-view diffusion maths (no model code: the model is the host's Wan2.2 or Wan2.1-class model): the SPEC 2
time-view attention rule and its kernels (``attention``), the SPEC 4 adapter (camera encoders, fused
branch, projectors; ``adapter``), the Tab. 4 ablation switches beside them (``ablation``), how scenes are
packed into sampler passes (``packing``) and the training-free guidance (``training_free``)."""
