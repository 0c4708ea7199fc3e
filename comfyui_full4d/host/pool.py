"""Sharded sampling from inside a running ComfyUI: a pool of worker processes.

``get_pool(spec)`` starts (or reuses) ``spec.world`` workers: processes of this machine
(``torch.multiprocessing``, spawn) or, when ``spec.ray_address`` is set, Ray actors (``pool_ray.py``, any
machine of a Ray cluster). Both run the same body, ``serve``: it imports the same host as the server
(``boot.import_host``), joins a process group (gloo on CPU, NCCL on CUDA; rendezvous on a free loopback
port, or on rank 0's node for Ray), loads ``spec.model`` / ``spec.adapter`` through the host's own
loaders (``comfy.sd.load_diffusion_model``, ``patch.make_adapter``), builds the ``Mesh`` and waits for
jobs. ``WorkerPool.sample(job, on_step)`` hands every rank the same ``sample_full4d`` arguments and
returns rank 0's result.

- Progress: rank 0 reports each step; the server side calls ``on_step`` (the host's progress bar and
  interrupt check) for it, and every 0.2 s while waiting.
- Interrupt: when ``on_step`` raises (the user pressed cancel) the pool sets a shared flag; at the next
  step rank 0 broadcasts it to all ranks (a collective, so every rank stops at the same step and no rank
  is left inside an all-to-all) and they drop the job. The exception is re-raised once all have stopped.
- A worker that dies (killed, out of memory) is seen within 0.2 s: the others are killed (they may hang
  in a collective), the pool is dropped and ``RuntimeError`` says which rank died; the next prompt starts
  a new pool. A rank that raises reports its error. After a step (every rank passed the step's broadcast,
  so the others now wait for it in a collective) the others are killed at once; before the first step
  (bad input: all ranks raise alike) they get ``ERROR_GRACE_S`` to report theirs and the pool stays up,
  or is killed when they do not.
- ``FAULT_ENV`` (tests only): a worker whose environment has ``FULL4D_TEST_FAULT=RANK:STEPS`` raises after
  the first step of every job of exactly ``STEPS`` steps when it is rank ``RANK``.
- Reuse: the pool stays up between prompts for the same spec; another spec replaces it; ``shutdown_all``
  runs at interpreter exit, and idle workers exit by themselves within ``PARENT_POLL_S`` when the server
  process is gone (killed without its exit handlers).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["PoolSpec", "BasePool", "WorkerPool", "serve", "get_pool", "shutdown_all", "WorkerDied", "parse_devices",
           "with_pool"]

from .pool_worker import FAULT_ENV, BasePool, WorkerDied, _free_port, serve  # noqa: F401 (FAULT_ENV, WorkerDied: API)


@dataclass(frozen=True)
class PoolSpec:
    """What the workers load and how they split. model / adapter: files (adapter None = zero-init);
    layout "CxU"; devices: one per rank ("cpu", "cuda:i", or for Ray "gpu": one GPU Ray picks); dtype: the
    model's weight dtype name or None; ray_address: "" = processes of this machine, "local" or a Ray address
    = Ray actors (pool_ray.py)."""

    comfyui: str
    model: str
    adapter: str | None
    layout: str
    devices: tuple[str, ...]
    dtype: str | None = None
    ray_address: str = ""

    @property
    def world(self) -> int:
        return len(self.devices)

    def sample(self, job: dict, on_step=None) -> torch.Tensor:
        """``sample_full4d(**job)`` in this spec's live pool (``get_pool``)."""
        return get_pool(self).sample(job, on_step)


def parse_devices(text: str, ray: bool = False) -> tuple[str, ...]:
    """``"cpu:N"`` (N CPU workers) or CUDA indices ``"0,1,2,3"``; "" / "none" = no workers (one process).
    ray: the workers are Ray actors placed by Ray: ``"cpu:N"`` or ``"gpu:N"`` (N actors, one GPU each)."""
    t = text.strip().lower().replace(" ", "")
    if t in ("", "none"):
        return ()
    kinds = ("cpu", "gpu") if ray else ("cpu",)
    kind = next((k for k in kinds if t == k or t.startswith(k + ":")), None)
    if kind is not None:
        n = t[len(kind) + 1:] if ":" in t else "1"
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"devices: {text!r}: write {kind}:N with N >= 1 worker processes")
        return (kind,) * int(n)
    if ray:
        raise ValueError(f"devices: {text!r}: with a Ray address write gpu:N (N actors, Ray picks the GPUs of the "
                         f"cluster) or cpu:N")
    try:
        idx = [int(i) for i in t.split(",")]
    except ValueError:
        raise ValueError(f"devices: {text!r} is neither cpu:N nor CUDA indices like 0,1,2,3 (gpu:N needs a Ray "
                         f"address)") from None
    have = torch.cuda.device_count()
    bad = [i for i in idx if not 0 <= i < have] + ([idx] if len(set(idx)) != len(idx) else [])
    if bad:
        raise ValueError(f"devices: {text!r} names CUDA devices {bad} but this machine has {have}; "
                         f"use indices 0..{have - 1} once each, or cpu:N")
    return tuple(f"cuda:{i}" for i in idx)


