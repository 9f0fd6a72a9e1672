"""The BentoML service: one class that serves any artifact the pipeline produced.

Why one generic class: the operator deploys, and the canary tests run, the same service for every
model; what differs is only the artifact directory (``MODELDEPLOY_ARTIFACT_DIR``) or, inside a
built Bento, the model stored under the alias ``modeldeploy-model``.

Endpoints
    POST /predict   ``{"rows": [[...], ...]}`` or ``{"rows": [{"area": ..}, ...]}`` -> list of floats.
                    Adaptive batching (BentoML's dispatcher) merges concurrent requests.
    POST /explain   same body (at most 32 rows) -> SHAP attributions per row.
    GET  /metadata  the model card (metrics, gate, parity, data hash, versions).
    GET  /livez /readyz /metrics   BentoML's own.

Every malformed body is rejected by validation *before* batching, so it gets a 400 naming the
row and column at fault, and never poisons a batch of other people's requests.

Metrics (on top of BentoML's ``bentoml_service_request_total`` / ``..._duration_seconds``):
    modeldeploy_prediction{model_name, model_version}                 predicted values
    modeldeploy_input_feature_zscore{feature, model_name, model_version}  inputs as z-scores
    against the training split, so one bucket layout fits every feature: inputs against training.
    modeldeploy_input_feature{feature, model_name, model_version}  inputs in their own units on
    one fixed 1-2-5 layout (INPUT_BUCKETS): the same bounds for every model version, so the
    operator's input-drift check compares the canary's inputs with the stable's bin by bin (two
    versions trained on different data z-score one input differently, and a discrete feature's
    point masses then sit on different sides of a bucket bound).

A bad request is the client's mistake, answered with a 4xx that says why: the server logs one
warning line for it (method, path, status, reason) instead of BentoML's traceback per request.

Fault injection for demos and canary tests, off by default, read once at worker start:
    MODELDEPLOY_FAULT_ERROR_RATE  fraction 0..1 of /predict calls answered with HTTP 500
    MODELDEPLOY_FAULT_LATENCY_MS  milliseconds added to every /predict call
It is an ASGI middleware inside BentoML's metrics middleware, so injected errors are counted as
``http_response_code="500"`` like real ones.
"""

import asyncio
import gc
import json
import logging
import math
import os
import random
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
from bentoml.validators import ContentType
from pydantic import BeforeValidator

from modeldeploy_model import config, faults
from modeldeploy_model.runtime import ArtifactError, load_card, load_predictor

logger = logging.getLogger("modeldeploy_model.service")

# BentoML wraps every request in an OpenTelemetry span even when nothing exports them; that is about
# a quarter of the worker's CPU per /predict. Tracing is therefore off unless asked for: set
# OTEL_SDK_DISABLED=false (and BentoML's tracing exporter options) to turn it back on.
os.environ.setdefault("OTEL_SDK_DISABLED", "true")

