"""Progress and cancellation contract between the engine and whoever runs it.

Engine loops take ``on_step: StepFn | None`` and call ``on_step(done, total)`` once per unit of
work (a frame, a sampling step, an iteration). The callback may raise to cancel: the host
adapter (``comfyui_full4d.host.progress``) updates the host's progress bar and raises the
host's interrupt exception there, so every loop is cancellable within one step.
"""

from __future__ import annotations

from typing import Callable, Optional

StepFn = Callable[[int, int], None]


def report(on_step: Optional[StepFn], done: int, total: int) -> None:
    """Call ``on_step(done, total)`` if given."""
    if on_step is not None:
        on_step(done, total)
