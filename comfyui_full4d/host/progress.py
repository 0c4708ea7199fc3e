"""Host progress bar + interrupt flag as an engine ``StepFn``."""

from __future__ import annotations

import comfy.model_management
import comfy.utils

from ..common.progress import StepFn, short_lines


def check_interrupt() -> None:
    """Raise the host's interrupt exception if the user pressed cancel (``/interrupt``)."""
    comfy.model_management.throw_exception_if_processing_interrupted()


def progress(total: int = 1) -> StepFn:
    """A ``StepFn`` that drives a host ``ProgressBar`` and honours ``/interrupt``.

    The bar is sized from the real ``total`` the engine passes on each call.
    """
    bar = comfy.utils.ProgressBar(max(1, int(total)))

    def on_step(done: int, total: int) -> None:
        check_interrupt()
        bar.update_absolute(int(done), max(1, int(total)))

    return on_step


def progress_text(text: str) -> None:
    """Show ``text`` under the running node in the browser (the host's progress-text message, as core nodes
    send it), its lines wrapped at spaces to ``short_lines``' width so the frontend never breaks a word; does
    nothing when no server or no executing node is known (in-process use, tests)."""
    from comfy_execution.utils import get_executing_context

    ctx = get_executing_context()
    try:
        from server import PromptServer

        server = getattr(PromptServer, "instance", None)
    except ImportError:
        server = None
    if ctx is None or server is None or not hasattr(server, "send_progress_text"):
        return
    server.send_progress_text(short_lines(text), ctx.node_id)