ZSCORE_BUCKETS = (-4.0, -3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
# 0, +-0.1 .. +-500000 in 1-2-5 steps: 43 bounds, the same for every feature and model version.
INPUT_BUCKETS = tuple(sorted({0.0} | {s * m * 10.0**e for s in (-1, 1) for e in range(-1, 6) for m in (1, 2, 5)}))

# BentoML logs every exception an endpoint raises, a rejected request body too, with its traceback.
BENTOML_REQUEST_LOGGER = "bentoml._internal.server.http_app"


def _client_error(exc: BaseException | None) -> tuple[int, str] | None:
    """(status, reason) when `exc` is a rejected request (4xx), else None."""
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        errors = exc.errors(include_context=False, include_input=False)
        if not errors:
            return 400, exc.title
        where = ".".join(str(x) for x in errors[0]["loc"])
        msg = str(errors[0]["msg"]).removeprefix("Value error, ")
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return 400, f"{where}: {msg}{more}" if where else f"{msg}{more}"
    if isinstance(exc, BentoMLException) and int(exc.error_code) < 500:
        return int(exc.error_code), str(exc)
    return None


class OneLineClientErrors(logging.Filter):
    """Turns BentoML's "Exception on /predict" error + traceback for a 4xx into one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = _client_error(record.exc_info[1] if record.exc_info else None)
        if found is None:
            return True
        status, reason = found
        path, method = record.args if isinstance(record.args, tuple) and len(record.args) == 2 else ("?", "?")
        record.msg, record.args = "bad request %s %s -> %d: %s", (method, path, status, reason[:300])
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.exc_info, record.exc_text = None, None
        return True


logging.getLogger(BENTOML_REQUEST_LOGGER).addFilter(OneLineClientErrors())

# The card of the model this process serves; set once when the service instance starts. Request
# validation needs the feature names and runs before the service method is called.
_STATE: dict[str, Any] = {}


def resolve_artifact_dir() -> Path:
    """MODELDEPLOY_ARTIFACT_DIR if set, else the Bento's model (alias ``modeldeploy-model``)."""
    env = os.environ.get(config.ENV_ARTIFACT_DIR)
    if env:
        return Path(env)
    try:
        return Path(bentoml.models.get(config.BENTO_MODEL_ALIAS).path)
    except Exception as exc:
        raise ArtifactError(
            f"no model to serve: set {config.ENV_ARTIFACT_DIR}=<artifact dir> (e.g. `modeldeploy serve "
            f"--artifact WORKDIR/artifact`) or serve a Bento built by `modeldeploy package` ({exc})"
        ) from exc


def _feature_names() -> list[str]:
    if "features" not in _STATE:
        card = load_card(resolve_artifact_dir())
        _STATE["features"] = [f["name"] for f in card["features"]]
    names: list[str] = _STATE["features"]
    return names


def _number(value: Any, where: str) -> float:
    # bool is an int in Python; a JSON true/false in a feature is a client bug, not 1.0/0.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        shown = json.dumps(value)[:40] if not isinstance(value, float) else repr(value)
        raise ValueError(f"{where}: expected a number, got {shown}")
    f = float(value)
    if not math.isfinite(f):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return f


def parse_rows(value: Any, max_rows: int = config.MAX_ROWS_PER_REQUEST) -> np.ndarray:
    """Turn the request's ``rows`` into a float32 matrix or raise ValueError saying what is wrong."""
    names = _feature_names()
    n = len(names)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list):
        raise ValueError(f"'rows' must be a list of rows (each a list of {n} numbers or an object "
                         f"with keys {names}), got {type(value).__name__}")
    if not value:
        raise ValueError("'rows' is empty: send at least one row")
    if len(value) > max_rows:
        raise ValueError(f"too many rows: {len(value)} > {max_rows} per request; split the request")
    out = np.empty((len(value), n), dtype=np.float32)
    for i, row in enumerate(value):
        if isinstance(row, dict):
            missing = [k for k in names if k not in row]
            extra = [k for k in row if k not in names]
            if missing or extra:
                raise ValueError(f"row {i}: expected keys {names}; missing {missing}, unknown {extra}")
            row = [row[k] for k in names]
        if not isinstance(row, list):
            raise ValueError(f"row {i}: expected a list of {n} numbers ({', '.join(names)}), "
                             f"got {type(row).__name__}")
        if len(row) != n:
            raise ValueError(f"row {i}: expected {n} values ({', '.join(names)}), got {len(row)}")
        for j, v in enumerate(row):
            out[i, j] = _number(v, f"row {i}, feature '{names[j]}'")
    return out


def _parse_explain_rows(value: Any) -> np.ndarray:
    return parse_rows(value, max_rows=config.MAX_ROWS_PER_EXPLAIN)


PredictRows = Annotated[np.ndarray, BeforeValidator(parse_rows)]
ExplainRows = Annotated[np.ndarray, BeforeValidator(_parse_explain_rows)]
# A fixed content type: otherwise BentoML derives it from the output's JSON schema on every response.
Predictions = Annotated[np.ndarray, ContentType("application/json")]


