"""The Argo CD health check and actions for ModelDeployment, run in a real Lua 5.1 interpreter.

Argo CD runs resource customizations in gopher-lua (Lua 5.1), so `lua5.1` here rejects any 5.2+
syntax. The harness below mimics Argo CD: the object is a global `obj` (decoded from JSON by a
small pure-Lua decoder), the script's return value is encoded back to JSON for the assertions.
The shipped argocd-cm patch must embed exactly these Lua files.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "manifests" / "argocd"
LUA_DIR = ARGOCD / "resource-customizations"
HEALTH = LUA_DIR / "health.lua"
DISCOVERY = LUA_DIR / "actions" / "discovery.lua"
ACTIONS = ("pause", "resume", "promote", "abort")
LUA = shutil.which("lua5.1")

pytestmark = pytest.mark.skipif(LUA is None, reason="lua5.1 is installed by `make setup`")

# A tiny JSON decoder/encoder in pure Lua 5.1, and the runner: obj = decode(stdin); print(encode(script())).
HARNESS = r"""
local function decode(s)
  local pos = 1
  local function ws() pos = string.find(s, "[^ \t\r\n]", pos) or (#s + 1) end
  local value
  local function str()
    pos = pos + 1
    local out = {}
    while true do
      local c = string.sub(s, pos, pos)
      if c == '"' then pos = pos + 1; break end
      if c == "\\" then
        local e = string.sub(s, pos + 1, pos + 1)
        local map = {b = "\b", f = "\f", n = "\n", r = "\r", t = "\t"}
        if e == "u" then
          local code = tonumber(string.sub(s, pos + 2, pos + 5), 16)
          table.insert(out, code < 128 and string.char(code) or "?")
          pos = pos + 6
        else
          table.insert(out, map[e] or e)
          pos = pos + 2
        end
      else
        table.insert(out, c)
        pos = pos + 1
      end
    end
    return table.concat(out)
  end
  function value()
    ws()
    local c = string.sub(s, pos, pos)
    if c == "{" then
      local t = {}
      pos = pos + 1; ws()
      if string.sub(s, pos, pos) == "}" then pos = pos + 1; return t end
      while true do
        ws(); local k = str(); ws(); pos = pos + 1
        t[k] = value(); ws()
        local d = string.sub(s, pos, pos); pos = pos + 1
        if d == "}" then return t end
      end
    elseif c == "[" then
      local t = {}
      pos = pos + 1; ws()
      if string.sub(s, pos, pos) == "]" then pos = pos + 1; return t end
      while true do
        table.insert(t, value()); ws()
        local d = string.sub(s, pos, pos); pos = pos + 1
        if d == "]" then return t end
      end
    elseif c == '"' then return str()
    elseif string.sub(s, pos, pos + 3) == "true" then pos = pos + 4; return true
    elseif string.sub(s, pos, pos + 4) == "false" then pos = pos + 5; return false
    elseif string.sub(s, pos, pos + 3) == "null" then pos = pos + 4; return nil
    else
      local num = string.match(s, "^-?[0-9.eE+-]+", pos)
      pos = pos + #num
      return tonumber(num)
    end
  end
  return value()
end

local function encode(v)
  local t = type(v)
  if t == "nil" then return "null"
  elseif t == "boolean" then return tostring(v)
  elseif t == "number" then return string.format("%.14g", v)
  elseif t == "string" then
    return '"' .. string.gsub(v, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c)) end) .. '"'
  elseif t == "table" then
    if #v > 0 then
      local parts = {}
      for _, x in ipairs(v) do table.insert(parts, encode(x)) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local parts = {}
    for k, x in pairs(v) do table.insert(parts, encode(tostring(k)) .. ":" .. encode(x)) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  error("cannot encode " .. t)
end

