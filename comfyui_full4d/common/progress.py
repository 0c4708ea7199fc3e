"""Progress and cancellation contract between the engine and whoever runs it.

Engine loops take ``on_step: StepFn | None`` and call ``on_step(done, total)`` once per unit of
work (a frame, a sampling step, an iteration). The callback may raise to cancel: the host
adapter (``comfyui_full4d.host.progress``) updates the host's progress bar and raises the
host's interrupt exception there, so every loop is cancellable within one step.
"""

from __future__ import annotations

import textwrap
from typing import Callable, Optional

StepFn = Callable[[int, int], None]


def report(on_step: Optional[StepFn], done: int, total: int) -> None:
    """Call ``on_step(done, total)`` if given."""
    if on_step is not None:
        on_step(done, total)


# Characters a line of a node's progress text keeps. ComfyUI's frontend (1.32) shows the text under the node's
# widgets in a box styled ``word-break: break-all``: a line longer than the box is cut wherever it reaches the
# edge, mid-word ("Gaussi|ans"). Lines this short fit a 340 px node (12 px text) whole.
TEXT_COLUMNS = 36


def short_lines(text: str, width: int = TEXT_COLUMNS) -> str:
    """``text`` with every line longer than ``width`` wrapped at spaces (a word longer than ``width`` stays whole
    on its own line); the text's own line breaks are kept."""
    out = []
    for line in str(text).split("\n"):
        out += textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=False) or [""]
    return "\n".join(out)