class FaultInjectionMiddleware:
    """Names the answering model version on /predict responses, and injects faults per the environment.

    Every /predict response (an injected 500 too) carries `x-model-version`: behind one Service,
    a client can tell which version answered and measure the real traffic split. A fraction of
    calls are answered with 500 and all are delayed when fault injection is on.
    """

    def __init__(self, app: Any, paths: tuple[str, ...] = ("/predict",)) -> None:
        self.app = app
        self.paths = paths
        settings = faults.from_env(os.environ)
        self.error_rate = settings.error_rate
        self.latency_s = settings.latency_ms / 1000.0
        if self.error_rate or self.latency_s:
            logger.warning("fault injection on: error rate %.3f, added latency %.0f ms",
                           self.error_rate, self.latency_s * 1000)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        version = str(_STATE.get("card", {}).get("version", "unknown")).encode()

        async def send_with_version(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-model-version", version)]}
            await send(message)

        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.error_rate and random.random() < self.error_rate:
            # Read the request first: a server that closes with unread bytes in the socket sends a
            # TCP reset, and a client sees "connection reset" instead of this 500.
            message = await receive()
            while message.get("type") == "http.request" and message.get("more_body"):
                message = await receive()
            body = json.dumps({"error": f"injected fault ({config.ENV_FAULT_ERROR_RATE}={self.error_rate:g})"}).encode()
            await send_with_version({"type": "http.response.start", "status": 500,
                                     "headers": [(b"content-type", b"application/json"),
                                                 (b"content-length", str(len(body)).encode())]})
            await send_with_version({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send_with_version)


def _make_metadata_app() -> Any:
    """GET /metadata: the model card. A mounted ASGI app because BentoML APIs are POST-only."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def metadata(_: Request) -> JSONResponse:
        return JSONResponse(_STATE.get("card", {}))

    return Starlette(routes=[Route("/metadata", metadata, methods=["GET"])])


@bentoml.service(
    name="modeldeploy_model",
    workers=1,
    traffic={"timeout": 30},
    endpoints={"livez": "/livez", "readyz": "/readyz"},
    metrics={"enabled": True},
    logging={"access": {"enabled": os.environ.get(config.ENV_ACCESS_LOG, "").lower() in ("1", "true", "yes")}},
)
class ModelService:
    def __init__(self) -> None:
        self.artifact_dir = resolve_artifact_dir()
        self.card = load_card(self.artifact_dir)
        self.predictor = load_predictor(self.artifact_dir)
        self.model_name = str(self.card.get("name", config.DEFAULT_MODEL_NAME))
        self.model_version = str(self.card.get("version", "unknown"))
        features = self.card["features"]
        self.feature_names = [f["name"] for f in features]
        self.feature_mean = np.array([f.get("mean", 0.0) for f in features], dtype=np.float64)
        std = np.array([f.get("std", 1.0) for f in features], dtype=np.float64)
        self.feature_std = np.where(std > 0, std, 1.0)
        _STATE["card"] = self.card
        _STATE["features"] = self.feature_names
        self._explainer: Any = None
        self.prediction_hist = bentoml.metrics.Histogram(
            name="modeldeploy_prediction",
            documentation="Predicted values, by model version",
            labelnames=["model_name", "model_version"],
            buckets=tuple(self.card.get("target", {}).get("buckets") or (0.0,)),
        ).labels(model_name=self.model_name, model_version=self.model_version)
        self.feature_hists = self._per_feature("modeldeploy_input_feature_zscore",
                                               "Input features as z-scores against the training split",
                                               ZSCORE_BUCKETS)
        self.input_hists = self._per_feature("modeldeploy_input_feature",
                                             "Input features in their own units on one fixed layout", INPUT_BUCKETS)
        # Everything loaded so far lives as long as the process: keep it out of the garbage collector's
        # scans, and collect young objects less often - GC pauses were the p99 tail under load.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        logger.info("serving %s:%s (%s runtime) from %s", self.model_name, self.model_version,
                    self.predictor.runtime, self.artifact_dir)

    def _per_feature(self, name: str, documentation: str, buckets: tuple[float, ...]) -> list[Any]:
        """One histogram child per input feature, labelled with this model's name and version."""
        hist = bentoml.metrics.Histogram(name=name, documentation=f"{documentation}, by model version",
                                         labelnames=["feature", "model_name", "model_version"], buckets=buckets)
        return [hist.labels(feature=n, model_name=self.model_name, model_version=self.model_version)
                for n in self.feature_names]

    def _observe(self, X: np.ndarray, y: np.ndarray) -> None:
        for v in y.tolist():
            self.prediction_hist.observe(v)
        z = (X - self.feature_mean) / self.feature_std
        for j, hist in enumerate(self.feature_hists):
            for v in z[:, j].tolist():
                hist.observe(v)
        for j, hist in enumerate(self.input_hists):
            for v in X[:, j].tolist():
                hist.observe(v)

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=config.MAX_BATCH_SIZE,
                 max_latency_ms=config.MAX_LATENCY_MS)
    async def predict(self, rows: PredictRows) -> Predictions:
        X = np.asarray(rows, dtype=np.float32)
        y = self.predictor.predict(X)
        self._observe(X, y)
        return y

    @bentoml.api
    def explain(self, rows: ExplainRows) -> dict[str, Any]:
        if self._explainer is None:
            from modeldeploy_model.explain import from_artifact

            self._explainer = from_artifact(self.artifact_dir, self.predictor)
        out: dict[str, Any] = self._explainer.explain(np.asarray(rows, dtype=np.float64)).to_dict()
        out["model_version"] = self.model_version
        return out


# The decorator returns a bentoml Service object; its type is not visible to mypy through the class.
ModelService.add_asgi_middleware(FaultInjectionMiddleware)  # type: ignore[attr-defined]
ModelService.mount_asgi_app(_make_metadata_app(), path="/")  # type: ignore[attr-defined]
