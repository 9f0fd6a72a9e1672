"""A Docker engine for the kind tier: the one already running, or Debian's dockerd started by us.

Why: kind needs a Docker engine. A user's laptop has one; this kind of machine has none, and
dockerd changes the machine (iptables chains and NAT rules, the FORWARD policy, ``ip_forward``,
bridges). So `DockerEngine.up()` uses a running engine when there is one and otherwise starts
dockerd with its own socket and exec root under /run/modeldeploy-kind, its data root under
~/.cache/modeldeploy/docker (the node image stays between runs), and:

- **guards before any container exists**: a MODELDEPLOY-KIND chain, jumped to first from
  DOCKER-USER, drops everything forwarded between a docker bridge and any other interface, so
  nothing from a kind node or pod can leave the machine (docker's embedded DNS forwards from the
  container's namespace, so its upstream queries are dropped too), not even in the second before
  kube-proxy has its rules;
- the runc wrapper (hack/runcwrap.py) as default runtime only when this process's capability
  bounding set lacks CAP_SYS_RESOURCE (kind's ``--privileged`` nodes ask for it);
- a record of the machine as found (every iptables table's rules and policies, links, nft
  tables, sysctls) so `down()` — from this process or another (`KEEP=1`, then `make kind-down`)
  — stops dockerd by its pid and puts every one of those back exactly.

An engine we did not start is never stopped or cleaned. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from localcluster import stop_process, wait_until
from localnet import SYSCTLS, read_sysctls, write_sysctls

HACK = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))
RUN_DIR = Path(os.environ.get("MODELDEPLOY_DOCKER_RUN", "/run/modeldeploy-kind"))
DATA_ROOT = CACHE / "docker"
GUARD = "MODELDEPLOY-KIND"
RUNTIME = "modeldeploy-runc"
TABLES = ("filter", "nat", "mangle", "raw")
CAP_SYS_RESOURCE = 24
# dockerd changes these besides ip_forward (bridge-nf-call-*: br_netfilter); all are put back.
DOCKER_SYSCTLS = (*SYSCTLS, "net.ipv6.conf.all.forwarding", "net.ipv4.conf.all.forwarding")


def _run(*argv: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(argv), capture_output=True, text=True, env=env)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {out.stderr.strip()}")
    return out


def lacks_sys_resource() -> bool:
    """True when this process's capability bounding set has no CAP_SYS_RESOURCE (detected, not assumed)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return not (int(line.split()[1], 16) >> CAP_SYS_RESOURCE) & 1
    return False


def _sysctls() -> dict[str, str]:
    out = read_sysctls()
    for key in DOCKER_SYSCTLS:
        path = Path("/proc/sys") / key.replace(".", "/")
        with contextlib.suppress(OSError):
            out[key] = path.read_text().strip()
    return out


def _links() -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir())


def _nft_tables() -> list[str]:
    if shutil.which("nft") is None:
        return []
    return sorted(ln.strip() for ln in _run("nft", "list", "tables", check=False).stdout.splitlines() if ln.strip())


def _iptables(cmd: str) -> dict[str, list[str]]:
    """table -> `iptables-save` lines of chains and rules (counters dropped), for one of iptables/ip6tables."""
    out = {}
    for table in TABLES:
        text = _run(f"{cmd}-save", "-t", table, check=False).stdout
        out[table] = [ln.split(" [")[0] if ln.startswith(":") else ln for ln in text.splitlines()
                      if ln.startswith((":", "-A"))]
    return out


def machine_state() -> dict[str, object]:
    return {"sysctls": _sysctls(), "links": _links(), "nft": _nft_tables(),
            "iptables": _iptables("iptables"), "ip6tables": _iptables("ip6tables")}


def restore_iptables(cmd: str, before: dict[str, list[str]]) -> None:
    """Delete every rule and chain not in `before`, and put back the built-in chains' policies."""
    now = _iptables(cmd)
    for table, lines in now.items():
        was = set(before.get(table, []))
        chains_before = {ln.split()[0][1:] for ln in was if ln.startswith(":")}
        for ln in reversed(lines):  # rules first (each exactly as iptables-save printed it)
            if ln.startswith("-A") and ln not in was:
                _run("sh", "-c", f"{cmd} -t {table} -D {ln[3:]}", check=False)
        for ln in lines:
            if ln.startswith(":"):
                name = ln.split()[0][1:]
                if name not in chains_before:
                    _run(cmd, "-t", table, "-F", name, check=False)
        for ln in lines:
            if ln.startswith(":"):
                name = ln.split()[0][1:]
                if name not in chains_before:
                    _run(cmd, "-t", table, "-X", name, check=False)
        for ln in was:
            parts = ln.split()
            if ln.startswith(":") and len(parts) > 1 and parts[1] != "-":
                _run(cmd, "-t", table, "-P", parts[0][1:], parts[1], check=False)


