"""Model cards: what the pipeline recorded about each revision's model, read from its running pods.

Why from the pods: the card travels with the image (labels `io.modeldeploy.card.*`, set when the image
is built; see bento/modeldeploy_model/deploy.py), but Kubernetes does not expose image labels through
its API. The same card is served by the model itself (GET /metadata, bento/modeldeploy_model/service.py),
so the operator asks one Ready pod of the revision (pods labelled modeldeploy.io/name and
modeldeploy.io/revision) and the pure plan copies it into status.stable.card / status.canary.card.

Which revisions: those in status.stable / status.canary without a card, and the pod template revision of
each observed Deployment with a ready pod, so a revision's card is usually read by the time the plan
records the revision in status (a rolling update's new stable) and goes in with it.

Why it is cheap and never in the way of a rollout: a revision whose card status already holds is never
asked again (the plan carries it, also from canary to stable on promotion); one read but not in status
yet is kept in memory until it is (or its revision is gone); a failed read is retried after
RETRY_SECONDS per revision, backing off to RETRY_MAX_SECONDS; the pod list and the GET each time out
after TIMEOUT_SECONDS; and nothing raises out of here: no card is only a card not shown (a debug log
line says why). The reads run in a small pool of their own, never in a reconcile: a pod IP that does
not answer (kwok's fake pods, a NetworkPolicy) would hold a worker for the whole timeout; a finished
read queues a reconcile of its object, which copies the card into status.

Why plain http.client to the pod IP: no proxy from the environment and no redirects followed (a model
server must not be able to send the operator elsewhere), and the answer is read up to MAX_BYTES only.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from modeldeploy.api import ModelCard, ModelDeployment
from modeldeploy.k8s import Kube
from modeldeploy.reconcile import Observed
from modeldeploy.resources.common import LABEL_NAME, LABEL_REVISION

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 2.0
# A failed read is retried after RETRY_SECONDS, doubling per failure up to RETRY_MAX_SECONDS: a pod IP
# that never answers (a model without /metadata, a NetworkPolicy, kwok's fake pods) costs a reconcile
# thread at most TIMEOUT_SECONDS per revision that often, not every resync.
RETRY_SECONDS = 30.0
RETRY_MAX_SECONDS = 600.0
MAX_BYTES = 1 << 20  # a card.json is a few kilobytes; its SHAP section may add some
METADATA_PATH = "/metadata"


class CardError(Exception):
    """The card could not be read; the message says why."""


def fetch_card(host: str, port: int, timeout: float = TIMEOUT_SECONDS) -> ModelCard:
    """GET http://host:port/metadata and compact it; CardError on any failure."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", METADATA_PATH, headers={"Accept": "application/json"})
        resp = conn.getresponse()
        body = resp.read(MAX_BYTES + 1)
        if resp.status != 200:
            raise CardError(f"GET {METADATA_PATH} answered HTTP {resp.status}")
        if len(body) > MAX_BYTES:
            raise CardError(f"GET {METADATA_PATH} answered more than {MAX_BYTES} bytes")
        card = json.loads(body)
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise CardError(f"GET http://{host}:{port}{METADATA_PATH}: {type(e).__name__}: {e}") from None
    finally:
        conn.close()
    if not isinstance(card, dict) or not card:
        raise CardError(f"GET {METADATA_PATH} answered no model card")
    return ModelCard.from_card(card)


def _ready(pod: dict[str, Any]) -> bool:
    st = pod.get("status") or {}
    return bool(st.get("podIP")) and not (pod.get("metadata") or {}).get("deletionTimestamp") and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])


def _port(pod: dict[str, Any], default: int) -> int:
    """The model container's `http` port (resources/deployment.py names it so), else `default`."""
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == "http" and isinstance(p.get("containerPort"), int):
                return int(p["containerPort"])
    return default


