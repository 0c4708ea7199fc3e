"""The reliability suite's check of every error its servers sent (test_client_errors.py) runs after all other tests
of the session, whatever order they were collected in."""

from __future__ import annotations

LAST = "test_client_errors.py::test_no_server_paths_in_client_errors"


def pytest_collection_modifyitems(session, config, items):
    last = [it for it in items if it.nodeid.endswith(LAST)]
    items[:] = [it for it in items if it not in last] + last