@dataclass
class DockerEngine:
    """`up()` finds or starts an engine; `env` points docker/kind at it; `down()` undoes what up() did."""

    run_dir: Path = RUN_DIR
    data_root: Path = DATA_ROOT
    host: str = ""
    started: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def record(self) -> Path:
        return self.run_dir / "docker.json"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.host:
            env["DOCKER_HOST"] = self.host
        env["DOCKER_BUILDKIT"] = "0"  # the legacy builder: FROM a local image never pulls
        return env

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("docker", *args, check=check, env=self.env)

    def _answers(self) -> bool:
        return self.docker("version", "--format", "{{.Server.Version}}", check=False).returncode == 0

    def attach(self) -> DockerEngine:
        """Point at the engine without starting one: ours (from the record) or the user's."""
        if self.record.exists():
            self.host, self.started = json.loads(self.record.read_text())["host"], True
        elif not self.host:
            self.host = os.environ.get("DOCKER_HOST", "")
        return self

    def up(self) -> DockerEngine:
        if self.record.exists():  # ours, from a run that kept it (KEEP=1) or died
            self.host, self.started = json.loads(self.record.read_text())["host"], True
            if self._answers():
                return self
            self.down()
        self.host = os.environ.get("DOCKER_HOST", "")
        if self._answers():
            return self  # the user's own engine: use it, never stop it
        if shutil.which("dockerd") is None:
            raise RuntimeError("no Docker engine is running and there is no dockerd: "
                               "`apt-get install docker.io` (make setup installs it)")
        t0 = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.host = f"unix://{self.run_dir / 'docker.sock'}"
        state = {"host": self.host, "pid": 0, "machine": machine_state()}
        self.record.write_text(json.dumps(state, indent=1))
        self.started = True
        argv = ["dockerd", "--host", self.host, "--data-root", str(self.data_root),
                "--exec-root", str(self.run_dir / "exec"), "--pidfile", str(self.run_dir / "dockerd.pid"),
                "--iptables=true", "--ip-forward=true", "--userland-proxy=true", "--storage-driver=overlay2",
                "--exec-opt", "native.cgroupdriver=cgroupfs", "--log-level=warn"]
        if lacks_sys_resource():
            argv += ["--add-runtime", f"{RUNTIME}={HACK / 'runcwrap.py'}", "--default-runtime", RUNTIME]
        log = open(self.run_dir / "dockerd.log", "ab")  # noqa: SIM115 - lives as long as dockerd
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        state["pid"] = proc.pid
        self.record.write_text(json.dumps(state, indent=1))

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {proc.returncode}: "
                                   f"{(self.run_dir / 'dockerd.log').read_text()[-2000:]}")
            return self._answers() and _run("iptables", "-t", "filter", "-S", "DOCKER-USER",
                                            check=False).returncode == 0

        wait_until(ready, 60, "dockerd answering with its DOCKER-USER chain", interval=0.1)
        self._guards()
        self.timings["dockerd"] = time.monotonic() - t0
        return self

    def _guards(self) -> None:
        ipt = ("iptables", "-t", "filter")
        _run(*ipt, "-N", GUARD, check=False)
        _run(*ipt, "-F", GUARD)
        for rule in (["-i", "docker0", "-o", "docker0", "-j", "RETURN"],
                     ["-i", "br-+", "-o", "br-+", "-j", "RETURN"],
                     ["-i", "docker0", "-j", "DROP"], ["-i", "br-+", "-j", "DROP"],
                     ["-o", "docker0", "-j", "DROP"], ["-o", "br-+", "-j", "DROP"]):
            _run(*ipt, "-A", GUARD, *rule)
        if _run(*ipt, "-C", "DOCKER-USER", "-j", GUARD, check=False).returncode != 0:
            _run(*ipt, "-I", "DOCKER-USER", "1", "-j", GUARD)

    def down(self) -> None:
        """Stop the dockerd we started and put the machine back as the record found it."""
        if not self.record.exists():
            return
        state = json.loads(self.record.read_text())
        if state.get("pid"):
            stop_process(int(state["pid"]), timeout=30)
        machine = state["machine"]
        for cmd in ("iptables", "ip6tables"):
            restore_iptables(cmd, machine[cmd])
        for link in set(_links()) - set(machine["links"]):
            if link == "docker0" or link.startswith(("br-", "veth")):
                _run("ip", "link", "del", link, check=False)
        for table in set(_nft_tables()) - set(machine["nft"]):
            listing = _run("sh", "-c", f"nft list {table}", check=False).stdout
            if not any(ln.strip() and not ln.strip().startswith(("table", "chain", "type", "}", "policy"))
                       for ln in listing.splitlines()):
                _run("sh", "-c", f"nft delete {table}", check=False)
        write_sysctls(machine["sysctls"])
        for mnt in _mounts_under(self.run_dir, self.data_root):
            _run("umount", "-l", mnt, check=False)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.started = False

    def leftovers(self, before: dict[str, object]) -> list[str]:
        """What differs from `before` (a `machine_state()`): for the tests' teardown assertion."""
        now = machine_state()
        left: list[str] = []
        for key in ("links", "nft"):
            left += [f"{key}: {x}" for x in sorted(set(now[key]) - set(before[key]))]  # type: ignore[call-overload]
        for cmd in ("iptables", "ip6tables"):
            b, n = before[cmd], now[cmd]
            assert isinstance(b, dict) and isinstance(n, dict)
            for table in TABLES:
                left += [f"{cmd} {table}: {ln}" for ln in sorted(set(n[table]) ^ set(b[table]))]
        bs, ns = before["sysctls"], now["sysctls"]
        assert isinstance(bs, dict) and isinstance(ns, dict)
        left += [f"{k}={v} (was {bs.get(k)})" for k, v in ns.items() if bs.get(k) != v]
        if _run("pgrep", "-x", "dockerd", check=False).returncode == 0 and self.started:
            left.append("dockerd still running")
        left += [f"mount {m}" for m in _mounts_under(self.run_dir, self.data_root)]
        return left


def _mounts_under(*dirs: Path) -> list[str]:
    prefixes = tuple(str(d) for d in dirs)
    with open("/proc/self/mounts") as f:
        return sorted({ln.split()[1] for ln in f if ln.split()[1].startswith(prefixes)}, reverse=True)
