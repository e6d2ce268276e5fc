"""A network partition made for real: a network namespace joined to the host by a veth pair, and TCP
forwarders on the host end's address to services that listen on 127.0.0.1 (Postgres, Redis, the
provider sink). A process started in the namespace reaches those services only across the veth link;
`cut()` sets the link down (packets are dropped, connections hang as behind a pulled cable), `heal()`
sets it up again (TCP's retransmissions carry on where they stopped). Needs root (CAP_SYS_ADMIN and
CAP_NET_ADMIN): `Partition.available()` says why not where it cannot."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import threading
import uuid


def _ip(*args: str, ns: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)  # noqa: S603


class Forwarder:
    """host:port -> target_host:target_port, one pair of pump threads per connection."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.2)
        self.host, self.port = host, self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name=f"forward:{self.port}")
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.close()
            self._open.clear()
        self._thread.join(2)


class Partition:
    """`with Partition() as net:` a namespace `net.ns` whose only way out is the veth link to
    `net.host_ip`; `net.forward(port)` -> the port on `net.host_ip` that reaches 127.0.0.1:port;
    `net.exec_prefix` runs a command inside; `cut()` / `heal()` the link."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns, self.host_if, self.ns_if = f"ofp{tag}", f"ofh{tag}", f"ofn{tag}"
        octet = random.Random(os.getpid() ^ int(tag, 16)).randrange(1, 250)  # noqa: S311 - a subnet, not a secret
        self.host_ip, self.ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
        self.forwarders: list[Forwarder] = []
        self.exec_prefix = ["ip", "netns", "exec", self.ns]

    @staticmethod
    def available() -> str | None:
        """None where namespaces can be made here, else the one-line reason."""
        if shutil.which("ip") is None:
            return "no `ip` command: apt-get install iproute2"
        probe = f"ofq{uuid.uuid4().hex[:6]}"
        made = _ip("netns", "add", probe)
        if made.returncode != 0:
            return f"cannot create a network namespace (needs root with CAP_SYS_ADMIN): {made.stderr.strip()}"
        _ip("netns", "del", probe)
        return None

    def __enter__(self) -> Partition:
        steps = [
            (("netns", "add", self.ns), None),
            (("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if), None),
            (("link", "set", self.ns_if, "netns", self.ns), None),
            (("addr", "add", f"{self.host_ip}/30", "dev", self.host_if), None),
            (("link", "set", self.host_if, "up"), None),
            (("addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if), self.ns),
            (("link", "set", self.ns_if, "up"), self.ns),
            (("link", "set", "lo", "up"), self.ns),
        ]
        for args, ns in steps:
            done = _ip(*args, ns=ns)
            if done.returncode != 0:
                self.__exit__()
                raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
        return self

    def forward(self, port: int, host: str = "127.0.0.1") -> int:
        fwd = Forwarder(self.host_ip, (host, port))
        self.forwarders.append(fwd)
        return fwd.port

    def cut(self) -> None:
        _ip("link", "set", self.host_if, "down").check_returncode()

    def heal(self) -> None:
        _ip("link", "set", self.host_if, "up").check_returncode()

    def __exit__(self, *exc: object) -> None:
        for fwd in self.forwarders:
            fwd.stop()
        _ip("link", "del", self.host_if)  # takes its peer with it
        _ip("netns", "del", self.ns)
