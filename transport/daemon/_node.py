"""Who this node is: its id, and the host facts it registers with. IO.

* :func:`node_id`: ``daemon.id``, else the environment's ``NODE_NAME``, else the id stored in
  ``{work_dir}/node_id``, else a new UUID written there (atomically, so a crash never leaves
  an empty file), as the original daemon does. The Manager assigns no id: a node keeps its
  id across restarts through that file.
* :func:`host_facts`: the real host name, OS and architecture (Go's names, ``linux`` and
  ``amd64``, as the original Manager and console expect), and the IP address of the
  interface that reaches the Manager. That address is found by connecting a UDP socket to
  the Manager's address and reading the socket's own address: the kernel picks the route,
  and no packet is sent. (The original registers ``127.0.0.1`` always, so its Manager can
  only reach daemons on its own host.)
* :func:`cpu_extras`: the two CPU figures the original reports and our collectors do not
  (``mhz`` and cumulative ``iowait``), from ``/proc``.

Blocking calls (DNS, files) are meant to run in a worker thread (``trio.to_thread``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import sys
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from ._metric_keys import HostExtras

__all__ = [
    "NODE_ID_FILE",
    "NODE_NAME_ENV",
    "HostFacts",
    "cpu_extras",
    "go_arch",
    "host_facts",
    "node_id",
    "route_ip",
]

NODE_ID_FILE = "node_id"
"""The node id's file in the work directory."""
NODE_NAME_ENV = "NODE_NAME"
"""The environment variable that names the node when ``daemon.id`` is empty."""
_MAX_ID = 256

# Python's machine names -> Go's GOARCH, which the original reports.
_GO_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "386",
    "i686": "386",
    "armv7l": "arm",
    "armv6l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def go_arch(machine: str) -> str:
    """Go's name for a machine architecture (``x86_64`` -> ``amd64``); others lower-cased."""
    return _GO_ARCH.get(machine.lower(), machine.lower())


def _clean(text: str) -> str:
    return text.strip()[:_MAX_ID]


def node_id(daemon_id: str, work_dir: str, environ: Mapping[str, str] | None = None) -> str:
    """This node's id, creating ``{work_dir}/node_id`` when nothing names it yet.

    Args:
        daemon_id: ``daemon.id`` (empty: not set).
        work_dir: The daemon's work directory.
        environ: The environment (default: ``os.environ``).

    Returns:
        The id (non-empty, at most 256 characters).

    Raises:
        OSError: The id file cannot be read (other than missing) or written.
    """
    environ = os.environ if environ is None else environ
    for candidate in (daemon_id, environ.get(NODE_NAME_ENV, "")):
        if _clean(candidate):
            return _clean(candidate)
    path = os.path.join(work_dir, NODE_ID_FILE)
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            stored = _clean(file.read(4096))
    except FileNotFoundError:
        stored = ""
    if stored:
        return stored
    new = str(uuid.uuid4())
    os.makedirs(work_dir, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".node_id-", dir=work_dir)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(new + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return new


def route_ip(host: str, port: int) -> str:
    """The local IP address of the route to ``host:port``; sends nothing.

    Args:
        host: The Manager's host name or address.
        port: Its port.

    Returns:
        The address (e.g. ``10.0.3.7``), or ``""`` when there is no route or the name
        does not resolve.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return ""
    for family, kind, proto, _, address in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.connect(address)  # UDP: picks the route, sends nothing
                local = probe.getsockname()[0]
        except OSError:
            continue
        if isinstance(local, str) and local not in ("0.0.0.0", "::"):
            return local.split("%")[0]  # an IPv6 scope id is no part of an address
    return ""


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What a node tells the Manager about its host.

    Attributes:
        hostname: The host's name.
        ip: The address of the interface that reaches the Manager (``""``: unknown).
        os: The OS as Go names it (``linux``).
        arch: The architecture as Go names it (``amd64``).
    """

    hostname: str
    ip: str
    os: str
    arch: str


def host_facts(manager_host: str, manager_port: int) -> HostFacts:
    """This host's facts, with the IP address that reaches the Manager (blocking: DNS).

    Args:
        manager_host: The Manager's host name or address.
        manager_port: Its port.

    Returns:
        The facts.
    """
    return HostFacts(
        hostname=socket.gethostname(),
        ip=route_ip(manager_host, manager_port),
        os=sys.platform if sys.platform != "linux2" else "linux",
        arch=go_arch(platform.machine()),
    )


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read(1 << 20)
    except OSError:
        return ""


def cpu_extras(proc: str = "/proc") -> HostExtras:
    """The CPU clock and cumulative iowait seconds (Linux; None where unknown).

    Args:
        proc: Where procfs is mounted (tests point it elsewhere).

    Returns:
        ``mhz``: the mean of ``/proc/cpuinfo``'s ``cpu MHz`` lines; ``iowait``: the fifth
        field of ``/proc/stat``'s ``cpu`` line divided by the clock tick rate.
    """
    mhz: float | None = None
    speeds = []
    for line in _read(os.path.join(proc, "cpuinfo")).splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "cpu MHz":
            with contextlib.suppress(ValueError):
                speeds.append(float(value))
    if speeds:
        mhz = sum(speeds) / len(speeds)
    iowait: float | None = None
    for line in _read(os.path.join(proc, "stat")).splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu" and len(fields) > 5:
            with contextlib.suppress(ValueError, OSError):
                iowait = int(fields[5]) / os.sysconf("SC_CLK_TCK")
            break
    return HostExtras(cpu_mhz=mhz, cpu_iowait_s=iowait)
