"""Mutation check of the method rules (SPEC 2-8): each rule broken once on purpose, and the test
that must go red.

Every break is a text substitution in a temporary copy of the ``comfyui_full4d`` package; the copy
shadows the editable install through ``PYTHONPATH`` (the repository's tests, nodes and host stay as
they are) and only the tests named for that break run (``scripts/run_tests.py ... -x``). A baseline
run of every named test on an unmodified copy must pass first, so a red run means the break was seen.
A break counts as caught when pytest reports failed tests (exit code 1); an import or collection error
(other codes) is reported as such and counts as not caught.

Prints a table ``rule | break | test | caught`` and exits 1 when any break is not caught, 2 when the
baseline fails or a break no longer applies to the code (its text is not found exactly once).

    .venv/bin/python scripts/mutations.py            # all breaks (about 5-10 min on 2 CPU cores)
    .venv/bin/python scripts/mutations.py --only 5   # the breaks whose rule starts with "5"
    .venv/bin/python scripts/mutations.py --grep 'fidelity|recalibrate'   # rule, break or test matches
    .venv/bin/python scripts/mutations.py --list     # the table of breaks, nothing run
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "comfyui_full4d"


@dataclass(frozen=True)
class Mutation:
    """rule: SPEC section and rule; brk: what the break does; edits: (file under the package, old, new)
    substitutions (old must occur exactly once); tests: pytest node ids that must fail."""

    rule: str
    brk: str
    edits: tuple[tuple[str, str, str], ...]
    tests: tuple[str, ...]


def _m(rule: str, brk: str, edits, tests) -> Mutation:
    return Mutation(rule, brk, tuple(edits), tuple(tests))


ATT, PATCH, ADAPTER = "diffusion/attention.py", "host/patch.py", "diffusion/adapter.py"
PROJ, RIG, DENSIFY, PIPELINE = "geometry/projection.py", "geometry/rig.py", "gaussians/densify.py", "gaussians/pipeline.py"
LOSSES, T_HEXPLANE = "gaussians/losses.py", "tests/test_hexplane.py"
T_PROJ, T_RIG, T_DENSIFY, T_FIT = ("tests/test_projection.py", "tests/test_rig.py", "tests/test_densify.py",
                                   "tests/test_fit.py")
SAMPLING, FMD, HOST_FMD, TRAIN = "host/sampling.py", "gaussians/fmd.py", "host/fmd.py", "training/train.py"
T_ATT, T_PATCH, T_ADAPTER = "tests/test_attention.py", "tests/test_patch.py", "tests/test_adapter.py"
T_SAMPLER, T_FMD, T_FMD_HOST, T_TRAIN = ("tests/test_sampler.py", "tests/test_fmd.py", "tests/test_fmd_host.py",
                                         "tests/test_train.py")
FIT, MODEL, VDEPTH, PREVIEW = "gaussians/fit.py", "gaussians/model.py", "geometry/view_depth.py", "gaussians/preview.py"
TFREE, HOST_TFREE = "diffusion/training_free.py", "host/training_free.py"
T_FF, T_VD, T_TFF, T_REC, T_PREVIEW = ("tests/test_fidelity_fit.py", "tests/test_view_depth.py",
                                       "tests/test_training_free_fidelity.py", "tests/test_recalibrate.py",
                                       "tests/test_preview.py")
ALIGN, DA3CORE, HOST_SPLAT, MEMORY = "geometry/align.py", "geometry/da3_core.py", "host/splat.py", "gaussians/memory.py"
IO, EXPORT = "common/io.py", "gaussians/export.py"
T_ALIGN, T_SPLAT, T_DA3CORE, T_PTOK, T_POOL = ("tests/test_align.py", "tests/test_splat.py", "tests/test_da3_core.py",
                                               "tests/test_parallel_tokens.py", "tests/test_pool.py")
T_FDEV, T_DISK = "tests/test_fit_device.py", "tests/test_disk_full.py"
_POOL_TEST = f"{T_POOL}::test_the_pool_carries_every_sampler_option"
_POOL_JOB = "scheduler=scheduler, views_per_pass=views_per_pass, include_source=include_source,\n"
_DISK_TESTS = (f"{T_DISK}::test_export_on_a_full_disk_fails_clearly_and_leaves_nothing",
               f"{T_DISK}::test_checkpoint_on_a_full_disk_fails_clearly_and_keeps_the_last_one")
_SLOTS_IN_PATCH = (  # a pass's fused RoPE at the views' global rig slots (what issue 22 decided against)
    "        slots = transformer_options.get(\"full4d_slots\")\n"
    "        if slots is not None:\n"
    "            full = dm.rope_encode((max(slots) + 1) * 2 * T, h, w, device=x.device, dtype=torch.float32,\n"
    "                                  transformer_options=transformer_options)\n"
    "            freqs = torch.cat([full[:, v * 2 * T * S:(v + 1) * 2 * T * S] for v in slots], 1)\n"
    "        run = Full4DRun(")

MUTATIONS: list[Mutation] = [
    # ---- SPEC 2: fused time-view attention
    _m("2 mask rule 1 (intra-view)", "own view only at the same frame slot",
       [(ATT, "    vis = vq == vk\n", "    vis = (vq == vk) & (fq == fk)\n")],
       [f"{T_ATT}::test_frame_visibility_matches_loop"]),
    _m("2 mask rule 2 (intra-time)", "exact path drops the other views' same-slot keys",
       [(ATT, "    if V > 1 and intra_time:", "    if False and intra_time:")],
       [f"{T_ATT}::test_matches_dense_reference"]),
    _m("2 mask rule 3 (cross-half)", "exact path drops the source condition half for target queries",
       [(ATT, "    if V > 1 and cross_half:", "    if False and cross_half:")],
       [f"{T_ATT}::test_matches_dense_reference"]),
    _m("2 scenes never mixed", "fused branch groups rows j, j+B/V, ... (mixes cond and uncond)",
       [(PATCH, "scene = u.reshape(B // V, V * L, C)",
         "scene = u.reshape(V, B // V, L, C).transpose(0, 1).reshape(B // V, V * L, C)")],
       [f"{T_PATCH}::test_scenes_in_one_batch_do_not_mix"]),
    _m("2 RoPE time index v*2T+f", "fused RoPE restarts at 0 in every view (index f)",
       [(PATCH, "        run = Full4DRun(",
         "        freqs = dm.rope_encode(2 * T, h, w, device=x.device, dtype=torch.float32).repeat(1, V, 1, 1, 1, 1)\n"
         "        run = Full4DRun(")],
       [f"{T_PATCH}::test_fused_branch_layout_and_rope_positions"]),
    _m("2 RoPE positions in float32", "positions built in the model dtype (bf16 collapses > 256)",
       [(PATCH, "device=x.device, dtype=torch.float32,\n", "device=x.device, dtype=x.dtype,\n")],
       [f"{T_PATCH}::test_fused_rope_positions_are_distinct_in_bf16"]),
    _m("2 copy initialised from the block", "fused attention copy gets random weights",
       [(PATCH, "return adapter.reset_parameters(base)", "return adapter.reset_parameters(None)")],
       [f"{T_PATCH}::test_fused_copy_is_each_blocks_self_attention"]),
    _m("2 copy includes q/k RMS norms", "norm_q / norm_k of the copy left at 1",
       [(ADAPTER, '_load_strict(blk.tv_attn, base, "base self-attention")',
         '_load_strict(blk.tv_attn, {**base, "norm_q.weight": torch.ones_like(base["norm_q.weight"]), '
         '"norm_k.weight": torch.ones_like(base["norm_k.weight"])}, "base self-attention")')],
       [f"{T_PATCH}::test_fused_copy_is_each_blocks_self_attention"]),
    _m("2 projector zero-initialised", "tv_proj weight starts at U(+-1e-3)",
       [(ADAPTER, "                p.zero_()\n", "                p.zero_()\n            _uniform_(blk.tv_proj.weight, 1e-3, g)\n")],
       [f"{T_PATCH}::test_zero_adapter_is_the_base_model"]),
    _m("2 fused output added ungated", "P(TV(u)) multiplied by the self-attention gate",
       [(PATCH, "x = x + fused.reshape(B, L, C).to(x.dtype)",
         "x = x + wan.repeat_e(e[2], x) * fused.reshape(B, L, C).to(x.dtype)")],
       [f"{T_PATCH}::test_fused_branch_is_added_ungated_to_the_residual"]),
    # ---- SPEC 3: point-cloud projection
    _m("3 nearest point wins (z-buffer)", "the farthest point wins",
       [(PROJ, 'reduce="amin")', 'reduce="amax")')],
       [f"{T_PROJ}::test_nearer_point_wins_and_splat_radius"]),
    _m("3 holes stay black (mask 0)", "holes filled with white",
       [(PROJ, "out = torch.zeros(Vc * Tc * Ho * Wo, 3,", "out = torch.ones(Vc * Tc * Ho * Wo, 3,")],
       [f"{T_PROJ}::test_matches_reference_exactly"]),
    _m("3 confidence threshold", "every pixel with depth is projected whatever its confidence",
       [(PROJ, "        ok &= torch.nan_to_num(conf, nan=-math.inf) > conf_threshold\n",
         "        ok &= torch.nan_to_num(conf, nan=-math.inf) > -math.inf\n")],
       [f"{T_PROJ}::test_pixels_below_the_confidence_threshold_are_not_projected"]),
    _m("3 view 0 is the source frame", "the source camera gets the point render, not the frame",
       [(PROJ, "                    renders[v, t] = images[t].to(renders.dtype)\n",
         "                    renders[v, t] = renders[v, t]\n")],
       [f"{T_PROJ}::test_view0_is_the_source_frame_itself"]),
    _m("3 rig translations in units of s", "rig translations used as metres (scale ignored)",
       [(PROJ, "    cams = rig.metric(geometry.scale)\n", "    cams = rig.metric(1.0)\n")],
       [f"{T_PROJ}::test_project_rig_checks_and_scale"]),
    # ---- SPEC 4: camera conditioning
    _m("4 camera MLP last layer zero-init", "fc2 weight starts at U(+-1e-3)",
       [(ADAPTER, "                p.zero_()\n", "                p.zero_()\n            _uniform_(blk.cam.fc2.weight, 1e-3, g)\n")],
       [f"{T_PATCH}::test_zero_adapter_is_the_base_model"]),
    _m("4 camera added before the gate", "c_v added to the residual after the gated self-attention",
       [(PATCH, "        y = y + cam.repeat(B // V, 1)[:, None, :]", "        x = x + cam.repeat(B // V, 1)[:, None, :]")],
       [f"{T_PATCH}::test_camera_embedding_is_added_before_the_gate"]),
    _m("4 embedding per view", "views get the cameras in reverse order",
       [(PATCH, "cam.repeat(B // V, 1)", "cam.flip(0).repeat(B // V, 1)")],
       [f"{T_PATCH}::test_camera_embedding_is_per_view"]),
    _m("4 [R|t/s] relative to view 0", "absolute rotations instead of R_v R_0^T",
       [(ADAPTER, "    R_rel = R @ R[0].T\n", "    R_rel = R.clone()\n")],
       [f"{T_ADAPTER}::test_camera_features_relative_to_view0"]),
    _m("4 model-size mismatch is an error", "load_adapter skips the dims check",
       [(ADAPTER, "        if diff:\n", "        if False:\n")],
       [f"{T_PATCH}::test_adapter_for_another_model_size_is_rejected"]),
    # ---- SPEC 5: timesteps and sampling
    _m("5 condition half at timestep 0", "condition half gets the target timestep",
       [(PATCH, "torch.cat([tgt, torch.zeros_like(tgt)], dim=1)", "torch.cat([tgt, tgt], dim=1)")],
       [f"{T_PATCH}::test_zero_adapter_is_the_base_model"]),
    _m("5 view 0 at timestep 0", "view 0's target half keeps the host timestep",
       [(PATCH, "    out.view(B // num_views, num_views, 2 * frames)[:, 0] = 0\n", "")],
       [f"{T_PATCH}::test_zero_adapter_is_the_base_model"]),
    _m("5 source re-imposed every step", "no denoise mask: the source row is sampled too",
       [(SAMPLING, "noise_mask=sp.mask,", "noise_mask=None,")],
       [f"{T_SAMPLER}::test_sample_shapes_progress_and_clean_source"]),
    _m("5 source row fed clean (every class)", "the host's inpainting feeds it as is (WAN21 re-noises it)",
       [(SAMPLING, "base = with_clean_inpaint(with_shift(model, shift))", "base = with_shift(model, shift)")],
       [f"{T_SAMPLER}::test_model_sees_the_source_row_clean_at_every_step"]),
    _m("5 only target views returned", "the source row is returned as well",
       [(SAMPLING, "return out if include_source else out[1:]", "return out")],
       [f"{T_SAMPLER}::test_sample_shapes_progress_and_clean_source"]),
    _m("5 shifted schedule", "the shift is ignored (1.0)",
       [(SAMPLING, "ms.set_parameters(shift=float(shift), multiplier=1000)",
         "ms.set_parameters(shift=1.0, multiplier=1000)")],
       [f"{T_SAMPLER}::test_sampler_runs_the_shifted_schedule"]),
    _m("5 z_tau = (1-tau) z0 + tau eps", "z_tau = z0 + tau eps in training",
       [(TRAIN, "return (1 - t) * z0 + t * eps, taus", "return z0 + t * eps, taus")],
       [f"{T_TRAIN}::test_noisy_latents_and_loss_follow_the_formulas"]),
    _m("5 velocity target eps - z0", "training target z0 - eps",
       [(TRAIN, "(eps[1:] - z0[1:]).float()", "(z0[1:] - eps[1:]).float()")],
       [f"{T_TRAIN}::test_noisy_latents_and_loss_follow_the_formulas"]),
    _m("5 (recipe, not SPEC) oracle phase: steps < oracle_steps", "one step more of oracle conditions",
       [(TRAIN, "        if step < cfg.oracle_steps:", "        if step <= cfg.oracle_steps:")],
       [f"{T_TRAIN}::test_the_oracle_phase_conditions_targets_on_their_own_latents_then_on_their_projections"]),
    _m("4-5 training runs the model the sampler runs", "the training step hands the blocks the next view's camera",
       [("host/training.py", "m = patch.with_rig(self._patched[0], cams)", "m = patch.with_rig(self._patched[0], cams.roll(1, 0))")],
       [f"{T_TRAIN}::test_the_trainer_sees_what_the_sampler_runs_with_a_trained_adapter"]),
    # ---- SPEC 6: 4D Gaussian reconstruction
    _m("6 init fuses all views", "auto init from the source view's depth only (the old node path)",
       [(PIPELINE, "            return INIT_VIEWS_GT\n", "            return INIT_SOURCE\n")],
       [f"{T_FIT}::test_auto_init_fuses_every_views_points"]),
    _m("6 loss L1 + 0.2 D-SSIM", "3DGS weighting (1 - 0.2) L1 + 0.2 D-SSIM",
       [(LOSSES, "    return l1_loss(pred, target) + lambda_dssim", "    return (1 - lambda_dssim) * l1_loss(pred, target) + lambda_dssim")],
       [f"{T_HEXPLANE}::test_photometric_loss_is_l1_plus_0_2_dssim"]),
    _m("6 never above 120,000 Gaussians", "default budget 200,000",
       [(DENSIFY, "    max_gaussians: int = 120_000\n", "    max_gaussians: int = 200_000\n")],
       [f"{T_DENSIFY}::test_spec_budget_defaults"]),
    _m("6 the budget is never exceeded", "densification ignores the budget",
       [(DENSIFY, "    budget = max(0, config.max_gaussians - n)\n", "    budget = n\n")],
       [f"{T_DENSIFY}::test_cap_never_exceeded_highest_gradients_win"]),
    _m("6 above 80,000 prune opacity < 0.015", "prune threshold 0.005 above the count",
       [(DENSIFY, "    prune_opacity: float = 0.015\n", "    prune_opacity: float = 0.005\n")],
       [f"{T_DENSIFY}::test_prune_rule"]),
    # ---- SPEC 7: camera interpolation
    _m("7 sorted by azimuth", "cameras kept in the given order",
       [(RIG, '    order = np.argsort(np.arctan2(d[:, 2], d[:, 0]), kind="stable")\n',
         "    order = np.arange(len(d))\n")],
       [f"{T_RIG}::test_passes_through_keys_sample0_first_sorted_and_order_free"]),
    _m("7 closed-loop C2 spline", "natural (not periodic) spline",
       [(RIG, 'bc_type="periodic"', 'bc_type="natural"')],
       [f"{T_RIG}::test_closed_and_c2_numerically"]),
    _m("7 SLERP between keys", "piecewise-constant orientations (nearest previous key)",
       [(RIG, "    R_out = Slerp(knots, Rotation.from_quat(q))(s).as_matrix()\n",
         "    R_out = Rotation.from_quat(q[np.floor(s * V).astype(int)]).as_matrix()\n")],
       [f"{T_RIG}::test_interpolation_matches_hand_spline_and_slerp"]),
    _m("7 sample 0 equals camera 0", "samples at the interval midpoints",
       [(RIG, "    s = np.arange(int(n)) / int(n)\n", "    s = (np.arange(int(n)) + 0.5) / int(n)\n")],
       [f"{T_RIG}::test_passes_through_keys_sample0_first_sorted_and_order_free"]),
    # ---- SPEC 8: flow matching distillation
    _m("8 tau ~ U[0.02, 0.98]", "tau ~ U[0, 1]",
       [(FMD, "tau = float(lo + (hi - lo) * torch.rand((), generator=generator))",
         "tau = float(torch.rand((), generator=generator))")],
       [f"{T_FMD}::test_formula_matches_hand_computation"]),
    _m("8 z_tau = (1-tau) z + tau eps", "z_tau = z + tau eps",
       [(FMD, "z_tau = (1 - tau) * z.detach() + tau * eps", "z_tau = z.detach() + tau * eps")],
       [f"{T_FMD}::test_formula_matches_hand_computation"]),
    _m("8 z0_hat = z_tau - tau v", "z0_hat = z_tau - v",
       [(FMD, "z0_hat = (z_tau - tau * v).detach()", "z0_hat = (z_tau - v).detach()")],
       [f"{T_FMD}::test_formula_matches_hand_computation"]),
    _m("8 stopgrad(z0_hat)", "gradient flows through z0_hat (via z_tau)",
       [(FMD, "z_tau = (1 - tau) * z.detach() + tau * eps", "z_tau = (1 - tau) * z + tau * eps"),
        (FMD, "z0_hat = (z_tau - tau * v).detach()", "z0_hat = z_tau - tau * v")],
       [f"{T_FMD}::test_standin_teacher_pulls_towards_targets"]),
    _m("8 w(tau) = 1 by default", "w(tau) = tau",
       [(FMD, "def _unit_weight(tau: float) -> float:\n    return 1.0", "def _unit_weight(tau: float) -> float:\n    return tau")],
       [f"{T_FMD}::test_standin_teacher_pulls_towards_targets"]),
    _m("8 model's normalised latent space", "noise, teacher and loss on the raw VAE latent (the old code)",
       [(HOST_FMD, "        return to_model(vae.encode(frames))", "        return vae.encode(frames)"),
        (HOST_FMD, "proj = to_model(vae.encode(renders[1]))", "proj = vae.encode(renders[1])"),
        (HOST_FMD, "predict_x0(model, positive, source_z, proj, cams, z_tau.detach(), float(tau), model_space=True)",
         "predict_x0(model, positive, source_latent, proj, cams, z_tau.detach(), float(tau))")],
       [f"{T_FMD_HOST}::test_host_fmd_runs_in_the_models_latent_space"]),
    _m("8 teacher conditioned on the projection", "the source frame instead of its projection into the camera",
       [(HOST_FMD, "proj = to_model(vae.encode(renders[1]))", "proj = to_model(vae.encode(renders[0]))")],
       [f"{T_FMD_HOST}::test_host_fmd_runs_in_the_models_latent_space"]),
    _m("8 teacher conditioned on the camera (scene units)", "metric translation passed as camera numbers",
       [(HOST_FMD, "cams = camera_features(pair.R, pair.t)", "cams = camera_features(pair.R, pair.t * scale)")],
       [f"{T_FMD_HOST}::test_host_fmd_runs_in_the_models_latent_space"]),
    _m("8 gradient through the VAE encoder", "frames detached before the encoder",
       [(HOST_FMD, "        return to_model(vae.encode(frames))", "        return to_model(vae.encode(frames.detach()))")],
       [f"{T_FMD_HOST}::test_host_fmd_gradient_reaches_gaussians"]),
    # ---- issue 22: the 4DGS fit (SPEC 6)
    _m("6 SH degree schedule", "full SH degree from iteration 1",
       [(FIT, "deg = min(cfg.sh_degree, (it - 1) // max(1, cfg.sh_increase_every))", "deg = cfg.sh_degree")],
       [f"{T_FF}::test_sh_degree_rises_every_sh_increase_every_iterations"]),
    _m("6 TV regulariser on the planes", "lambda_tv ignored",
       [(FIT, "        if cfg.lambda_tv > 0:\n", "        if False:\n")],
       [f"{T_FF}::test_tv_regulariser_smooths_the_planes"]),
    _m("6 HexPlane time in [-1, 1] over the time range", "time mapped to [0, 1]",
       [(MODEL, "2 * (float(time) - t0) / (t1 - t0) - 1", "(float(time) - t0) / (t1 - t0)")],
       [f"{T_FF}::test_time_range_ends_are_the_grid_edges"]),
    _m("6 HexPlane time range = the frames' range", "time range fixed to [0, 1]",
       [(FIT, "scene = Scene4D(g, hp, (t0, t1),", "scene = Scene4D(g, hp, (0.0, 1.0),")],
       [f"{T_FF}::test_time_range_ends_are_the_grid_edges"]),
    _m("6 densify on the NDC view-space gradient", "pixel-unit gradient (NDC scale W/2 dropped)",
       [(FIT, "gx = gc[:, 0] * z / K[0, 0] * cam.width / 2", "gx = gc[:, 0] * z / K[0, 0]")],
       [f"{T_FF}::test_view_space_gradient_is_the_ndc_gradient"]),
    _m("6 densify gradient threshold 0.0002", "threshold 0.0004",
       [(DENSIFY, "    grad_threshold: float = 0.0002\n", "    grad_threshold: float = 0.0004\n")],
       [f"{T_FF}::test_default_threshold_densifies_above_0_0002_ndc"]),
    _m("6 node path: prune above 2/3 of max_gaussians", "prune above max_gaussians",
       [(PIPELINE, "prune_above=int(max_gaussians * 2 // 3)", "prune_above=int(max_gaussians)")],
       [f"{T_FF}::test_node_path_budget"]),
    _m("6 node path: densify over the first 2/3", "densification until the last iteration",
       [(PIPELINE, "stop=max(1, iterations * 2 // 3)", "stop=iterations")],
       [f"{T_FF}::test_node_path_budget"]),
    _m("6 node path: init at most 60% of the budget", "init takes the whole budget",
       [(PIPELINE, "int(max_gaussians) * 3 // 5", "int(max_gaussians)")],
       [f"{T_FF}::test_node_path_budget"]),
    _m("6 means LR exponential decay (3DGS)", "means LR decays as exp(f^2)",
       [(FIT, "(cfg.lr_means_final / cfg.lr_means) ** f", "(cfg.lr_means_final / cfg.lr_means) ** (f * f)")],
       [f"{T_FF}::test_learning_rate_schedules"]),
    _m("6 planes LR decays to 0.1x", "planes LR constant",
       [(FIT, 'hopt.param_groups[0]["lr"] = cfg.lr_planes * 0.1**f', 'hopt.param_groups[0]["lr"] = cfg.lr_planes')],
       [f"{T_FF}::test_learning_rate_schedules"]),
    _m("6 SH rest LR = lr_sh / 20 (3DGS)", "SH rest at lr_sh",
       [(FIT, '"sh_rest": cfg.lr_sh / 20}', '"sh_rest": cfg.lr_sh}')],
       [f"{T_FF}::test_learning_rate_schedules"]),
    # ---- issue 22: DA3 on the views (SPEC 6 init, re-calibration)
    _m("6 DA3 view init on metric cameras", "DA3 aligned to the scene-unit rig",
       [(PIPELINE, "estimate_view_depth(da3_model, views, cams, (0,)", "estimate_view_depth(da3_model, views, rig.cameras, (0,)")],
       [f"{T_VD}::test_da3_view_init_runs_on_the_metric_cameras"]),
    _m("6 view depth: view 0 from the first chunk", "every chunk keeps its anchor (view 0 from the last)",
       [(VDEPTH, "keep = slice(0, None) if c == 0 else slice(1, None)", "keep = slice(0, None)")],
       [f"{T_VD}::test_chunked_equals_unchunked_view0_from_the_first_chunk"]),
    _m("6 re-calibration applies DA3's pose", "refined views keep the rig's pose",
       [(VDEPTH, "R[ok], t[ok] = pose[ok, :, :3], pose[ok, :, 3]", "R[ok], t[ok] = R[ok], t[ok]")],
       [f"{T_REC}::test_recalibrated_cameras_are_the_cameras_that_took_the_views"]),
    _m("6 re-calibration only where DA3 agrees", "every view takes DA3's pose",
       [(VDEPTH, "(residual <= max_residual)", "(residual <= math.inf)")],
       [f"{T_REC}::test_views_whose_da3_pose_disagrees_keep_the_rig"]),
    _m("6 re-calibration scale from view 0's depth", "Umeyama scale (biased by the drift)",
       [(VDEPTH, "            if scale_from_reference and r is not None:\n", "            if False:\n")],
       [f"{T_REC}::test_recalibrated_cameras_are_the_cameras_that_took_the_views"]),
    # ---- issue 22: App. B orbit and FMD (SPEC 7, 8)
    _m("7 render orbit = App. B poses", "orbit sampled at n+1 parameters",
       [(PIPELINE, "orb = interpolate_rig_cameras(rig, int(num_frames))",
         "orb = interpolate_rig_cameras(rig, int(num_frames) + 1)")],
       [f"{T_FF}::test_orbit_render_is_the_app_b_trajectory"]),
    _m("7 render orbit in metres", "orbit rendered in scene units",
       [(PIPELINE, 'cams = orb.metric(float(scene.extras.get("scale", 1.0)))', "cams = orb.metric(1.0)")],
       [f"{T_FF}::test_orbit_render_is_the_app_b_trajectory"]),
    _m("8 fit draws tau from the FMD config's range", "the fit ignores tau_min / tau_max",
       [(FIT, "(fmd.tau_min, fmd.tau_max))", "(0.02, 0.98))")],
       [f"{T_FF}::test_fit_draws_fmd_taus_from_the_configured_range"]),
    _m("8 default tau range [0.02, 0.98]", "tau_min default 0",
       [(FMD, "    tau_min: float = 0.02\n", "    tau_min: float = 0.0\n")],
       [f"{T_FF}::test_fmd_taus_stay_inside_the_range"]),
    _m("8 FMD cameras = App. B interpolated poses", "FMD renders from the training cameras",
       [(FIT, "fmd_cams = Camera(K=K.expand(len(R), 3, 3), R=R.to(dev), t=t.to(dev), width=W, height=H)",
         "fmd_cams = cameras")],
       [f"{T_FF}::test_fmd_cameras_are_the_app_b_interpolated_poses"]),
    # ---- issue 22: the sampler's passes (SPEC 2, 5) and the training-free sampler
    _m("5 each pass conditioned on its own cameras", "pass k gets the first cameras of the rig",
       [(SAMPLING, "m = with_rig(base, cams[list(views)])", "m = with_rig(base, cams[: len(views)])")],
       [f"{T_SAMPLER}::test_split_passes_condition_on_their_own_cameras"]),
    _m("2 RoPE slot = index within the pass", "each view at its global rig slot",
       [(SAMPLING, "        m = with_rig(base, cams[list(views)])\n",
         "        m = with_rig(base, cams[list(views)])\n"
         "        m.model_options[\"transformer_options\"][\"full4d_slots\"] = list(views)\n"),
        (PATCH, "        run = Full4DRun(", _SLOTS_IN_PATCH)],
       [f"{T_SAMPLER}::test_a_pass_is_sampled_as_the_rig_of_its_own_views"]),
    _m("TF source row never released", "source row sampled freely after the guided steps",
       [(TFREE, "            free[i] = 0.0\n", "            free[i] = 1.0\n")],
       [f"{T_TFF}::test_source_row_is_never_released"]),
    _m("TF soft-mask cell is the VAE's", "16 px cells for every VAE (the Wan2.1 VAE's are 8 px)",
       [(HOST_TFREE, ", space=vae_space(proj.shape[1]))", ")")],
       ["tests/test_training_free.py::test_node_chain_with_the_wan21_vae"]),
    _m("TF cross-view within one CFG half", "scenes built from rows j, j+B/V, ... (cond with uncond)",
       [(HOST_TFREE, "return t.reshape(B // V, V * L, n, d).transpose(1, 2)",
         "return t.reshape(V, B // V, L, n, d).transpose(0, 1).reshape(B // V, V * L, n, d).transpose(1, 2)")],
       [f"{T_TFF}::test_cross_view_scenes_stay_within_one_cfg_half"]),
    # ---- issue 22: the browser preview's quantisation
    _m("P positions rounded to u16", "positions truncated",
       [(PREVIEW, "pos = np.round(np.clip((m - lo32)", "pos = np.floor(np.clip((m - lo32)")],
       [f"{T_PREVIEW}::test_round_trip_error_within_bounds"]),
    _m("P colour / opacity rounded to u8", "colour and opacity truncated",
       [(PREVIEW, "rgba = np.round(", "rgba = np.floor(")],
       [f"{T_PREVIEW}::test_round_trip_error_within_bounds"]),
    _m("P log-scales rounded to u8", "log-scales truncated",
       [(PREVIEW, "sc = np.round(", "sc = np.floor(")],
       [f"{T_PREVIEW}::test_round_trip_error_within_bounds"]),
    _m("P quaternions rounded to i8", "quaternion components truncated toward zero",
       [(PREVIEW, "qq = np.round(qn * 127).astype(np.int8)", "qq = (qn * 127).astype(np.int8)")],
       [f"{T_PREVIEW}::test_round_trip_error_within_bounds"]),
    # ---- issue 32: the preview's cameras are the metric cameras Full4DRender4DGS renders from
    _m("P preview cameras metric (rig.metric(scale))", "the widget's cameras in the rig's scene units",
       [(PREVIEW, "        c = r.metric(scale)\n", "        c = r.cameras\n")],
       [f"{T_PREVIEW}::test_cameras_json_are_the_cameras_that_saw_the_scene"]),
    _m("P preview cameras metric (rig.metric(scale))", "the scale applied twice",
       [(PREVIEW, "        c = r.metric(scale)\n", "        c = r.metric(scale * scale)\n")],
       [f"{T_PREVIEW}::test_cameras_json_are_the_cameras_that_saw_the_scene"]),
    _m("P drag-orbit pivot = the rig's metric look-at point", "look-at point in scene units",
       [(PREVIEW, '"center": [float(v) * scale for v in rig.center]', '"center": [float(v) for v in rig.center]')],
       [f"{T_PREVIEW}::test_cameras_json_are_the_cameras_that_saw_the_scene"]),
    # ---- issue 31: the third pass
    _m("TF tokens per frame ceil(h/ph) * ceil(w/pw)", "sharded cross-view layout floors an odd latent size",
       [(HOST_TFREE, "S = -(-x.shape[3] // p[1]) * -(-x.shape[4] // p[2])", "S = (x.shape[3] // p[1]) * (x.shape[4] // p[2])")],
       [f"{T_PTOK}::test_odd_latent_sizes_shard_like_even_ones"]),
    _m("TF guided steps round(stop * steps)", "the guided step count truncated",
       [(TFREE, "    k = min(n, max(0, int(math.floor(float(stop) * n + 0.5))))", "    k = min(n, max(0, int(float(stop) * n)))")],
       [f"{T_TFF}::test_stop_fraction_rounds_the_guided_steps"]),
    _m("5 the pool carries the Tab. 4 ablation", "the workers' job has no ablation (full model)",
       [(SAMPLING, 'ablation=model.model_options["transformer_options"].get(ABLATION_KEY)), on_step)',
         "ablation=None), on_step)")],
       [_POOL_TEST]),
    _m("5 the pool carries views per pass", "the workers sample all views in one pass",
       [(SAMPLING, _POOL_JOB, "scheduler=scheduler, views_per_pass=0, include_source=include_source,\n")],
       [_POOL_TEST]),
    _m("5 the pool carries the sampler", "the workers always run Euler",
       [(SAMPLING, "shift=shift, sampler_name=sampler_name,\n", 'shift=shift, sampler_name="euler",\n')],
       [_POOL_TEST]),
    _m("6 re-calibrated focal = view 0's rig focal x DA3's ratio", "each view's own rig focal x the ratio",
       [(VDEPTH, "    K[ok, 0, 0], K[ok, 1, 1] = f[ok, 0], f[ok, 1]\n",
         "    K[ok, 0, 0], K[ok, 1, 1] = K0[ok, 0, 0] * ratio[ok, 0], K0[ok, 1, 1] * ratio[ok, 1]\n")],
       [f"{T_REC}::test_mixed_lens_rig_focal_from_view0_and_the_20_degree_limit"]),
    _m("6 re-calibration zoom guard against the view's own focal", "ratio to view 0 guarded (a tele lens refused)",
       [(VDEPTH, "    zoom = f / torch.stack([K0[:, 0, 0], K0[:, 1, 1]], -1)", "    zoom = ratio")],
       [f"{T_REC}::test_mixed_lens_rig_focal_from_view0_and_the_20_degree_limit"]),
    _m("6 re-calibration limit 20 degrees", "the turn measured in radians",
       [(VDEPTH, "turned = torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))", "turned = torch.arccos(cos.clamp(-1, 1))")],
       [f"{T_REC}::test_mixed_lens_rig_focal_from_view0_and_the_20_degree_limit"]),
    _m("6 Umeyama scale trace(D S) / sigma_x^2", "the reflection guard left out of the scale",
       [(ALIGN, "s = float(np.trace(np.diag(D) @ S) / var)", "s = float(np.trace(np.diag(D)) / var)")],
       [f"{T_ALIGN}::test_reflected_cloud_hand_worked"]),
    _m("6 Umeyama scale over sigma_x^2", "divided by the target's variance",
       [(ALIGN, "    var = (xc**2).sum() / len(x)\n", "    var = (yc**2).sum() / len(x)\n")],
       [f"{T_ALIGN}::test_matches_scipy_kabsch_on_random_clouds"]),
    _m("6 fit memory estimate in bytes", "the estimate counts floats, not bytes",
       [(MEMORY, "    return int(4 * floats)\n", "    return int(floats)\n")],
       [f"{T_FDEV}::test_the_memory_estimate_is_within_2x_of_a_measured_cpu_fit"]),
    _m("6 fit random streams on the CPU", "the generator made on the fit's device",
       [(FIT, "        gen = torch.Generator().manual_seed(cfg.seed)", "        gen = torch.Generator(device=dev).manual_seed(cfg.seed)")],
       [f"{T_FDEV}::test_random_streams_are_cpu_generators_and_resume_draws_on"]),
    _m("6 fit random state in the checkpoint", "resume re-seeds the stream",
       [(FIT, '    gen.set_state(t["rng"])\n', "    gen.manual_seed(cfg.seed)\n")],
       [f"{T_FDEV}::test_random_streams_are_cpu_generators_and_resume_draws_on"]),
    _m("C core SPLAT item keeps counts[i]", "an item keeps the batch's padding",
       [(HOST_SPLAT, 'n = int(splat.counts[index]) if getattr(splat, "counts", None) is not None else splat.positions.shape[1]',
         "n = splat.positions.shape[1]")],
       [f"{T_SPLAT}::test_taking_one_item_of_a_padded_splat_keeps_its_count"]),
    _m("C core DA3 K: x row W/w, y row H/h", "the two factors swapped",
       [(DA3CORE, "    K[:, 0] *= W / w\n    K[:, 1] *= H / h\n", "    K[:, 0] *= H / h\n    K[:, 1] *= W / w\n")],
       [f"{T_DA3CORE}::test_working_size_rescale_is_per_axis_when_the_factors_differ"]),
    _m("P PLY scale_* are log-scales", "read as linear sizes",
       [(PREVIEW, '"scales": np.exp(col("scale_0", "scale_1", "scale_2")),', '"scales": col("scale_0", "scale_1", "scale_2"),')],
       [f"{T_PREVIEW}::test_ply_scales_are_log_scales_in_the_preview"]),
    _m("IO a full disk is a clear error", "the OS error passes through unexplained",
       [(IO, "        if code in NO_ROOM:\n", "        if False:\n")],
       list(_DISK_TESTS)),
    _m("IO worker errors name files as the user picked them", "a worker's text passed on with absolute paths",
       [("host/pool_worker.py", "could not start: {_client(info)}", "could not start: {info}")],
       ["tests/reliability/test_bad_inputs.py::test_bad_input_fails_cleanly[pool workers given a model of another size]",
        "tests/reliability/test_client_errors.py::test_no_server_paths_in_client_errors"]),
    _m("IO a full disk leaves no export behind", "the staging folder kept",
       [(EXPORT, "    except OutOfSpace as e:\n        shutil.rmtree(staging, ignore_errors=True)\n",
         "    except OutOfSpace as e:\n")],
       [_DISK_TESTS[0]]),
]


def _copy_package(dst: Path) -> Path:
    out = dst / PKG
    shutil.copytree(ROOT / PKG, out, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return out


def _apply(pkg: Path, m: Mutation) -> None:
    for rel, old, new in m.edits:
        path = pkg / rel
        text = path.read_text()
        n = text.count(old)
        if n != 1:
            raise LookupError(f"{rel}: the text to break occurs {n} times (expected once): {old.strip()[:70]!r}")
        path.write_text(text.replace(old, new))


def _pytest(copy_root: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(copy_root)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    cmd = [sys.executable, str(ROOT / "scripts" / "run_tests.py"), *tests, "-x", "-q", "-p", "no:cacheprovider"]
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    return r.returncode, (r.stdout + r.stderr)


def _check_shadowing(copy_root: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(copy_root))
    out = subprocess.run([sys.executable, "-c", f"import {PKG}; print({PKG}.__file__)"], cwd=ROOT / "tests", env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    if not out.startswith(str(copy_root)):
        raise RuntimeError(f"the copy does not shadow the installed package: {PKG} imports from {out}")


def _table(rows: list[tuple[str, ...]]) -> str:
    head = ("rule", "break", "test", "caught")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def _short(test: str) -> str:
    return test.replace("tests/", "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="run only the breaks whose rule starts with this (e.g. 2, 5, '8 z0')")
    p.add_argument("--grep", default="", help="run only the breaks whose rule, break or test matches this regex")
    p.add_argument("--list", action="store_true", help="print the breaks and their tests, run nothing")
    p.add_argument("--timeout", type=float, default=900, help="seconds per pytest run")
    a = p.parse_args(argv)
    pattern = re.compile(a.grep)
    chosen = [m for m in MUTATIONS if m.rule.startswith(a.only)
              and pattern.search(" | ".join((m.rule, m.brk, *m.tests)))]
    if not chosen:
        p.error(f"--only {a.only!r} --grep {a.grep!r} match no break")
    if a.list:
        print(_table([(m.rule, m.brk, ", ".join(map(_short, m.tests)), "-") for m in chosen]))
        return 0

    with tempfile.TemporaryDirectory(prefix="full4d-mut-") as tmp:
        base = Path(tmp) / "baseline"
        _copy_package(base)
        _check_shadowing(base)
        tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        t0 = time.perf_counter()
        rc, log = _pytest(base, tests, a.timeout)
        print(f"baseline: {len(tests)} tests on the unmodified code, exit {rc} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        if rc != 0:
            print(log[-4000:])
            print("baseline failed: fix the tests before reading the mutation table")
            return 2
        rows, missed, stale = [], 0, 0
        for i, m in enumerate(chosen):
            work = Path(tmp) / f"m{i}"
            pkg = _copy_package(work)
            try:
                _apply(pkg, m)
            except LookupError as e:
                rows.append((m.rule, m.brk, ", ".join(map(_short, m.tests)), f"STALE ({e})"))
                stale += 1
                continue
            t0 = time.perf_counter()
            rc, log = _pytest(work, m.tests, a.timeout)
            caught = "yes" if rc == 1 else ("NO" if rc == 0 else f"NO (pytest exit {rc})")
            missed += caught != "yes"
            rows.append((m.rule, m.brk, ", ".join(map(_short, m.tests)), caught))
            print(f"[{i + 1}/{len(chosen)}] {m.rule}: {caught} ({time.perf_counter() - t0:.0f} s)", flush=True)
            if rc not in (0, 1):
                print(log[-2000:])
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(_table(rows))
    print(f"\n{len(rows) - missed - stale} of {len(rows)} breaks caught"
          + (f"; {missed} NOT caught" if missed else "") + (f"; {stale} no longer apply" if stale else ""))
    return 2 if stale else (1 if missed else 0)


if __name__ == "__main__":
    sys.exit(main())
