"""Several "machines" on one: a network namespace per host, joined to this one by a veth pair.

Each host gets its own network stack (its own port 8000, its own loopback), reachable from here at
10.A.B.2 while this side of the pair is 10.A.B.1; A is picked per run so that concurrent runs do
not collide. Where namespaces cannot be made (not root, no CAP_NET_ADMIN), each host is a loopback
address of its own instead (127.0.0.2, 127.0.0.3, ...): the same recipe, less isolation.
Everything made here is deleted in ``remove()``, namespaces last, after their processes.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
from dataclasses import dataclass


@dataclass
class Host:
    name: str
    address: str  # where nginx reaches it
    namespace: str | None  # None: a loopback address in this namespace
    gateway: str = "127.0.0.1"  # where it reaches services of this machine (Redis), ours of the pair

    def command(self, argv: list[str]) -> list[str]:
        """ARGV run on this host (``ip netns exec`` execs it: the pid is the command's own)."""
        return ["ip", "netns", "exec", self.namespace, *argv] if self.namespace else argv


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _used_subnets() -> set[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=10).stdout
    return {part.split("/")[0].rsplit(".", 2)[0] for part in out.split() if part.startswith("10.")}


def namespaces_available() -> bool:
    if os.geteuid() != 0:
        return False
    probe = f"fs-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.CalledProcessError):
        return False
    _ip("netns", "del", probe)
    return True


class Hosts:
    def __init__(self, count: int) -> None:
        self.hosts: list[Host] = []
        self.use_namespaces = namespaces_available()
        if not self.use_namespaces:
            self.hosts = [Host(f"host{i}", f"127.0.0.{i + 2}", None) for i in range(count)]
            return
        used = _used_subnets()
        first = random.choice([n for n in range(100, 250) if f"10.{n}" not in used])
        tag = f"{os.getpid() % 100000}{random.randrange(100):02d}"
        try:
            for i in range(count):
                name = f"fs{tag}h{i}"
                outside, inside = f"fso{tag}h{i}", f"fsi{tag}h{i}"
                _ip("netns", "add", name)
                self.hosts.append(Host(name, f"10.{first}.{i}.2", name, f"10.{first}.{i}.1"))
                _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
                _ip("link", "set", inside, "netns", name)
                _ip("addr", "add", f"10.{first}.{i}.1/24", "dev", outside)
                _ip("link", "set", outside, "up")
                _ip("-n", name, "addr", "add", f"10.{first}.{i}.2/24", "dev", inside)
                _ip("-n", name, "link", "set", inside, "up")
                _ip("-n", name, "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        for host in self.hosts:
            if host.namespace:
                # Deleting the namespace destroys its end of the veth pair, and with it ours.
                with contextlib.suppress(subprocess.CalledProcessError):
                    _ip("netns", "del", host.namespace)
