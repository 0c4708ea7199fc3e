"""The part of the worker pool both launchers share (``pool.py``: ``torch.multiprocessing``; ``pool_ray.py``:
Ray actors): the worker body ``serve`` and the server side ``BasePool``. ``pool.py``'s docstring describes the
behaviour (progress, interrupt, failures, ``FAULT_ENV``, reuse). ``spec`` is a ``pool.PoolSpec`` throughout
(not imported here: ``pool`` picks the launcher, so importing it would close a circle with ``pool_ray``).
"""

from __future__ import annotations

import os
import queue
import socket
import time

import torch

__all__ = ["BasePool", "serve", "WorkerDied", "FAULT_ENV", "TICK_S"]


TICK_S = 0.2
PARENT_POLL_S = 1.0  # idle workers check this often that the server still runs
ERROR_GRACE_S = 2.0  # how long the other ranks get to report after one rank raised before the first step
DEAD_GRACE_S = 1.0  # after a rank raised mid-sample: how long a dead worker (which it may have met) is looked for
FAULT_ENV = "FULL4D_TEST_FAULT"  # tests only (module docstring)


class WorkerDied(RuntimeError):
    """A pool worker exited while the server waited for it."""


class _Stop(Exception):
    pass


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _client(text: str) -> str:
    """A worker's error text with the server's folders named as the user knows them (``paths.client_message``:
    ``models/full4d/x.safetensors``, not the absolute path the worker was given). Imported here, on the server:
    a worker imports the host only inside ``serve``."""
    from .paths import client_message

    return client_message(text)


def _fault_steps(rank: int) -> int | None:
    """The STEPS of ``FAULT_ENV`` when it names this rank (tests only), else None."""
    r, _, steps = os.environ.get(FAULT_ENV, "").partition(":")
    return int(steps) if r.strip() == str(rank) and steps.strip().isdigit() else None


def serve(spec, rank: int, device: str, init_method: str, jobs, results, stop,
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


class BasePool:
    """``spec.world`` live workers (module docstring): the server side shared by the launchers, which supply
    ``_launch``, ``_get``, ``_dead``, ``_put``, ``_set_stop``, ``_who``, ``alive`` and ``shutdown``."""

    def __init__(self, spec, start_timeout_s: float = 600.0):
        self.spec = spec
        self._tick = None
        self._launch()
        ready = 0
        deadline = time.monotonic() + start_timeout_s
        while ready < spec.world:
            kind, rank, info = self._next(deadline, "start")
            if kind == "error":
                self.shutdown(kill=True)
                raise RuntimeError(f"Full4DParallel: worker {rank} could not start: {_client(info)}")
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
                        failure, t_fail = f"worker {a} ({self._who(a)}) failed: {_client(b)}", time.monotonic()
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
