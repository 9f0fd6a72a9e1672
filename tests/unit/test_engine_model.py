"""A model-based test of the canary engine (issue 10): random sequences of what users, clusters and the
operator do, checked against DESIGN.md §5 after every reconcile.

hypothesis' rule-based state machine drives `reconcile.plan` (and through it `rollout.engine.next_step`)
and `rollout.engine.measurement_due` the way the controller does — observe, `view_of`, `measurement_due`,
measure, `plan`, status written, actions carried out — against `Cluster`, a `World` whose Deployments
roll the way real ones do: a changed spec bumps the generation and the status lags until the pods move,
and a new template's pods replace the old ones only as they become ready (maxUnavailable 0).

Rules: spec.model changes (five versions, back and forth), step-list edits, the verdict of whatever
measurement is due (step analyses and in-step probes, judged by `rollout.analysis`), promote/abort
annotations ("true", a time, the canary's hash, other hashes), pause/resume, canary readiness flips,
time jumps, router switches (replicas <-> gatewayAPI), a missing Secret, a Rolling update, operator
restarts and crashes part-way through a plan, and the operator's requeue timer.

Invariants, after every reconcile (the model keeps what they need itself, not from the engine's status:
the steps the running canary passed, the revisions that served as stable, what each request was meant
for, the revisions rolled back):
- plan never raises, leaves its inputs alone, and gives the same plan for the status round-tripped
  through JSON (a restart);
- a revision becomes stable only after every step of the list in force passed for it, a promote meant
  for it, a fast rollback to a revision that served as stable and was replaced, or as the first deploy
  or a Rolling update;
- a canary is rolled back only for its analyses reaching a limit, its own Deployment's progress
  deadline, or an abort meant for it (so a stale request never promotes or rolls back anything);
- a rolled-back revision stays failed and never runs again, however the spec goes away and back;
- no weight (status.canaryWeight, the HTTPRoute's canary backend) to a canary without a ready pod or
  blocked by a problem;
- requeue hints are None or >= 0.2 s, and a running, unpaused canary always has one.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from modeldeploy.api import Analysis, ModelDeployment, ModelDeploymentStatus, ModelSpec
from modeldeploy.reconcile import Action, Observed, Plan, plan, view_of
from modeldeploy.resources.common import LABEL_REVISION, revision_hash
from modeldeploy.rollout.analysis import AnalysisResult, Measurement, analyse, probe
from modeldeploy.rollout.engine import ANNOTATION_ABORT, ANNOTATION_PROMOTE, REVISION_HASH, fmt_time, measurement_due
from tests.unit.helpers import PROM, World

MODELS = [{"image": f"registry.example/m:v{i}", "bento": f"m:v{i}"} for i in range(1, 6)]
HASHES = [revision_hash(ModelSpec.model_validate(m)) for m in MODELS]
GATEWAY = {"gatewayAPI": {"parentRefs": [{"name": "public"}]}}
ROLLOUT = {"canary": {"steps": [10, 30, 60], "interval": "10s"},
           "analysis": {"prometheus": PROM, "failureLimit": 2, "errorLimit": 2, "inconclusiveLimit": 2,
                        "metrics": [{"name": "error-rate", "max": 0.05}, {"name": "latency-p99", "max": 0.5}]}}
CANARY = "room-price-canary"
PROBLEM = "Secret 'model-credentials' (spec.model.env CREDENTIALS) does not exist in namespace 'ml'"

Mode = Literal["ready", "some", "none", "stuck"]
Verdict = Literal["Pass", "Fail", "Inconclusive", "Error"]
ProbeOutcome = Literal["healthy", "slow", "failing", "nodata"]
Then = Literal["settle", "lag", "crash"]


@dataclass
class Wake:
    """One reconcile: what the measurement due (if any) finds, and what happens after the plan: the cluster
    catches up (`settle`), is still behind at the next reconcile (`lag`), or the operator dies after
    writing the status, `applied` actions into the plan (`crash`)."""

    verdict: Verdict = "Pass"
    outcome: ProbeOutcome = "healthy"
    then: Then = "settle"
    applied: int = 0


# Healthy results are the common case: a canary must pass several in a row to be promoted.
WAKE = st.builds(Wake, st.sampled_from(["Pass", "Pass", "Pass", "Fail", "Inconclusive", "Error"]),
                 st.sampled_from(["healthy", "healthy", "healthy", "healthy", "slow", "failing", "nodata"]),
                 st.sampled_from(["settle", "settle", "settle", "lag", "lag", "crash"]), st.sampled_from([0, 2]))
# After a change: nothing yet (the operator has not seen it), or its watch event and the operator
# running on, woken by its requeue timer, for a while.
REACT = st.one_of(st.just([]), st.lists(WAKE, min_size=1, max_size=8))


# Persistent conditions of what the measurements find (`metrics`): the step verdict and the probe outcome.
CONDITIONS: dict[str, tuple[Verdict, ProbeOutcome]] = {
    "quiet": ("Inconclusive", "nodata"), "outage": ("Error", "nodata"), "faulty": ("Fail", "failing")}


def model_hash(model: ModelSpec | None) -> str | None:
    return None if model is None else revision_hash(model)


def revision_of_deployment(dep: dict[str, Any]) -> str:
    return str(dep["spec"]["template"]["metadata"]["labels"][LABEL_REVISION])


class Cluster(World):
    """A `World` with Deployments that move like real ones.

    An apply or scale that changes a Deployment's spec bumps its generation and keeps the old status
    (the Deployment controller has not seen it yet); `roll_out` is the cluster catching up: pods of
    the current template become ready as `mode` says (the canary only, and a new canary revision
    starts "ready" until told otherwise; stable pods always become ready), and pods of an older
    template stay, ready, until the new ones are (maxUnavailable 0).
    `pods` is the ground truth the invariants compare with: ready pods by revision, per Deployment.
    """

    def __init__(self) -> None:
        super().__init__(replicas=3, rollout=copy.deepcopy(ROLLOUT))
        self.mode: Mode = "ready"
        self.pods: dict[str, dict[str, int]] = {}

    def apply(self, a: Action) -> None:
        key = (a.kind, a.name)
        old = self.objects.get(key)
        if a.kind != "Deployment" or a.verb not in ("apply", "scale"):
            super().apply(a)
            return
        if old is None:
            assert a.verb == "apply" and a.body is not None
            new = copy.deepcopy(a.body)
            new["metadata"]["generation"] = 1
        else:
            new = copy.deepcopy(a.body) if a.verb == "apply" else copy.deepcopy(old)
            if a.verb == "scale":
                new["spec"]["replicas"] = 0
            new["metadata"]["generation"] = old["metadata"]["generation"] + (new["spec"] != old["spec"])
            if a.name == CANARY and revision_of_deployment(new) != revision_of_deployment(old):
                self.mode = "ready"  # how a canary's pods fare is up to its revision: a new one starts afresh
            if "status" in old:
                new["status"] = old["status"]
        self.objects[key] = new

    def roll_out(self) -> None:
        for (kind, name), obj in self.objects.items():
            if kind != "Deployment":
                continue
            n = int(obj["spec"].get("replicas", 1))
            rev = revision_of_deployment(obj)
            mode = self.mode if name == CANARY else "ready"
            before = self.pods.get(name, {})
            if n == 0:
                pods = {}
            elif mode == "ready":
                pods = {rev: n}
            elif mode == "some":
                pods = {rev: max(1, n // 2)}
            else:  # none ready (crash-looping, or stuck): the old template's pods keep serving
                pods = {rev: 0, **{r: c for r, c in before.items() if r != rev and c > 0}}
            self.pods[name] = pods
            ready = sum(pods.values())
            status: dict[str, Any] = {"observedGeneration": obj["metadata"]["generation"],
                                      "replicas": n + sum(c for r, c in pods.items() if r != rev),
                                      "updatedReplicas": n, "readyReplicas": ready, "availableReplicas": ready}
            if mode == "stuck" and n > 0:
                status["conditions"] = [{"type": "Progressing", "status": "False",
                                         "reason": "ProgressDeadlineExceeded"}]
            obj["status"] = status

    def ready_canary_pods(self, rev: str | None) -> int:
        return 0 if rev is None else self.pods.get(CANARY, {}).get(rev, 0)

    def spec_changed(self) -> None:
        self.body["metadata"]["generation"] += 1


def step_result(a: Analysis, verdict: Verdict, stamp: str) -> AnalysisResult:
    """The end-of-step analysis, judged by `rollout.analysis.analyse` from plain numbers."""
    err, lat = a.metrics
    requests = Measurement(None, 3.0 if verdict == "Inconclusive" else 100.0)
    error_rate = Measurement(err, error="connection refused") if verdict == "Error" else \
        Measurement(err, 0.3 if verdict == "Fail" else 0.0)
    r = analyse(a, requests, [error_rate, Measurement(lat, 0.1)], stamp)
    assert r.verdict == verdict
    return r


def probe_result(a: Analysis, outcome: ProbeOutcome, stamp: str, alpha: float, suspects: int) -> AnalysisResult:
    """An in-step measurement, judged by `rollout.analysis.probe` (arguments as the controller passes them)."""
    err, lat = a.metrics
    requests = Measurement(None, error="timeout") if outcome == "nodata" else Measurement(None, 100.0)
    errors = Measurement(None, 60.0 if outcome == "failing" else 0.0)
    latency = Measurement(lat, 0.9 if outcome == "slow" else 0.1)
    return probe(a, requests, errors, [latency, Measurement(err)], stamp, alpha, suspects)


@dataclass
class Run:
    """One canary run as the model sees it: from its start to its promotion, rollback or cancellation."""

    id: int
    hash: str
    step: int = 1                                   # the step the canary is at (1-based)
    passed: set[int] = field(default_factory=set)   # steps whose end-of-step analysis passed
    fails: int = 0                                  # failed analyses (step or probe) in this run
    errors: int = 0                                 # provider errors since the last passed step
    inconclusive: int = 0                           # inconclusive analyses since the last passed step


@dataclass
class Meaning:
    """What a promote/abort request was meant for when it was made."""

    value: str
    hash: str | None = None   # bound by value to this revision
    run: int | None = None    # an unbound value: the canary run running when it was made (None: none ran)


class EngineModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.w = Cluster()
        self.live: ModelDeploymentStatus | None = None  # the status as the operator holds it in memory
        self.run: Run | None = None
        self.runs = 0
        self.served: set[str] = set()   # revisions that were the stable and were replaced
        self.failed: set[str] = set()   # revisions rolled back
        self.meant: dict[str, Meaning] = {}
        self.requeue_after: float | None = None  # the last plan's requeue hint (the controller's timer)
        self.problem_for = 0  # reconciles until the missing Secret is back
        self.pause_for = 0  # reconciles until the user resumes
        self.condition, self.condition_for = "quiet", 0  # what measurements find, for that many reconciles

    @initialize(deployed=st.booleans())
    def start(self, deployed: bool) -> None:
        """Half the runs start with v1 serving as stable, the others from nothing (the first deploy)."""
        if deployed:
            for _ in range(2):
                self.operate([Wake()], first=0)
            assert self.w.md.status.stable_model is not None

    # -- what users and the cluster do (each change usually wakes the operator: `react`) -------------
    def react(self, react: Sequence[Wake]) -> None:
        """The change's watch event (reconcile now), then the operator's timer for a while."""
        self.operate(react, first=0)

    @rule(i=st.integers(0, len(MODELS) - 1), react=REACT)
    def set_model(self, i: int, react: Sequence[Wake] = ()) -> None:
        self.w.body["spec"]["model"] = dict(MODELS[i])
        self.w.spec_changed()
        self.react(react)

    @rule(pick=st.integers(0, len(MODELS) - 1), react=REACT)
    def new_version(self, pick: int, react: Sequence[Wake]) -> None:
        """The team ships a version that is neither serving nor known bad (the common case)."""
        st_ = self.w.md.status
        fresh = [i for i, h in enumerate(HASHES) if h not in st_.failed_revisions and h != model_hash(st_.stable_model)]
        if fresh:
            self.set_model(fresh[pick % len(fresh)], react)

    @rule(steps=st.lists(st.integers(1, 100), min_size=1, max_size=4, unique=True).map(sorted), react=REACT)
    def set_steps(self, steps: list[int], react: Sequence[Wake]) -> None:
        self.w.body["spec"]["rollout"]["canary"]["steps"] = steps
        self.w.spec_changed()
        self.react(react)

    @rule(keep=st.integers(1, 3), react=REACT)
    def shorten_steps(self, keep: int, react: Sequence[Wake]) -> None:
        """Drop the last steps (perhaps those the canary is at or past)."""
        steps = self.w.body["spec"]["rollout"]["canary"]["steps"]
        if keep < len(steps):
            self.set_steps(steps[:keep], react)

    @rule(action=st.sampled_from(["promote", "abort"]),
          value=st.sampled_from(["true", "time", "canary"]) | st.sampled_from(HASHES), react=REACT)
    def request(self, action: str, value: str, react: Sequence[Wake] = ()) -> None:
        md = self.w.md
        if value == "time":
            value = fmt_time(self.w.now)
        elif value == "canary":  # the running canary's hash (or the spec's: a canary about to start)
            value = md.status.canary.hash if md.status.canary else revision_hash(md.spec.model)
        ann = ANNOTATION_PROMOTE if action == "promote" else ANNOTATION_ABORT
        self.w.body["metadata"].setdefault("annotations", {})[ann] = value
        if REVISION_HASH.match(value):
            self.meant[ann] = Meaning(value, hash=value)
        else:  # meant for the canary the user sees running (status.canary), whatever the spec says by now
            run = self.run if self.run is not None and md.status.canary is not None else None
            self.meant[ann] = Meaning(value, run=run.id if run else None)
        self.react(react)

    @rule(reconciles=st.integers(1, 6), react=REACT)
    def pause(self, reconciles: int, react: Sequence[Wake]) -> None:
        """spec.paused: true; the user resumes after that many reconciles."""
        self.w.body["spec"]["paused"] = True
        self.w.spec_changed()
        self.pause_for = reconciles
        self.react(react)

    @rule(mode=st.sampled_from(["ready", "some", "none", "stuck"]), react=REACT)
    def canary_pods(self, mode: Mode, react: Sequence[Wake]) -> None:
        """The canary's pods become ready, some of them, none (crash-looping), or stuck past the deadline."""
        self.w.mode = mode
        self.w.roll_out()
        self.react(react)

    @rule(seconds=st.integers(1, 900))
    def time_passes(self, seconds: int) -> None:
        self.w.now += timedelta(seconds=seconds)

    @rule(react=REACT)
    def switch_router(self, react: Sequence[Wake]) -> None:
        canary = self.w.body["spec"]["rollout"]["canary"]
        canary["trafficRouter"] = {"replicas": {}} if "gatewayAPI" in canary.get("trafficRouter", {}) else GATEWAY
        self.w.spec_changed()
        self.react(react)

    @rule(condition=st.sampled_from(list(CONDITIONS)), reconciles=st.integers(1, 6), react=REACT)
    def metrics(self, condition: str, reconciles: int, react: Sequence[Wake]) -> None:
        """For a while every measurement finds the same: too little traffic, Prometheus down, a faulty canary."""
        self.condition, self.condition_for = condition, reconciles
        self.react(react)

    @rule(reconciles=st.integers(1, 4), react=REACT)
    def missing_secret(self, reconciles: int, react: Sequence[Wake]) -> None:
        """A referenced Secret is deleted; the user creates it again after that many reconciles."""
        self.w.problems = [PROBLEM]
        self.problem_for = reconciles
        self.react(react)

    @rule(i=st.integers(0, len(MODELS) - 1), promote=st.booleans())
    def rolling_update(self, i: int, promote: bool) -> None:
        """strategy: Rolling for one reconcile with spec.model `i` (and perhaps a promote request, as an
        Argo CD action might send), then back to Canary."""
        rollout = self.w.body["spec"]["rollout"]
        # Rolling ignores the steps, the interval and the analysis, so the API refuses them with it.
        canary, analysis = rollout["canary"], rollout.pop("analysis")
        rollout.update(strategy="Rolling", canary={k: v for k, v in canary.items() if k == "trafficRouter"})
        self.set_model(i, react=[Wake()])
        if promote:
            self.request("promote", "true")
        rollout.update(strategy="Canary", canary=canary, analysis=analysis)
        self.w.spec_changed()

    @rule()
    def restart(self) -> None:
        """A new operator process: the status as stored (JSON), no memory of the last probe."""
        self.live = None
        self.w.last_probe_at = None

    # -- what the operator does ----------------------------------------------------------------------
    @rule(wakes=st.lists(WAKE, min_size=1, max_size=12))
    def timer(self, wakes: list[Wake]) -> None:
        """The controller's requeue timer: wake when the last plan asked to, reconcile, and again."""
        self.operate(wakes)

    @rule(advance=st.sampled_from([0, 1, 3, 5, 10, 20, 45]), wake=WAKE)
    def reconcile(self, advance: int, wake: Wake) -> None:
        """A reconcile at any time (a resync, an event of a child)."""
        self.operate([wake], first=advance)

    def operate(self, wakes: Sequence[Wake], first: int | None = None) -> None:
        """Reconcile `first` seconds from now (None: when the last plan asked to), then as each plan asks."""
        for i, wake in enumerate(wakes):
            advance = first if i == 0 and first is not None else self.requeue_after
            if advance is None:
                return
            self.reconcile_once(math.ceil(advance), wake.verdict, wake.outcome, settle=wake.then == "settle",
                                applied=wake.applied if wake.then == "crash" else None)
            if wake.then == "crash":
                self.restart()

    def running(self, md: ModelDeployment) -> Run | None:
        """The model's canary run, if it is the one running for the current spec."""
        r, st_ = self.run, md.status
        if (r is not None and md.spec.rollout.strategy == "Canary" and st_.stable_model is not None
                and st_.canary is not None and st_.canary.hash == r.hash == revision_hash(md.spec.model)):
            return r
        return None

    def meant_for(self, ann: str, annotations: dict[str, str], run: Run | None, rev: str) -> bool:
        """A request on the object when the plan ran, meant for revision `rev` (in run `run`)."""
        m = self.meant.get(ann)
        if ann not in annotations or m is None:
            return False
        assert m.value == annotations[ann]
        return m.hash == rev if m.hash is not None else (run is not None and m.run == run.id and run.hash == rev)

    def reconcile_once(self, advance: int, verdict: Verdict, outcome: ProbeOutcome, settle: bool,
                       applied: int | None = None) -> None:
        w = self.w
        w.now += timedelta(seconds=advance)
        now = w.now
        stored = w.md  # as read from the API server: the status round-tripped through JSON
        md = stored if self.live is None else stored.model_copy(update={"status": self.live})
        observed = w.observed()
        view = view_of(md, observed)
        req = measurement_due(md, view, now)
        assert req == measurement_due(stored, view_of(stored, observed), now)
        analysis = None
        if self.condition_for > 0:
            verdict, outcome = CONDITIONS[self.condition]
        if req is not None:
            a = md.spec.rollout.analysis
            if req.kind == "probe":
                w.last_probe_at = now
                analysis = probe_result(a, outcome, fmt_time(now), req.alpha, md.status.probe_failures)
            else:
                analysis = step_result(a, verdict, fmt_time(now))
            analysis.kind, analysis.revision = req.kind, req.revision

        inputs = (md.model_dump(mode="json"), repr(observed), repr(analysis))
        p = plan(md, observed, now, analysis)  # never raises
        assert (md.model_dump(mode="json"), repr(observed), repr(analysis)) == inputs, "plan changed its inputs"
        if md is not stored:
            self.check_deterministic(p, plan(stored, observed, now, analysis))

        run = self.running(md)
        self.count(md, run, analysis)
        annotations = dict(md.metadata.get("annotations") or {})
        w.write(p, applied)
        self.live = p.status
        self.requeue_after = p.requeue_after
        self.check(md, observed, analysis, annotations, run, p, crashed=applied is not None)
        self.follow(md.status, p.status)
        for ann in list(self.meant):
            if ann not in (w.body["metadata"].get("annotations") or {}):
                del self.meant[ann]
        if settle:
            w.roll_out()
        self.problem_for -= 1
        if self.problem_for <= 0:
            w.problems = []
        self.condition_for -= 1
        self.pause_for -= 1
        if self.pause_for == 0:
            w.body["spec"]["paused"] = False
            w.spec_changed()

    # -- the model --------------------------------------------------------------------------------------
    def count(self, md: ModelDeployment, run: Run | None, analysis: AnalysisResult | None) -> None:
        """What this reconcile's measurement means for the running canary, before the engine decides."""
        if run is None:
            return
        run.step = min(run.step, len(md.spec.rollout.canary.steps))  # a shortened step list: its last step
        if analysis is None or analysis.revision != run.hash:
            return
        if analysis.kind == "step" and analysis.verdict == "Pass":
            run.passed.add(run.step)
            run.step += 1
            run.errors = run.inconclusive = 0
        elif analysis.verdict == "Fail":
            run.fails += 1
        elif analysis.verdict == "Error":
            run.errors += 1
        elif analysis.verdict == "Inconclusive":
            run.inconclusive += 1

    def follow(self, before: ModelDeploymentStatus, after: ModelDeploymentStatus) -> None:
        """Track stables, rollbacks and canary runs from what this reconcile did."""
        old_stable, new_stable = model_hash(before.stable_model), model_hash(after.stable_model)
        if old_stable is not None and new_stable != old_stable:
            self.served.add(old_stable)
        self.failed |= set(after.failed_revisions)
        if after.canary is None:
            self.run = None
        elif self.run is None or before.canary is None or before.canary.hash != after.canary.hash:
            self.runs += 1
            self.run = Run(self.runs, after.canary.hash)
            assert after.current_step == 1
        else:
            assert after.current_step == self.run.step, (after.current_step, self.run)

    def check_deterministic(self, p: Plan, again: Plan) -> None:
        """The same inputs after a restart (status from JSON, nothing remembered) give the same plan."""
        assert p.actions == again.actions
        assert p.status.model_dump(mode="json") == again.status.model_dump(mode="json")
        assert p.events == again.events and p.requeue_after == again.requeue_after

    def check(self, md: ModelDeployment, observed: Observed, analysis: AnalysisResult | None,
              annotations: dict[str, str], run: Run | None, p: Plan, crashed: bool) -> None:
        spec, before, after, d = md.spec, md.status, p.status, p.decision
        assert d is not None
        canary_strategy = spec.rollout.strategy == "Canary"
        failed_now = set(after.failed_revisions)
        a = spec.rollout.analysis

        # A revision becomes stable only after every step passed for it, a promote meant for it, a fast
        # rollback to a revision that really served as stable, or as the first deploy / a Rolling update.
        old_stable, new_stable = model_hash(before.stable_model), model_hash(after.stable_model)
        if new_stable != old_stable:
            assert new_stable is not None
            all_passed = run is not None and run.hash == new_stable and \
                set(range(1, len(spec.rollout.canary.steps) + 1)) <= run.passed
            promoted = run is not None and self.meant_for(ANNOTATION_PROMOTE, annotations, run, new_stable)
            assert (old_stable is None or not canary_strategy or new_stable in self.served or all_passed
                    or promoted), f"{new_stable} made stable without analysis: {after.history[:3]}"
            if canary_strategy and old_stable is not None:
                assert new_stable not in failed_now

        # A canary is rolled back only when its analyses reached a limit, its own Deployment passed its
        # progress deadline, or an abort meant for it came (a stale abort rolls back nothing).
        new_failed = failed_now - set(before.failed_revisions)
        assert self.failed <= failed_now, "a rolled-back revision was forgotten"
        if d.rolled_back or new_failed:
            assert run is not None and d.rolled_back and new_failed == {run.hash}, (run, new_failed)
            dep = observed.canary
            stuck = dep is not None and dep["spec"]["template"]["metadata"]["labels"][LABEL_REVISION] == run.hash \
                and dep.get("status", {}).get("observedGeneration", 0) >= dep["metadata"]["generation"] \
                and any(c.get("reason") == "ProgressDeadlineExceeded" for c in dep["status"].get("conditions", []))
            v = analysis.verdict if analysis is not None and analysis.revision == run.hash else None
            by_analysis = (v == "Fail" and run.fails >= a.failure_limit) or \
                (v == "Error" and run.errors >= a.error_limit) or \
                (v == "Inconclusive" and run.inconclusive >= a.inconclusive_limit)
            aborted = self.meant_for(ANNOTATION_ABORT, annotations, run, run.hash)
            assert stuck or by_analysis or aborted, f"canary {run.hash} rolled back without a reason: {after.message}"

        # A rolled-back revision never runs again while it is remembered as failed.
        if canary_strategy:
            assert model_hash(d.canary_model) not in failed_now
            assert after.canary is None or after.canary.hash not in failed_now
            dep = self.w.objects.get(("Deployment", CANARY))
            if dep is not None and not crashed:
                rev = dep["spec"]["template"]["metadata"]["labels"][LABEL_REVISION]
                assert rev not in failed_now or dep["spec"]["replicas"] == 0

        # No traffic to a canary without a ready pod, or blocked by a problem.
        current = model_hash(d.canary_model)
        if self.w.ready_canary_pods(current) == 0 or observed.problems:
            assert after.canary_weight == 0, (after.canary_weight, self.w.pods, observed.problems)
            for (kind, _), obj in self.w.objects.items():
                if kind == "HTTPRoute" and not crashed:
                    weights = {b["name"]: b["weight"] for b in obj["spec"]["rules"][0]["backendRefs"]}
                    assert weights[CANARY] == 0, weights

        # Requeue hints: never a hot loop; a running canary (not paused) is always woken again.
        assert p.requeue_after is None or p.requeue_after >= 0.2
        if canary_strategy and after.canary is not None and after.canary.hash == revision_hash(spec.model) \
                and not spec.paused:
            assert p.requeue_after is not None


TestEngineModel = EngineModel.TestCase
TestEngineModel.settings = settings(max_examples=200, stateful_step_count=25, deadline=None, derandomize=True,
                                    database=None, suppress_health_check=[HealthCheck.too_slow])
