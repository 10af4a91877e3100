"""Real network partitions between two Linux network namespaces.

:class:`NetnsPair` creates two fresh network namespaces joined by a veth pair
with addresses from a private /30 that exist only inside them, so a client and a
server placed on either side talk over a real (virtual) link that a test can cut
with the kernel's own tools, no proxy involved. Nothing is routed outside the
two namespaces. Needs root and iproute2 (``ip``, ``tc``).

``drop()`` makes the link lose every packet: it prefers ``tc netem loss 100%``
and, on kernels built without netem, falls back to a token-bucket (``tbf``)
qdisc whose bucket and queue are smaller than any packet, so the kernel drops
them all.
Either way TCP sees pure loss and retransmits, so data sent during a drop is
delivered after :meth:`NetnsPair.heal`. ``link_down()`` instead takes both veth
ends down: established connections stall the same way, but new connections fail
fast with "network unreachable" because the route disappears.

The methods are synchronous and take milliseconds, so they are fine to call
from Trio tests too.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import secrets
import shlex
import socket as _socket
import subprocess
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal

__all__ = ["DropDirection", "DropMethod", "Namespace", "NetnsError", "NetnsPair"]

DropDirection = Literal["both", "a_to_b", "b_to_a"]
DropMethod = Literal["auto", "netem", "tbf"]

_CLONE_NEWNET = 0x40000000
_NETNS_DIR = "/run/netns"
# Every frame is bigger than a 32-byte bucket and a 1-byte queue, so tbf drops it.
_TBF_BLACKHOLE = ("tbf", "rate", "1kbit", "burst", "32", "limit", "1")
_NETEM_BLACKHOLE = ("netem", "loss", "100%")


class NetnsError(RuntimeError):
    """An ``ip``/``tc`` command failed."""


def _run(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise NetnsError(
            f"{shlex.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


def _enter_netns(path: str) -> None:
    """Move the calling thread (only) into the network namespace at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns = getattr(os, "setns", None)  # Python >= 3.12
        if setns is not None:
            setns(fd, _CLONE_NEWNET)
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)


