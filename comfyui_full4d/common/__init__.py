"""Shared plumbing every stage may use and that uses no stage: the ``on_step`` progress protocol
(``progress``), atomic file writes (``io``) and full-tensor gathers of FSDP shards (``dist``)."""
