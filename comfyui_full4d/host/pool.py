"""Sharded sampling from inside a running ComfyUI on one machine: a pool of worker processes.

``get_pool(spec)`` starts (or reuses) ``spec.world`` processes (``torch.multiprocessing``, spawn). Each
imports the same host as the server (``boot.import_host``), joins a process group (gloo on CPU, NCCL on
CUDA, rendezvous on a free loopback port), loads ``spec.model`` / ``spec.adapter`` through the host's own
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
  a new pool. A rank that raises (bad input: all ranks raise alike) reports its error; when the others
  have not finished ``ERROR_GRACE_S`` later (stuck in a collective) the pool is shut down too.
- Reuse: the pool stays up between prompts for the same spec; another spec replaces it; ``shutdown_all``
  runs at interpreter exit, and idle workers exit by themselves within ``PARENT_POLL_S`` when the server
  process is gone (killed without its exit handlers).
"""

from __future__ import annotations

import atexit
import os
import queue
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["PoolSpec", "WorkerPool", "get_pool", "shutdown_all", "WorkerDied", "parse_devices", "with_pool"]

TICK_S = 0.2
PARENT_POLL_S = 1.0  # idle workers check this often that the server still runs
ERROR_GRACE_S = 10.0  # how long the other ranks get to finish after one rank raised


class WorkerDied(RuntimeError):
    """A pool worker exited while the server waited for it."""


@dataclass(frozen=True)
class PoolSpec:
    """What the workers load and how they split. model / adapter: files (adapter None = zero-init);
    layout "CxU"; devices: one per rank ("cpu" or "cuda:i"); dtype: the model's weight dtype name or None."""

    comfyui: str
    model: str
    adapter: str | None
    layout: str
    devices: tuple[str, ...]
    dtype: str | None = None

    @property
    def world(self) -> int:
        return len(self.devices)

    def sample(self, job: dict, on_step=None) -> torch.Tensor:
        """``sample_full4d(**job)`` in this spec's live pool (``get_pool``)."""
        return get_pool(self).sample(job, on_step)


def parse_devices(text: str) -> tuple[str, ...]:
    """``"cpu:N"`` (N CPU workers) or CUDA indices ``"0,1,2,3"``; "" / "none" = no workers (one process)."""
    t = text.strip().lower().replace(" ", "")
    if t in ("", "none"):
        return ()
    if t.startswith("cpu"):
        n = t[4:] if t.startswith("cpu:") else "1"
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"devices: {text!r}: write cpu:N with N >= 1 worker processes")
        return ("cpu",) * int(n)
    try:
        idx = [int(i) for i in t.split(",")]
    except ValueError:
        raise ValueError(f"devices: {text!r} is neither cpu:N nor CUDA indices like 0,1,2,3") from None
    have = torch.cuda.device_count()
    bad = [i for i in idx if not 0 <= i < have] + ([idx] if len(set(idx)) != len(idx) else [])
    if bad:
        raise ValueError(f"devices: {text!r} names CUDA devices {bad} but this machine has {have}; "
                         f"use indices 0..{have - 1} once each, or cpu:N")
    return tuple(f"cuda:{i}" for i in idx)


def with_pool(model, unet_path: str, devices: str, layout: str = "auto", dtype: str | None = None):
    """Clone of a Full-4D patched ModelPatcher that Full4DSampler samples in a worker pool; the model itself when
    ``devices`` names fewer than two (today's one-process path). unet_path: the diffusion model file it was loaded
    from (the workers load it again with the host's loader, and the adapter file ``load_full4d`` recorded)."""
    import comfy.model_management

    from ..diffusion.parallel import Layout
    from .patch import ADAPTER_FILE_KEY
    from .sampling import POOL_KEY

    devs = parse_devices(devices)
    if len(devs) < 2:
        return model
    if ADAPTER_FILE_KEY not in model.model_options:
        raise ValueError("model: connect the MODEL from Full4DAdapterLoader (the workers load the same adapter file)")
    lay = Layout.parse(layout, len(devs))
    if lay.world != len(devs):
        raise ValueError(f"layout: {layout!r} needs {lay.world} workers, devices {devices!r} gives {len(devs)}")
    comfyui = str(Path(comfy.model_management.__file__).resolve().parents[1])  # the server's own host
    spec = PoolSpec(comfyui=comfyui, model=str(unet_path), adapter=model.model_options[ADAPTER_FILE_KEY],
                    layout=lay.name, devices=devs, dtype=dtype)
    m = model.clone()
    m.model_options[POOL_KEY] = spec
    return m