class Namespace:
    """One side of a :class:`NetnsPair`: a namespace, its veth end and its address."""

    def __init__(self, name: str, interface: str, address: str, prefixlen: int) -> None:
        self.name = name
        self.interface = interface
        self.address = address
        self.prefixlen = prefixlen
        self._processes: list[subprocess.Popen[Any]] = []

    def __repr__(self) -> str:
        return f"<Namespace {self.name} {self.interface} {self.address}/{self.prefixlen}>"

    @property
    def path(self) -> str:
        return f"{_NETNS_DIR}/{self.name}"

    def command(self, *args: str) -> list[str]:
        """``args`` prefixed so that they run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and return its captured output."""
        return _run(self.command(*args), check=check)

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process inside the namespace; it is killed when the pair is destroyed."""
        process = subprocess.Popen(self.command(*args), **kwargs)
        self._processes.append(process)
        return process

    def socket(
        self,
        family: int = _socket.AF_INET,
        type: int = _socket.SOCK_STREAM,
        proto: int = 0,
    ) -> _socket.socket:
        """Create a socket that lives in this namespace, for use from this process.

        A socket keeps the namespace it was created in, so a throwaway thread
        enters the namespace, creates it and exits; no other thread moves.
        Wrap it with ``trio.socket.from_stdlib_socket`` for Trio.
        """
        outcome: list[_socket.socket | BaseException] = []

        def create() -> None:
            try:
                _enter_netns(self.path)
                outcome.append(_socket.socket(family, type, proto))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=create, name=f"netns-socket-{self.name}")
        thread.start()
        thread.join()
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def _kill_processes(self) -> list[str]:
        problems = []
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                problems.append(f"process {process.pid} in {self.name} did not exit")
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        self._processes.clear()
        return problems


class NetnsPair:
    """Two fresh network namespaces ``a`` and ``b`` joined by a veth pair.

    Use as ``with NetnsPair() as pair:``; on exit every process started with
    :meth:`Namespace.popen` is killed and both namespaces (and with them the
    veth pair and any qdisc) are deleted, also when the block or the setup
    failed. ``network`` must be a private IPv4 /30 (or larger); it only exists
    inside the two namespaces, so every pair may use the same one.
    """

    def __init__(
        self,
        *,
        network: str = "10.213.7.0/30",
        drop_method: DropMethod = "auto",
        prefix: str = "meshsub",
    ) -> None:
        net = ipaddress.IPv4Network(network)
        if not net.is_private or net.num_addresses < 4:
            raise ValueError(f"{network} must be a private IPv4 network of at least /30")
        first, second = list(net.hosts())[:2]
        token = secrets.token_hex(3)
        self.a = Namespace(f"{prefix}-{token}-a", f"ms{token}a", str(first), net.prefixlen)
        self.b = Namespace(f"{prefix}-{token}-b", f"ms{token}b", str(second), net.prefixlen)
        #: "netem" or "tbf" once :meth:`drop` has chosen; the requested method before.
        self.drop_method: DropMethod = drop_method
        self._created: list[Namespace] = []
        self._dropping: set[str] = set()  # names of namespaces with a blackhole qdisc
        self._links_down = False

    def __repr__(self) -> str:
        return f"<NetnsPair {self.a!r} <-> {self.b!r}>"

    def __enter__(self) -> NetnsPair:
        self.create()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.destroy()
        except NetnsError as cleanup_error:
            if exc is None:
                raise
            exc.add_note(f"NetnsPair cleanup also failed: {cleanup_error}")

    # -- lifecycle ----------------------------------------------------------

    def create(self) -> None:
        """Create both namespaces, the veth pair and the addresses; undo all on failure."""
        try:
            for ns in (self.a, self.b):
                _run(["ip", "netns", "add", ns.name])
                self._created.append(ns)
            # Both ends are born inside their namespaces: the host's never sees them.
            _run([
                "ip", "link", "add", self.a.interface, "netns", self.a.name,
                "type", "veth", "peer", "name", self.b.interface, "netns", self.b.name,
            ])  # fmt: skip
            for ns in (self.a, self.b):
                cidr = f"{ns.address}/{ns.prefixlen}"
                _run(["ip", "-n", ns.name, "addr", "add", cidr, "dev", ns.interface])
                _run(["ip", "-n", ns.name, "link", "set", "lo", "up"])
                _run(["ip", "-n", ns.name, "link", "set", ns.interface, "up"])
        except BaseException as exc:
            try:
                self.destroy()
            except NetnsError as cleanup_error:
                exc.add_note(f"NetnsPair cleanup also failed: {cleanup_error}")
            raise

    def destroy(self) -> None:
        """Kill tracked processes and delete both namespaces; idempotent."""
        problems: list[str] = []
        for ns in (self.a, self.b):
            problems += ns._kill_processes()
        for ns in list(self._created):
            result = _run(["ip", "netns", "del", ns.name], check=False)
            if result.returncode == 0 or not os.path.exists(ns.path):
                self._created.remove(ns)
            else:
                problems.append(f"ip netns del {ns.name}: {result.stderr.strip()}")
        self._dropping.clear()
        self._links_down = False
        if problems:
            raise NetnsError("; ".join(problems))

    # -- faults -------------------------------------------------------------

    def drop(self, direction: DropDirection = "both") -> None:
        """Lose every packet sent ``direction`` (``a_to_b`` = sent by ``a``)."""
        senders = {"both": (self.a, self.b), "a_to_b": (self.a,), "b_to_a": (self.b,)}
        for ns in senders[direction]:
            self._add_blackhole(ns)

    def heal(self) -> None:
        """Undo :meth:`drop` and :meth:`link_down`: the link carries traffic again."""
        for ns in (self.a, self.b):
            if ns.name in self._dropping:
                _run(["tc", "-n", ns.name, "qdisc", "del", "dev", ns.interface, "root"])
                self._dropping.discard(ns.name)
        if self._links_down:
            self.link_up()

    def link_down(self) -> None:
        """Take both veth ends down (routes vanish; established TCP stalls)."""
        for ns in (self.a, self.b):
            _run(["ip", "-n", ns.name, "link", "set", ns.interface, "down"])
        self._links_down = True

    def link_up(self) -> None:
        """Bring both veth ends back up; addresses and routes return."""
        for ns in (self.a, self.b):
            _run(["ip", "-n", ns.name, "link", "set", ns.interface, "up"])
        self._links_down = False

    def _add_blackhole(self, ns: Namespace) -> None:
        base = ["tc", "-n", ns.name, "qdisc", "replace", "dev", ns.interface, "root"]
        if self.drop_method in ("auto", "netem"):
            result = _run([*base, *_NETEM_BLACKHOLE], check=False)
            if result.returncode == 0:
                self.drop_method = "netem"
                self._dropping.add(ns.name)
                return
            if self.drop_method == "netem" or "unknown" not in result.stderr.lower():
                raise NetnsError(f"tc netem failed: {result.stderr.strip()}")
            self.drop_method = "tbf"  # kernel without sch_netem
        _run([*base, *_TBF_BLACKHOLE])
        self._dropping.add(ns.name)
