"""The worker pool on Ray: the same workers as ``pool.WorkerPool``, started and supervised as Ray actors.

``PoolSpec.ray_address`` "local" starts a private one-machine Ray in the server process (on 127.0.0.1, no
dashboard, usage stats off unless the environment says otherwise); any other value is passed to
``ray.init(address=...)`` (``auto``, ``host:6379``, ``ray://host:10001``): the actors then run on whatever
machines of that cluster have the resources. When Ray is already initialised in the server (raylight does
that) its cluster is used as it is. ``devices`` is ``cpu:N`` or ``gpu:N``: N actors of one CPU or one GPU
each (Ray sets ``CUDA_VISIBLE_DEVICES``, so every actor uses ``cuda:0``).

Each actor runs ``pool.serve``, the body of the multiprocessing workers, in one of its threads; the
others take jobs (``put``), the interrupt flag (``set_stop``) and hand back messages (``poll``). Ranks
are numbered node-major (the actors of one machine get consecutive ranks, so a Ulysses group stays on
one machine when the GPUs per machine are a multiple of U) and rank 0's node and a free port there are
the ``torch.distributed`` rendezvous. Every machine needs the same ComfyUI folder, pack and model files
at the paths the server uses. Ray kills the actors when the server process ends.

Ray is optional: imported here only, a clear error when it is missing.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from pathlib import Path

from .pool_worker import FAULT_ENV, TICK_S, BasePool, _free_port, serve

__all__ = ["RayPool", "import_ray"]

LOCAL = "local"


def import_ray(address: str):
    """The ``ray`` module, initialised for ``address`` (module docstring)."""
    if address == LOCAL and "ray" not in sys.modules:  # read by Ray at import: keep the private Ray on loopback
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise RuntimeError(f"ray_address: {address!r} needs Ray, which is not installed in this Python "
                           f"({sys.executable}): pip install ray, or leave ray_address empty for worker "
                           f"processes of this machine") from None
    if not ray.is_initialized():
        if address == LOCAL:
            if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":
                # Ray reads this once, at its import: when another package imported Ray first (seen in the full
                # test suite) the private Ray would take the machine's address; apply it now
                from ray._private import ray_constants

                ray_constants.ENABLE_RAY_CLUSTER = False
            ray.init(include_dashboard=False, configure_logging=False)
        else:
            ray.init(address=address)
    return ray


class _Actor:
    """One worker: ``serve`` in a thread of a threaded Ray actor (``max_concurrency``), fed through local queues."""

    def __init__(self, spec):  # spec: a pool.PoolSpec
        self.spec = spec
        self.jobs, self.results, self.stop = queue.Queue(), queue.Queue(), threading.Event()

    def where(self) -> tuple[str, str, int]:
        import ray

        ctx = ray.get_runtime_context()
        return ctx.get_node_id(), ray.util.get_node_ip_address(), os.getpid()

    def rendezvous(self) -> str:
        import ray

        return f"tcp://{ray.util.get_node_ip_address()}:{_free_port('')}"

    def serve(self, rank: int, init_method: str) -> None:
        device = "cpu" if self.spec.devices[rank] == "cpu" else "cuda:0"
        serve(self.spec, rank, device, init_method, self.jobs, self.results, self.stop)

    def put(self, job) -> None:
        self.jobs.put(job)

    def set_stop(self, on: bool) -> None:
        self.stop.set() if on else self.stop.clear()

    def poll(self, wait_s: float) -> list:
        """The messages so far, waiting up to wait_s for the first one."""
        try:
            out = [self.results.get(timeout=wait_s)]
        except queue.Empty:
            return []
        while True:
            try:
                out.append(self.results.get_nowait())
            except queue.Empty:
                return out


class RayPool(BasePool):
    """The workers as Ray actors (module docstring). Use ``pool.get_pool``."""

    def _launch(self) -> None:
        ray = self._ray = import_ray(self.spec.ray_address)
        gpu = self.spec.devices[0] != "cpu"
        need = {"GPU" if gpu else "CPU": float(self.spec.world)}
        t0 = time.monotonic()
        while not (have := ray.cluster_resources()) and time.monotonic() - t0 < 10.0:  # a new node reports late
            time.sleep(TICK_S)
        if any(have.get(k, 0.0) < v for k, v in need.items()):
            raise RuntimeError(f"devices: {self.spec.world} Ray actors need {need}, the Ray cluster at "
                               f"{self.spec.ray_address!r} has {({k: have.get(k, 0.0) for k in need})} in all; "
                               f"use fewer devices or add machines (ray status)")
        pack = str(Path(__file__).resolve().parents[2])  # where comfyui_full4d lives, for the actors' imports
        env = {"PYTHONPATH": os.pathsep.join(p for p in (pack, os.environ.get("PYTHONPATH")) if p)}
        if FAULT_ENV in os.environ:
            env[FAULT_ENV] = os.environ[FAULT_ENV]
        cls = ray.remote(max_concurrency=4)(_Actor).options(
            num_cpus=1, num_gpus=1 if gpu else 0, max_restarts=0, runtime_env={"env_vars": env})
        actors = [cls.remote(self.spec) for _ in range(self.spec.world)]
        self._pending: list = []
        self._closed = False
        try:
            where = ray.get([a.where.remote() for a in actors], timeout=600)
        except Exception:
            for a in actors:
                ray.kill(a)
            raise
        order = sorted(range(len(actors)), key=lambda i: [w[0] for w in where].index(where[i][0]))  # node-major
        self.actors = [actors[i] for i in order]
        self.where = [where[i] for i in order]
        init = ray.get(self.actors[0].rendezvous.remote())
        self._serving = [a.serve.remote(r, init) for r, a in enumerate(self.actors)]

    @property
    def pids(self) -> list[int]:
        return [w[2] for w in self.where]

    @property
    def alive(self) -> bool:
        return not self._closed and not self._ray.wait(self._serving, num_returns=len(self._serving), timeout=0)[0]

    def _get(self, timeout: float):
        if not self._pending:
            try:
                for msgs in self._ray.get([a.poll.remote(timeout) for a in self.actors], timeout=timeout + 60):
                    self._pending.extend(msgs)
            except Exception:  # an actor died: _dead names it
                time.sleep(TICK_S)
        if not self._pending:
            raise queue.Empty
        return self._pending.pop(0)

    def _dead(self):
        ready = self._ray.wait(self._serving, num_returns=len(self._serving), timeout=0)[0]
        for r, ref in enumerate(self._serving):
            if ref in ready:
                try:
                    self._ray.get(ref)
                except Exception as e:  # the actor died (killed, out of memory)
                    return r, f"exited: {str(e).strip().splitlines()[0]}"
                last = self._ray.get(self.actors[r].poll.remote(0.0))  # serve returned: its last words first
                if last:
                    self._pending.extend(last)
                    return None
                return r, "exited"
        return None

    def _who(self, rank: int) -> str:
        return f"Ray actor, pid {self.where[rank][2]} on {self.where[rank][1]}"

    def _put(self, rank: int, job) -> None:
        self._ray.get(self.actors[rank].put.remote(job))

    def _set_stop(self, on: bool) -> None:
        self._ray.get(self.actors[0].set_stop.remote(on))

    def shutdown(self, kill: bool = False) -> None:
        """Ask idle actors to exit (kill: at once; they may wait in a collective), then kill them all."""
        ray = self._ray
        if self._closed or not ray.is_initialized():  # Ray's own exit handler ran first: the actors went with it
            self._closed = True
            return
        if not kill:
            for a in self.actors:
                a.put.remote(None)
            ray.wait(self._serving, num_returns=len(self._serving), timeout=2.0)
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self._closed = True
