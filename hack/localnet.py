"""The real node's host network: a pod bridge, two routes, guard rules, and the sysctls put back.

Why it exists before anything else starts: the bridge address (10.244.0.1) is the node IP, the
kubelet's listen address and the API server's advertise address (a loopback node IP is refused by
the kubelet, and 127.0.0.1 as the `kubernetes` endpoint would mean "the pod itself"). The guards
go in first so nothing from a pod can leave the machine, not even in the second before kube-proxy
has programmed a VIP:

- FORWARD: traffic from the bridge may only go back to the bridge (pods reach pods, Services and
  the host; pods have no default route either);
- INPUT: the pod network's addresses answer only on loopback and the bridge (the API server and
  kubelet listen on the bridge address; no other interface may reach them);
- routes: Service VIPs go to the bridge (never the default route), kwok's fake pod CIDR is a
  blackhole.

Teardown removes all of that plus what the components add behind our back (KUBE-* and CNI-*
chains, conntrack-free), and writes back every sysctl the bridge plugin, kubelet and kube-proxy
change. What was done is recorded in `<state>/net.json`, so `down` works from another process.
Standard library only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

BRIDGE = "cni0"
NODE_IP = "10.244.0.1"
POD_SUBNET = "10.244.0.0/24"       # the real node's pods (host-local IPAM on the bridge)
CLUSTER_CIDR = "10.244.0.0/16"     # what kube-proxy treats as in-cluster
SERVICE_CIDR = "10.96.0.0/16"
FAKE_POD_CIDR = "10.245.0.0/16"    # kwok's pods: addresses that exist only in the API
GUARD_IN, GUARD_FWD = "MODELDEPLOY-IN", "MODELDEPLOY-FWD"
# Changed behind our back: the bridge plugin (ip_forward), kube-proxy (route_localnet, br_netfilter
# calls), the kubelet (overcommit, panic, keys). Saved before the node starts, restored after.
SYSCTLS = (
    "net.ipv4.ip_forward", "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
    "vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes",
)
CHAIN_PREFIXES = ("KUBE-", "CNI-", "MODELDEPLOY-")
TABLES = ("filter", "nat", "mangle", "raw")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(argv), capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {out.stderr.strip()}")
    return out


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    out = {}
    for key in SYSCTLS:
        with contextlib.suppress(OSError):
            out[key] = _sysctl_path(key).read_text().strip()
    return out


def write_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        with contextlib.suppress(OSError):
            if _sysctl_path(key).read_text().strip() != value:
                _sysctl_path(key).write_text(value + "\n")


def check_no_overlap() -> None:
    """Refuse to start when the host already uses addresses in the ranges we are about to route."""
    ours = [ipaddress.ip_network(c) for c in (CLUSTER_CIDR, SERVICE_CIDR, FAKE_POD_CIDR)]
    out = _run("ip", "-j", "-4", "addr", "show").stdout
    for link in json.loads(out):
        if link["ifname"] == BRIDGE:
            continue
        for a in link.get("addr_info", []):
            net = ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network
            clash = [str(o) for o in ours if o.overlaps(net)]
            if clash:
                raise RuntimeError(f"{link['ifname']} has {net}, which overlaps {clash}: the local node needs "
                                   "those ranges for pods and Services; free them or run on another machine")


@dataclass
class PodNetwork:
    """`up()` before the API server starts, `down()` after the node's last process is gone."""

    state_dir: Path

    @property
    def record(self) -> Path:
        return self.state_dir / "net.json"

    def up(self) -> None:
        if self.record.exists():  # a previous run died before its teardown
            self.down()
        check_no_overlap()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.record.write_text(json.dumps({"sysctls": read_sysctls()}, indent=2))
        self._guards()
        if _run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
            _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "replace", f"{NODE_IP}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        _run("ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE, "src", NODE_IP)
        _run("ip", "route", "replace", "blackhole", FAKE_POD_CIDR)
        # Pod-to-Service traffic between two pods on one bridge needs the bridge to call iptables.
        _sysctl_path("net.bridge.bridge-nf-call-iptables").write_text("1\n")

    def _guards(self) -> None:
        # In the mangle table: it is traversed before filter, where kube-proxy and the CNI firewall
        # plugin insert their own ACCEPT rules at the top of INPUT/FORWARD.
        for chain, parent, rules in (
            (GUARD_FWD, "FORWARD", [["-i", BRIDGE, "-o", BRIDGE, "-j", "RETURN"],
                                    ["-i", BRIDGE, "-j", "DROP"],
                                    ["-o", BRIDGE, "-j", "DROP"]]),
            (GUARD_IN, "INPUT", [["-i", "lo", "-j", "RETURN"],
                                 ["-i", BRIDGE, "-j", "RETURN"],
                                 ["-d", CLUSTER_CIDR, "-j", "DROP"]]),
        ):
            ipt = ("iptables", "-t", "mangle")
            _run(*ipt, "-N", chain, check=False)
            _run(*ipt, "-F", chain)
            for r in rules:
                _run(*ipt, "-A", chain, *r)
            if _run(*ipt, "-C", parent, "-j", chain, check=False).returncode != 0:
                _run(*ipt, "-I", parent, "1", "-j", chain)

    def down(self) -> None:
        """Remove the chains (ours and the components'), routes and bridge; restore the sysctls."""
        for cmd in ("iptables", "ip6tables"):
            remove_chains(cmd)
        _run("ip", "route", "del", "blackhole", FAKE_POD_CIDR, check=False)
        _run("ip", "route", "del", SERVICE_CIDR, "dev", BRIDGE, check=False)
        _run("ip", "link", "del", BRIDGE, check=False)
        if self.record.exists():
            write_sysctls(json.loads(self.record.read_text()).get("sysctls", {}))
            self.record.unlink()

    @staticmethod
    def leftovers() -> list[str]:
        """What a teardown should have removed and did not (for tests and `cluster-status`)."""
        left = []
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            left.append(f"bridge {BRIDGE}")
        for cmd in ("iptables", "ip6tables"):
            for table in TABLES:
                out = _run(f"{cmd}-save", "-t", table, check=False).stdout
                left += [f"{cmd} {table} {ln.split()[0][1:]}" for ln in out.splitlines()
                         if ln.startswith(":") and ln[1:].startswith(CHAIN_PREFIXES)]
        return left