def with_pool(model, unet_path: str, devices: str, layout: str = "auto", dtype: str | None = None,
              ray_address: str = ""):
    """Clone of a Full-4D patched ModelPatcher that Full4DSampler samples in a worker pool; the model itself when
    ``devices`` names fewer than two (today's one-process path). unet_path: the diffusion model file it was loaded
    from (the workers load it again with the host's loader, and the adapter file ``load_full4d`` recorded).
    ray_address: "" = worker processes of this machine; "local" or a cluster's address = Ray actors."""
    import comfy.model_management

    from ..diffusion.parallel import Layout
    from .patch import ADAPTER_FILE_KEY
    from .sampling import POOL_KEY

    ray_address = ray_address.strip()
    devs = parse_devices(devices, ray=bool(ray_address))
    if len(devs) < 2:
        return model
    if ADAPTER_FILE_KEY not in model.model_options:
        raise ValueError("model: connect the MODEL from Full4DAdapterLoader (the workers load the same adapter file)")
    lay = Layout.parse(layout, len(devs))
    if lay.world != len(devs):
        raise ValueError(f"layout: {layout!r} needs {lay.world} workers, devices {devices!r} gives {len(devs)}")
    comfyui = str(Path(comfy.model_management.__file__).resolve().parents[1])  # the server's own host
    spec = PoolSpec(comfyui=comfyui, model=str(unet_path), adapter=model.model_options[ADAPTER_FILE_KEY],
                    layout=lay.name, devices=devs, dtype=dtype, ray_address=ray_address)
    m = model.clone()
    m.model_options[POOL_KEY] = spec
    return m


_MAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def _main_script_hidden():
    """While workers start, ``spawn`` does not re-run the server's main module (ComfyUI's ``main.py``) in them.

    A spawned child re-runs the parent's ``__main__`` before its target: by module name when it has a
    ``__spec__`` (``python -m``), else from ``__main__.__file__``; with neither it runs nothing. A worker needs
    none of main.py (``serve`` imports the host itself), and re-running it runs every custom node's prestartup
    script again and, on 0.33, fails: ComfyUI then has ``<host>/comfy`` first on ``sys.path`` (for old custom
    nodes), so main.py's ``import utils.install_util`` finds ``comfy/utils.py``."""
    main = sys.modules.get("__main__")
    with _MAIN_LOCK:
        saved = {k: getattr(main, k) for k in ("__spec__", "__file__") if hasattr(main, k)}
        try:
            if main is not None:
                main.__spec__ = None
                if "__file__" in saved:
                    del main.__file__
            yield
        finally:
            for k, v in saved.items():
                setattr(main, k, v)


def _worker(spec: PoolSpec, rank: int, port: int, jobs, results, stop) -> None:
    parent = os.getppid()
    serve(spec, rank, spec.devices[rank], f"tcp://127.0.0.1:{port}", jobs, results, stop,
          server_alive=lambda: os.getppid() == parent)


class WorkerPool(BasePool):
    """The workers as ``torch.multiprocessing`` (spawn) processes of this machine."""

    def _launch(self) -> None:
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._results = ctx.Queue()
        self._stop = ctx.Event()
        self._jobs = [ctx.Queue() for _ in range(self.spec.world)]
        port = _free_port()
        self.procs = [ctx.Process(target=_worker, args=(self.spec, r, port, self._jobs[r], self._results, self._stop),
                                  daemon=True, name=f"full4d-worker-{r}") for r in range(self.spec.world)]
        with _main_script_hidden():
            for p in self.procs:
                p.start()

    @property
    def alive(self) -> bool:
        return all(p.is_alive() for p in self.procs)

    def _get(self, timeout: float):
        return self._results.get(timeout=timeout)

    def _dead(self):
        dead = [(r, p) for r, p in enumerate(self.procs) if not p.is_alive()]
        return None if not dead else (dead[0][0], f"exited with code {dead[0][1].exitcode}")

    def _who(self, rank: int) -> str:
        return f"pid {self.procs[rank].pid}"

    def _put(self, rank: int, job) -> None:
        self._jobs[rank].put(job)

    def _set_stop(self, on: bool) -> None:
        self._stop.set() if on else self._stop.clear()

    def shutdown(self, kill: bool = False) -> None:
        """Ask idle workers to exit (kill: at once; they may wait in a collective), then kill what remains."""
        for q, p in zip(self._jobs, self.procs):
            if p.is_alive() and not kill:
                try:
                    q.put_nowait(None)
                except Exception:
                    pass
        for p in self.procs:
            if not kill:
                p.join(timeout=2.0)
            if p.is_alive():
                p.kill()
                p.join(timeout=2.0)


_POOL: BasePool | None = None


def get_pool(spec: PoolSpec) -> BasePool:
    """The live pool for ``spec`` (started on first use, replaced when the spec changes or a worker died)."""
    global _POOL
    if _POOL is not None and (_POOL.spec != spec or not _POOL.alive):
        _POOL.shutdown()
        _POOL = None
    if _POOL is None:
        if spec.ray_address:
            from .pool_ray import RayPool

            _POOL = RayPool(spec)
        else:
            _POOL = WorkerPool(spec)
    return _POOL


@atexit.register
def shutdown_all() -> None:
    global _POOL
    if _POOL is not None:
        _POOL.shutdown()
        _POOL = None
