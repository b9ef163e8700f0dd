"""A WAN between the hub and the carts, made by the test: a network namespace for the carts, a veth pair to it,
and the impairment inside that namespace only (never the host's own interfaces).

- `tc netem` (delay, loss) on the cart end of the veth when the kernel has sch_netem;
- where it does not (some VM kernels are built without it: "Specified qdisc kind is unknown"), loss is made by
  nftables in the cart namespace (`numgen random mod 100 < N drop` on the veth only) and the round trip by
  `DelayRelay`, a TCP relay in the cart namespace that holds every chunk for half the RTT in each direction; the
  fallback is printed, never silent;
- a partition drops every packet on the veth (netem loss 100 % or an nftables drop rule), so TCP connections
  stay open and go quiet, as through a failed WAN link.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parents[2]


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def missing_tools() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} (iproute2) is not installed: run scripts/install-test-servers"
    return None


class Wan:
    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.ns = f"amrw-cart-{tag}"
        self.host_if, self.cart_if = f"vh{tag}", f"vc{tag}"
        n = int(tag, 16) % 250 + 1
        self.host_ip, self.cart_ip = f"10.201.{n}.1", f"10.201.{n}.2"
        self.netem = False
        self.nft = False
        self.relays: list[subprocess.Popen] = []
        self.how = ""

    def __enter__(self) -> Self:
        run("ip", "netns", "add", self.ns)
        try:
            run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.cart_if)
            run("ip", "link", "set", self.cart_if, "netns", self.ns)
            run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            run("ip", "link", "set", self.host_if, "up")
            self.ns_run("ip", "addr", "add", f"{self.cart_ip}/30", "dev", self.cart_if)
            self.ns_run("ip", "link", "set", self.cart_if, "up")
            self.ns_run("ip", "link", "set", "lo", "up")
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for p in self.relays:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
        run("ip", "link", "del", self.host_if, check=False)
        run("ip", "netns", "del", self.ns, check=False)

    def ns_run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", self.ns, *cmd, check=check)

    def ns_cmd(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *cmd]

    # -- impairment -----------------------------------------------------------
    def impair(self, rtt_ms: float, loss_pct: float) -> str:
        """Apply the RTT and loss; return how (printed by the caller)."""
        r = self.ns_run("tc", "qdisc", "replace", "dev", self.cart_if, "root", "netem", "delay", f"{rtt_ms:g}ms",
                        "loss", f"{loss_pct:g}%", check=False)
        if r.returncode == 0:
            self.netem = True
            self.how = (f"tc netem on {self.cart_if} (cart namespace): delay {rtt_ms:g} ms on the cart's egress "
                        f"(= the RTT), loss {loss_pct:g} %")
            return self.how
        if shutil.which("nft") is None:
            raise RuntimeError(f"this kernel has no sch_netem ({r.stderr.strip()}) and nft is not installed for the "
                               "fallback: run scripts/install-test-servers")
        self._nft_loss(loss_pct)
        self.how = (f"this kernel has no sch_netem ({r.stderr.strip()}): loss {loss_pct:g} % each way by nftables "
                    f"on {self.cart_if} in the cart namespace, RTT {rtt_ms:g} ms by a delaying TCP relay there")
        return self.how

    def _nft_loss(self, loss_pct: float) -> None:
        rules = f"""table inet amrw {{
  chain out {{ type filter hook output priority 0; oifname "{self.cart_if}" numgen random mod 1000 < {int(loss_pct * 10)} drop; }}
  chain inp {{ type filter hook input priority 0; iifname "{self.cart_if}" numgen random mod 1000 < {int(loss_pct * 10)} drop; }}
}}
"""
        self.ns_run("nft", "delete", "table", "inet", "amrw", check=False)
        subprocess.run(self.ns_cmd("nft", "-f", "-"), input=rules, text=True, check=True, capture_output=True)
        self.nft = True

    def partition(self) -> None:
        if self.netem:
            self.ns_run("tc", "qdisc", "change", "dev", self.cart_if, "root", "netem", "loss", "100%")
            return
        rules = f"""table inet amrwcut {{
  chain out {{ type filter hook output priority -10; oifname "{self.cart_if}" drop; }}
  chain inp {{ type filter hook input priority -10; iifname "{self.cart_if}" drop; }}
}}
"""
        subprocess.run(self.ns_cmd("nft", "-f", "-"), input=rules, text=True, check=True, capture_output=True)

    def heal(self, rtt_ms: float, loss_pct: float) -> None:
        if self.netem:
            self.ns_run("tc", "qdisc", "change", "dev", self.cart_if, "root", "netem", "delay", f"{rtt_ms:g}ms",
                        "loss", f"{loss_pct:g}%")
            return
        self.ns_run("nft", "delete", "table", "inet", "amrwcut")

    def endpoint(self, port: int, rtt_ms: float, relay_port: int) -> str:
        """The address the hub connects to for the cart's `port`: direct with netem, through a delaying relay
        (listening on `relay_port`) without."""
        if self.netem or rtt_ms <= 0:
            return f"tcp://{self.cart_ip}:{port}"
        self.relay([(relay_port, port)], rtt_ms)
        return f"tcp://{self.cart_ip}:{relay_port}"

    def relay(self, pairs: list[tuple[int, int]], rtt_ms: float) -> None:
        """One delaying relay process for all (listen port, cart port) pairs."""
        p = subprocess.Popen(self.ns_cmd(sys.executable, "-m", "tests.hub.relay", self.cart_ip, self.cart_ip,
                                         str(rtt_ms / 2000.0), *(f"{a}:{b}" for a, b in pairs)),
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.relays.append(p)