def remove_chains(cmd: str = "iptables") -> None:
    """Delete every rule jumping to a KUBE-/CNI-/MODELDEPLOY- chain, then those chains, in every table."""
    for table in TABLES:
        out = _run(f"{cmd}-save", "-t", table, check=False).stdout
        chains = [ln.split()[0][1:] for ln in out.splitlines() if ln.startswith(":")]
        ours = [c for c in chains if c.startswith(CHAIN_PREFIXES)]
        if not ours:
            continue
        # Rules in built-in chains that jump to ours (the chains' own rules go with -F below).
        for ln in out.splitlines():
            parts = ln.split()
            if len(parts) > 2 and parts[0] == "-A" and not parts[1].startswith(CHAIN_PREFIXES) \
                    and any(p.startswith(CHAIN_PREFIXES) for p in parts[2:]):
                _run(cmd, "-t", table, "-D", *_unquote(parts[1:]), check=False)
        for c in ours:
            _run(cmd, "-t", table, "-F", c, check=False)
        for c in ours:
            _run(cmd, "-t", table, "-X", c, check=False)


def _unquote(parts: list[str]) -> list[str]:
    """iptables-save quotes comments ("..."); re-join them into single arguments for `-D`."""
    out: list[str] = []
    buf: list[str] | None = None
    for p in parts:
        if buf is not None:
            buf.append(p)
            if p.endswith('"'):
                out.append(" ".join(buf)[1:-1])
                buf = None
        elif p.startswith('"') and not (p.endswith('"') and len(p) > 1):
            buf = [p]
        else:
            out.append(p[1:-1] if p.startswith('"') and p.endswith('"') and len(p) > 1 else p)
    return out
