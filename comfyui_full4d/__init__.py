"""comfyui-full4d engine."""