def _serving_revision(dep: dict[str, Any] | None) -> str | None:
    """The revision of a Deployment's pod template, if the Deployment has a ready pod."""
    if not dep or int(((dep.get("status") or {}).get("readyReplicas")) or 0) < 1:
        return None
    labels = ((dep.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
    revision = labels.get(LABEL_REVISION)
    return str(revision) if revision else None


@dataclass
class _Memory:
    """What the reader knows of one ModelDeployment's revisions (by revision hash)."""

    retry: dict[str, tuple[float, int]] = field(default_factory=dict)  # not asked before (monotonic), failures
    read: dict[str, ModelCard] = field(default_factory=dict)  # read (or seen in status): not read again
    pending: set[str] = field(default_factory=set)  # a read in flight


class CardReader:
    """Reads the cards of a ModelDeployment's revisions that status does not hold yet.

    With a `pool` the reads run there and `cards` never waits for one: a finished read calls
    `on_read(namespace, name)` (the controller queues a reconcile, which finds the card). Without a pool
    (tests) `cards` reads in the calling thread. State is shared by the reconcile workers and the pool,
    so every access holds the lock."""

    def __init__(self, kube: Kube, fetch: Callable[[str, int], ModelCard] = fetch_card,
                 clock: Callable[[], float] = time.monotonic, pool: Executor | None = None,
                 on_read: Callable[[str, str], None] | None = None) -> None:
        self.kube = kube
        self.fetch = fetch
        self.clock = clock
        self.pool = pool
        self.on_read = on_read
        self._lock = threading.Lock()
        self._memory: dict[tuple[str, str], _Memory] = {}

    def cards(self, md: ModelDeployment, observed: Observed | None = None) -> dict[str, ModelCard]:
        """Cards by revision hash: md's stable and canary revisions without one in status, and the revision
        of each observed Deployment with a ready pod (so the pass that records a new stable revision in
        status can record its card too)."""
        ns, name = md.namespace, md.name
        carded = {r.hash: r.card for r in (md.status.stable, md.status.canary) if r is not None and r.card is not None}
        wanted: dict[str, int] = {}
        if md.status.stable is not None:
            wanted[md.status.stable.hash] = (md.status.stable_model or md.spec.model).port
        if md.status.canary is not None:
            wanted[md.status.canary.hash] = md.spec.model.port
        for dep in (observed.stable, observed.canary) if observed is not None else ():
            serving = _serving_revision(dep)
            if serving is not None:
                wanted.setdefault(serving, md.spec.model.port)
        wanted = {h: port for h, port in wanted.items() if h not in carded}
        out: dict[str, ModelCard] = {}
        due: list[tuple[str, int]] = []
        with self._lock:
            mem = self._memory.setdefault((ns, name), _Memory())
            mem.read.update(carded)  # remembered: a promoted canary's card, until status.stable has it
            for h in [h for h in mem.retry if h not in wanted]:
                del mem.retry[h]  # that revision is gone, or has its card in status
            for h in [h for h in mem.read if h not in wanted and h not in carded]:
                del mem.read[h]  # that revision is gone
            now = self.clock()
            for revision, port in wanted.items():
                if revision in mem.read:
                    out[revision] = mem.read[revision]
                elif revision not in mem.pending and now >= mem.retry.get(revision, (0.0, 0))[0]:
                    mem.pending.add(revision)
                    due.append((revision, port))
        for revision, port in due:
            if self.pool is not None:
                self.pool.submit(self._attempt, ns, name, revision, port, True)
            else:
                card = self._attempt(ns, name, revision, port)
                if card is not None:
                    out[revision] = card
        return out

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._memory.pop((namespace, name), None)

    def _attempt(self, ns: str, name: str, revision: str, port: int, notify: bool = False) -> ModelCard | None:
        """One read; never raises (no card is only a card not shown)."""
        try:
            card: ModelCard | None = self._read(ns, name, revision, port)
        except Exception as e:
            log.debug("%s/%s: no model card for revision %s yet: %s", ns, name, revision, e)
            card = None
        with self._lock:
            mem = self._memory.get((ns, name))
            if mem is None:
                return None  # forgotten meanwhile (the object was deleted)
            mem.pending.discard(revision)
            if card is None:
                failures = mem.retry.get(revision, (0.0, 0))[1]
                delay = min(RETRY_MAX_SECONDS, RETRY_SECONDS * 2 ** min(failures, 10))
                mem.retry[revision] = (self.clock() + delay, failures + 1)
                return None
            mem.retry.pop(revision, None)
            mem.read[revision] = card
        if notify and self.on_read is not None:
            try:
                self.on_read(ns, name)
            except Exception:  # the loop is gone (shutting down): the next resync finds the card
                log.debug("%s/%s: could not queue a reconcile for the card of %s", ns, name, revision)
        return card

    def _read(self, ns: str, name: str, revision: str, port: int) -> ModelCard:
        selector = f"{LABEL_NAME}={name},{LABEL_REVISION}={revision}"
        pods = self.kube.list("Pod", ns, selector, limit=20, timeout=TIMEOUT_SECONDS)
        pod = next((p for p in pods if _ready(p)), None)
        if pod is None:
            raise CardError(f"no ready pod with {selector}")
        return self.fetch(str(pod["status"]["podIP"]), _port(pod, port))
