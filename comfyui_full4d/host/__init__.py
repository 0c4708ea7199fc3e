"""The only package of the engine that imports the host (``comfy*``, ``folder_paths``)."""
