"""comfyui-full4d: ComfyUI node pack (V3 schema) for Full-4D.

The host imports this file as a package. The engine package ``comfyui_full4d`` sits beside it;
it is appended to ``sys.path`` (never prepended: our folder names must not shadow the host's
modules such as ``nodes``) so a plain ``git clone`` into ``custom_nodes/`` works without pip.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)

from .nodes import Full4DExtension, NODES  # noqa: E402

WEB_DIRECTORY = "./web"

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY", "NODES"]


async def comfy_entrypoint() -> Full4DExtension:
    return Full4DExtension()
