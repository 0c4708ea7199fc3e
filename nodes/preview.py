"""Full4D nodes: preview. (Filled in by its owner; keep NODES as the module's export.)"""

from comfy_api.latest import io

NODES: list[type[io.ComfyNode]] = []