obj = decode(io.read("*a"))
local script = assert(loadfile(arg[1]))
io.write(encode(script()))
"""


def run_lua(tmp_path: Path, script: Path, obj: dict[str, Any]) -> Any:
    harness = tmp_path / "harness.lua"
    harness.write_text(HARNESS)
    assert LUA is not None
    res = subprocess.run([LUA, str(harness), str(script)], input=json.dumps(obj), capture_output=True,
                         text=True, timeout=20)
    assert res.returncode == 0, f"{script.name} failed in lua5.1:\n{res.stderr}"
    return json.loads(res.stdout)


def mdep(phase: str | None = None, generation: int = 2, observed: int | None = 2, paused: bool = False,
         **status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "room-price", "namespace": "models", "generation": generation},
        "spec": {"model": {"image": "registry.example/room-price:2f1c"}, "replicas": 2, "paused": paused},
    }
    if phase is not None:
        st: dict[str, Any] = {"phase": phase, "conditions": [], "canaryWeight": 0, "currentStep": 0,
                              "stable": {"image": "registry.example/room-price:1a", "bento": "room_price:1a",
                                         "hash": "aaaa"}}
        if observed is not None:
            st["observedGeneration"] = observed
        st.update(status)
        obj["status"] = st
    return obj


CANARY = {"image": "registry.example/room-price:2f1c", "bento": "room_price:2f1c", "hash": "bbbb"}
FAILED_ANALYSIS = [
    {"metric": "latency-p99", "value": 0.2, "max": 0.5, "verdict": "Pass", "time": "2026-01-01T00:00:00Z"},
    {"metric": "error-rate", "value": 0.2, "max": 0.01, "verdict": "Fail", "message": "20% of requests failed",
     "time": "2026-01-01T00:00:00Z"},
]


# (sample, expected Argo CD status, substrings the message must contain)
HEALTH_CASES: dict[str, tuple[dict[str, Any], str, list[str]]] = {
    "no-status": (mdep(None), "Progressing", ["Waiting for the modeldeploy operator"]),
    "stale-generation": (mdep("Healthy", generation=3, observed=2), "Progressing", ["generation 3"]),
    "pending": (mdep("Pending", message="creating the stable Deployment"), "Progressing",
                ["creating the stable Deployment"]),
    "progressing-canary": (mdep("Progressing", canary=CANARY, canaryWeight=25, currentStep=2,
                                message="analysis passed, next step"), "Progressing",
                           ["room_price:2f1c at 25%", "step 2", "analysis passed"]),
    "progressing-condition-message": (
        mdep("Progressing", conditions=[{"type": "Progressing", "status": "True", "reason": "Scaling",
                                         "message": "1 of 2 pods ready"}]),
        "Progressing", ["1 of 2 pods ready"]),
    "healthy": (mdep("Healthy", conditions=[{"type": "Ready", "status": "True", "reason": "Ready"}]),
                "Healthy", ["room_price:1a"]),
    "healthy-with-message": (mdep("Healthy", message="2/2 replicas ready"), "Healthy", ["2/2 replicas ready"]),
    "healthy-but-not-ready": (mdep("Healthy", conditions=[{"type": "Ready", "status": "False",
                                                           "message": "0/2 pods ready"}]),
                              "Degraded", ["0/2 pods ready"]),
    "paused": (mdep("Paused", paused=True, canary=CANARY, canaryWeight=10, currentStep=1), "Suspended",
               ["paused", "10%"]),
    "paused-spec-before-status": (mdep("Progressing", paused=True), "Suspended", ["paused"]),
    "degraded": (mdep("Degraded", message="Secret prom-creds not found"), "Degraded",
                 ["Degraded", "Secret prom-creds not found"]),
    "degraded-condition-message": (
        mdep("Degraded", conditions=[{"type": "Degraded", "status": "True", "reason": "InvalidSpec",
                                      "message": "image pull secret missing"}]),
        "Degraded", ["image pull secret missing"]),
    "rolled-back": (mdep("RolledBack", message="error-rate 0.2 above 0.01", lastAnalysis=FAILED_ANALYSIS),
                    "Degraded", ["rolled back", "error-rate=0.2 > max 0.01 (Fail)", "20% of requests failed"]),
    "rolled-back-no-data": (
        mdep("RolledBack", lastAnalysis=[{"metric": "error-rate", "value": None, "max": 0.01, "verdict": "Error",
                                          "message": "prometheus unreachable", "time": "t"}]),
        "Degraded", ["error-rate=no data (Error)", "prometheus unreachable"]),
    "failed": (mdep("Failed", message="10 inconclusive analyses in a row"), "Degraded",
               ["Rollout failed", "inconclusive"]),
    "unknown-phase": (mdep("Exploded"), "Unknown", ["Exploded"]),
}


@pytest.mark.parametrize("case", sorted(HEALTH_CASES))
def test_health(tmp_path: Path, case: str) -> None:
    obj, status, fragments = HEALTH_CASES[case]
    got = run_lua(tmp_path, HEALTH, obj)
    assert got["status"] == status, got
    for f in fragments:
        assert f in got["message"], (f, got)


def test_health_covers_every_phase() -> None:
    from modeldeploy.api import Phase

    covered = {c[0]["status"]["phase"] for c in HEALTH_CASES.values() if "status" in c[0]}
    assert {p.value for p in Phase} <= covered


# (sample, actions that must be enabled; the rest must be disabled)
DISCOVERY_CASES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "no-status": (mdep(None), {"pause"}),
    "healthy": (mdep("Healthy"), {"pause"}),
    "progressing-canary": (mdep("Progressing", canary=CANARY, canaryWeight=25), {"pause", "promote", "abort"}),
    "paused-canary": (mdep("Paused", paused=True, canary=CANARY), {"resume", "promote", "abort"}),
    "paused-no-canary": (mdep("Paused", paused=True), {"resume"}),
    "rolled-back": (mdep("RolledBack"), {"pause"}),
    "degraded": (mdep("Degraded"), {"pause"}),
    "failed-with-canary": (mdep("Failed", canary=CANARY, canaryWeight=10), {"pause", "promote", "abort"}),
}


@pytest.mark.parametrize("case", sorted(DISCOVERY_CASES))
def test_discovery(tmp_path: Path, case: str) -> None:
    obj, enabled = DISCOVERY_CASES[case]
    got = run_lua(tmp_path, DISCOVERY, obj)
    assert set(got) == set(ACTIONS)
    assert {name for name, a in got.items() if not a["disabled"]} == enabled, got


@pytest.mark.parametrize("phase", ["Pending", "Progressing", "Healthy", "Paused", "Degraded", "RolledBack", "Failed"])
def test_actions_modify_only_what_the_contract_says(tmp_path: Path, phase: str) -> None:
    obj = mdep(phase, paused=phase == "Paused", canary=CANARY)
    before = datetime.now(UTC).replace(microsecond=0)
    for name in ACTIONS:
        got = run_lua(tmp_path, LUA_DIR / "actions" / name / "action.lua", copy.deepcopy(obj))
        want = copy.deepcopy(obj)
        if name in ("pause", "resume"):
            want["spec"]["paused"] = name == "pause"
        else:
            value = got["metadata"]["annotations"][f"modeldeploy.io/{name}"]
            if obj["status"].get("canary"):  # bound to the running canary
                assert value == CANARY["hash"]
            else:  # no canary in status: a time, which the operator only honours while a canary runs
                stamp = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                assert before <= stamp <= datetime.now(UTC), value
            want["metadata"]["annotations"] = {f"modeldeploy.io/{name}": value}
        assert _norm(got) == _norm(want), name


def _norm(v: Any) -> Any:
    """JSON through a Lua table cannot tell [] from {}: compare them as equal."""
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()} or None
    if isinstance(v, list):
        return [_norm(x) for x in v] or None
    return v


def test_actions_keep_existing_annotations(tmp_path: Path) -> None:
    obj = mdep("Progressing", canary=CANARY)
    obj["metadata"]["annotations"] = {"team": "ml", "modeldeploy.io/promote": "old"}
    got = run_lua(tmp_path, LUA_DIR / "actions" / "promote" / "action.lua", obj)
    assert got["metadata"]["annotations"]["team"] == "ml"
    assert got["metadata"]["annotations"]["modeldeploy.io/promote"] != "old"
    # Bound to the canary it was meant for: the running canary's revision hash.
    assert got["metadata"]["annotations"]["modeldeploy.io/promote"] == CANARY["hash"]


def test_scripts_are_lua_5_1() -> None:
    """luac5.1 -p / loadfile under lua5.1: 5.2+ syntax (goto, //, bit ops) would fail here."""
    assert LUA is not None
    for script in [HEALTH, DISCOVERY, *(LUA_DIR / "actions" / a / "action.lua" for a in ACTIONS)]:
        res = subprocess.run([LUA, "-e", f"assert(loadfile({json.dumps(str(script))}))"], capture_output=True,
                             text=True, timeout=10)
        assert res.returncode == 0, (script, res.stderr)


def test_configmap_embeds_exactly_the_lua_files() -> None:
    cm = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    assert (cm["kind"], cm["metadata"]["name"], cm["metadata"]["namespace"]) == ("ConfigMap", "argocd-cm", "argocd")
    data = cm["data"]
    assert set(data) == {"resource.customizations.health.modeldeploy.io_ModelDeployment",
                         "resource.customizations.actions.modeldeploy.io_ModelDeployment"}
    assert data["resource.customizations.health.modeldeploy.io_ModelDeployment"] == HEALTH.read_text()
    actions = yaml.safe_load(data["resource.customizations.actions.modeldeploy.io_ModelDeployment"])
    assert actions["discovery.lua"] == DISCOVERY.read_text()
    assert [d["name"] for d in actions["definitions"]] == list(ACTIONS)
    for d in actions["definitions"]:
        assert d["action.lua"] == (LUA_DIR / "actions" / d["name"] / "action.lua").read_text(), d["name"]


def test_application_example() -> None:
    apps = [d for d in yaml.safe_load_all((ARGOCD / "application.yaml").read_text()) if d]
    assert [a["kind"] for a in apps] == ["Application", "Application"]
    chart_app = apps[0]
    assert chart_app["spec"]["source"]["path"] == "charts/modeldeploy"
    assert (REPO / chart_app["spec"]["source"]["path"] / "Chart.yaml").is_file()
    assert "ServerSideApply=true" in chart_app["spec"]["syncPolicy"]["syncOptions"]
    models_app = apps[1]
    assert (REPO / models_app["spec"]["source"]["path"] / models_app["spec"]["source"]["directory"]["include"]
            ).is_file()
