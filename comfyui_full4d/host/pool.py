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
import os
import queue
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["PoolSpec", "BasePool", "WorkerPool", "serve", "get_pool", "shutdown_all", "WorkerDied", "parse_devices",
           "with_pool"]

TICK_S = 0.2
PARENT_POLL_S = 1.0  # idle workers check this often that the server still runs
ERROR_GRACE_S = 2.0  # how long the other ranks get to report after one rank raised before the first step
DEAD_GRACE_S = 1.0  # after a rank raised mid-sample: how long a dead worker (which it may have met) is looked for
FAULT_ENV = "FULL4D_TEST_FAULT"  # tests only (module docstring)


class WorkerDied(RuntimeError):
    """A pool worker exited while the server waited for it."""


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


class _Stop(Exception):
    pass


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _fault_steps(rank: int) -> int | None:
    """The STEPS of ``FAULT_ENV`` when it names this rank (tests only), else None."""
    r, _, steps = os.environ.get(FAULT_ENV, "").partition(":")
    return int(steps) if r.strip() == str(rank) and steps.strip().isdigit() else None


def serve(spec: PoolSpec, rank: int, device: str, init_method: str, jobs, results, stop,
          server_alive=lambda: True) -> None:
    """The body of every worker (a spawned process or a Ray actor): join the group, load, run jobs until None.

    device: "cpu" or "cuda:i"; init_method: the group's rendezvous (``tcp://host:port``); jobs: ``.get(timeout=)``
    raising ``queue.Empty``; results: ``.put(message)``; stop: ``.is_set()`` (read on rank 0 only);
    server_alive(): False when the server process is gone (the worker then exits while idle)."""
    cpu = device == "cpu"
    if cpu:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // spec.world))
    else:
        os.environ["LOCAL_RANK"] = device.split(":")[1]
    fault = _fault_steps(rank)
    try:
        from .boot import import_host

        import_host(spec.comfyui, cpu=cpu)
        import comfy.sd
        import torch.distributed as dist

        from ..diffusion.parallel import Layout, Mesh
        from .parallel import with_mesh
        from .patch import attach_adapter, make_adapter, with_ablation
        from .sampling import sample_full4d

        dist.init_process_group("gloo" if cpu else "nccl", init_method=init_method, rank=rank, world_size=spec.world)
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
            if not server_alive():  # the server is gone (killed: its atexit never ran)
                break
            continue
        if job is None:
            break

        passed = [0]  # steps whose broadcast this rank took part in: after one, every rank is past validation

        def on_step(done: int, total: int) -> None:
            flag = torch.tensor([1 if stop.is_set() else 0])
            dist.broadcast(flag, src=0, group=control)
            passed[0] += 1
            if flag.item():
                raise _Stop()
            if rank == 0:
                results.put(("step", done, total))
            if fault == total and done == 1:
                raise RuntimeError(f"{FAULT_ENV}: rank {rank} fails after step 1 of {total} (test fault)")

        try:
            ab = job.pop("ablation", None)
            out = sample_full4d(model if ab is None else with_ablation(model, ab), **job, on_step=on_step)
            results.put(("done", rank, out if rank == 0 else None))
        except _Stop:
            results.put(("stopped", rank, None))
        except Exception as e:  # "failed": mid-sample, the other ranks wait for this one in a collective
            results.put(("failed" if passed[0] else "error", rank, f"{type(e).__name__}: {e}"))
    dist.destroy_process_group()


def _worker(spec: PoolSpec, rank: int, port: int, jobs, results, stop) -> None:
    parent = os.getppid()
    serve(spec, rank, spec.devices[rank], f"tcp://127.0.0.1:{port}", jobs, results, stop,
          server_alive=lambda: os.getppid() == parent)


class BasePool:
    """``spec.world`` live workers (module docstring): the server side shared by the launchers, which supply
    ``_launch``, ``_get``, ``_dead``, ``_put``, ``_set_stop``, ``_who``, ``alive`` and ``shutdown``."""

    def __init__(self, spec: PoolSpec, start_timeout_s: float = 600.0):
        self.spec = spec
        self._tick = None
        self._launch()
        ready = 0
        deadline = time.monotonic() + start_timeout_s
        while ready < spec.world:
            kind, rank, info = self._next(deadline, "start")
            if kind == "error":
                self.shutdown(kill=True)
                raise RuntimeError(f"Full4DParallel: worker {rank} could not start: {info}")
            ready += kind == "ready"

    def _next(self, deadline: float, what: str):
        """The next worker message; WorkerDied / TimeoutError (the pool is then shut down)."""
        while True:
            try:
                return self._get(TICK_S)
            except queue.Empty:
                pass
            dead = self._dead()
            if dead is not None:
                self.shutdown(kill=True)
                raise WorkerDied(f"Full4DParallel: worker {dead[0]} ({self._who(dead[0])}) {dead[1]} during {what}; "
                                 f"the other workers were stopped, the next prompt starts new ones")
            if time.monotonic() > deadline:
                self.shutdown(kill=True)
                raise TimeoutError(f"Full4DParallel: the workers did not finish {what} in time; they were stopped")
            if self._tick is not None:
                self._tick()

    def sample(self, job: dict, on_step=None, timeout_s: float = 24 * 3600.0) -> torch.Tensor:
        """``sample_full4d(**job)`` on every rank; returns rank 0's result. on_step(done, total) may raise to
        interrupt (the workers stop at their next step, then the exception is re-raised here)."""
        self._set_stop(False)
        for r in range(self.spec.world):
            self._put(r, job)
        state = {"done": 0, "total": 1, "error": None}

        def tick() -> None:
            if on_step is not None and state["error"] is None:
                try:
                    on_step(state["done"], state["total"])
                except BaseException as e:  # the host's interrupt
                    state["error"] = e
                    self._set_stop(True)

        self._tick = tick
        finished, result, failure, t_fail, grace, broken = 0, None, None, 0.0, 0.0, False
        deadline = time.monotonic() + timeout_s
        stopped = "; the other workers were stopped, the next prompt starts new ones"
        try:
            while finished < self.spec.world:
                try:  # after a failure the others get a grace to report theirs, or to be seen dead (the cause)
                    kind, a, b = self._next(deadline if failure is None else min(deadline, t_fail + grace), "sampling")
                except TimeoutError:
                    if failure is None:
                        raise
                    raise RuntimeError(f"Full4DParallel: {failure}{stopped}") from None
                if kind == "step":
                    state["done"], state["total"] = a, b
                    tick()
                    continue
                finished += 1
                if kind == "done" and a == 0:
                    result = b
                elif kind in ("error", "failed"):
                    broken = broken or kind == "failed"  # mid-sample: the others may wait for it in a collective
                    if failure is None:
                        failure, t_fail = f"worker {a} ({self._who(a)}) failed: {b}", time.monotonic()
                        grace = ERROR_GRACE_S if kind == "error" else DEAD_GRACE_S
        finally:
            self._tick = None
        if broken:
            self.shutdown(kill=True)
            raise RuntimeError(f"Full4DParallel: {failure}{stopped}")
        if state["error"] is not None:
            raise state["error"]
        if failure is not None:
            raise RuntimeError(f"Full4DParallel: {failure}")
        return result


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