class _Stop(Exception):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(spec: PoolSpec, rank: int, port: int, jobs, results, stop) -> None:
    parent = os.getppid()
    dev = spec.devices[rank]
    cpu = dev == "cpu"
    if cpu:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // spec.world))
    else:
        os.environ["LOCAL_RANK"] = dev.split(":")[1]
    try:
        from .boot import import_host

        import_host(spec.comfyui, cpu=cpu)
        import comfy.sd
        import torch.distributed as dist

        from ..diffusion.parallel import Layout, Mesh
        from .parallel import with_mesh
        from .patch import attach_adapter, make_adapter, with_ablation
        from .sampling import sample_full4d

        dist.init_process_group("gloo" if cpu else "nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=spec.world)
        control = dist.new_group(backend="gloo")  # the interrupt flag, whatever the data backend
        opts = {} if spec.dtype is None else {"dtype": getattr(torch, spec.dtype)}
        base = comfy.sd.load_diffusion_model(spec.model, model_options=opts)
        model = with_mesh(attach_adapter(base, make_adapter(base, spec.adapter)), Mesh.create(Layout.parse(spec.layout)))
    except Exception as e:
        results.put(("error", rank, f"{type(e).__name__}: {e}"))
        return
    results.put(("ready", rank, None))
    while True:
        try:
            job = jobs.get(timeout=PARENT_POLL_S)
        except queue.Empty:
            if os.getppid() != parent:  # the server is gone (killed: its atexit never ran)
                break
            continue
        if job is None:
            break

        def on_step(done: int, total: int) -> None:
            flag = torch.tensor([1 if stop.is_set() else 0])
            dist.broadcast(flag, src=0, group=control)
            if flag.item():
                raise _Stop()
            if rank == 0:
                results.put(("step", done, total))

        try:
            ab = job.pop("ablation", None)
            out = sample_full4d(model if ab is None else with_ablation(model, ab), **job, on_step=on_step)
            results.put(("done", rank, out if rank == 0 else None))
        except _Stop:
            results.put(("stopped", rank, None))
        except Exception as e:
            results.put(("error", rank, f"{type(e).__name__}: {e}"))
    dist.destroy_process_group()


class WorkerPool:
    """``spec.world`` live workers (module docstring). Use ``get_pool``."""

    def __init__(self, spec: PoolSpec, start_timeout_s: float = 600.0):
        import torch.multiprocessing as mp

        self.spec = spec
        self._tick = None
        ctx = mp.get_context("spawn")
        self._results = ctx.Queue()
        self._stop = ctx.Event()
        self._jobs = [ctx.Queue() for _ in range(spec.world)]
        port = _free_port()
        self.procs = [ctx.Process(target=_worker, args=(spec, r, port, self._jobs[r], self._results, self._stop),
                                  daemon=True, name=f"full4d-worker-{r}") for r in range(spec.world)]
        for p in self.procs:
            p.start()
        ready = 0
        deadline = time.monotonic() + start_timeout_s
        while ready < spec.world:
            kind, rank, info = self._next(deadline, "start")
            if kind == "error":
                self.shutdown()
                raise RuntimeError(f"Full4DParallel: worker {rank} could not start: {info}")
            ready += kind == "ready"

    @property
    def alive(self) -> bool:
        return all(p.is_alive() for p in self.procs)

    def _next(self, deadline: float, what: str):
        """The next worker message; WorkerDied / TimeoutError (the pool is then shut down)."""
        while True:
            try:
                return self._results.get(timeout=TICK_S)
            except queue.Empty:
                pass
            dead = [(r, p) for r, p in enumerate(self.procs) if not p.is_alive()]
            if dead:
                self.shutdown()
                r, p = dead[0]
                raise WorkerDied(f"Full4DParallel: worker {r} (pid {p.pid}) exited with code {p.exitcode} during "
                                 f"{what}; the other workers were stopped, the next prompt starts new ones")
            if time.monotonic() > deadline:
                self.shutdown()
                raise TimeoutError(f"Full4DParallel: the workers did not finish {what} in time; they were stopped")
            if self._tick is not None:
                self._tick()

    def sample(self, job: dict, on_step=None, timeout_s: float = 24 * 3600.0) -> torch.Tensor:
        """``sample_full4d(**job)`` on every rank; returns rank 0's result. on_step(done, total) may raise to
        interrupt (the workers stop at their next step, then the exception is re-raised here)."""
        self._stop.clear()
        for q in self._jobs:
            q.put(job)
        state = {"done": 0, "total": 1, "error": None}

        def tick() -> None:
            if on_step is not None and state["error"] is None:
                try:
                    on_step(state["done"], state["total"])
                except BaseException as e:  # the host's interrupt
                    state["error"] = e
                    self._stop.set()

        self._tick = tick
        finished, result, failure, t_fail = 0, None, None, 0.0
        deadline = time.monotonic() + timeout_s
        try:
            while finished < self.spec.world:
                try:  # after one rank failed, the others may wait in a collective for it: give them ERROR_GRACE_S
                    kind, a, b = self._next(deadline if failure is None else min(deadline, t_fail + ERROR_GRACE_S),
                                            "sampling")
                except TimeoutError:
                    if failure is None:
                        raise
                    raise RuntimeError(f"Full4DParallel: {failure}; the other workers were stopped") from None
                if kind == "step":
                    state["done"], state["total"] = a, b
                    tick()
                    continue
                finished += 1
                if kind == "done" and a == 0:
                    result = b
                elif kind == "error" and failure is None:
                    failure, t_fail = f"worker {a}: {b}", time.monotonic()
        finally:
            self._tick = None
        if state["error"] is not None:
            raise state["error"]
        if failure is not None:
            raise RuntimeError(f"Full4DParallel: {failure}")
        return result

    def shutdown(self) -> None:
        for q, p in zip(self._jobs, self.procs):
            if p.is_alive():
                try:
                    q.put_nowait(None)
                except Exception:
                    pass
        for p in self.procs:
            p.join(timeout=2.0)
            if p.is_alive():
                p.kill()
                p.join(timeout=2.0)


_POOL: WorkerPool | None = None


def get_pool(spec: PoolSpec) -> WorkerPool:
    """The live pool for ``spec`` (started on first use, replaced when the spec changes or a worker died)."""
    global _POOL
    if _POOL is not None and (_POOL.spec != spec or not _POOL.alive):
        _POOL.shutdown()
        _POOL = None
    if _POOL is None:
        _POOL = WorkerPool(spec)
    return _POOL


@atexit.register
def shutdown_all() -> None:
    global _POOL
    if _POOL is not None:
        _POOL.shutdown()
        _POOL = None
