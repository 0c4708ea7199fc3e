"""Headless use over ComfyUI's HTTP API: the runner and server launcher (``run``:
``python -m comfyui_full4d.client.run``) and API-workflow helpers (``workflow``: validation against
``/object_info``, API -> UI graphs)."""
