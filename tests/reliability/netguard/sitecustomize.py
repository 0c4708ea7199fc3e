"""Blocks every outbound network connection of the process except loopback.

Put this folder on PYTHONPATH of a process (e.g. the ComfyUI server in tests) and set
FULL4D_NETGUARD_LOG to a file: each blocked attempt is appended there (address + stack), and
the connection fails with PermissionError.
"""

import ipaddress
import os
import socket
import sys
import traceback

_LOG = os.environ.get("FULL4D_NETGUARD_LOG")


def _is_loopback(addr) -> bool:
    if isinstance(addr, (bytes, str)) and not isinstance(addr, tuple):
        return True  # AF_UNIX path
    host = addr[0] if isinstance(addr, tuple) and addr else addr
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname other than localhost: would need DNS, i.e. the network


def _is_numeric(host) -> bool:
    try:
        ipaddress.ip_address(host if isinstance(host, str) else host.decode())
        return True  # no DNS needed; a non-loopback connect is still blocked at socket.connect
    except (ValueError, AttributeError, UnicodeDecodeError):
        return False


def _hook(event, args):
    if event in ("socket.connect", "socket.sendto") and args:
        addr = args[-1]
        if not _is_loopback(addr):
            if _LOG:
                with open(_LOG, "a") as f:
                    f.write(f"BLOCKED {event} {addr!r}\n{''.join(traceback.format_stack(limit=25))}\n")
            raise PermissionError(f"network access blocked in tests: {event} {addr!r}")
    elif event == "socket.getaddrinfo" and args and not _is_loopback((args[0],)) and not _is_numeric(args[0]):
        if _LOG:
            with open(_LOG, "a") as f:
                f.write(f"BLOCKED getaddrinfo {args[0]!r}\n{''.join(traceback.format_stack(limit=25))}\n")
        raise socket.gaierror(f"name resolution blocked in tests: {args[0]!r}")


sys.addaudithook(_hook)
if _LOG:
    with open(_LOG, "a") as _f:
        _f.write(f"ACTIVE pid {os.getpid()}\n")
