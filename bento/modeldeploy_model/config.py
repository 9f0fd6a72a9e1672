"""Every knob of the model side in one place, with the reason for its default.

Why one module: the service, the test harness, the CLI and the benchmark must agree on
environment variable names and defaults; the canary end-to-end tests depend on the exact
fault-injection names, so they are defined once here and nowhere else.
"""

from __future__ import annotations

# --- environment variables read by the served model (service.py) -----------------------------

# Directory of a pipeline artifact to serve. Set by `modeldeploy serve --artifact` and by
# `modeldeploy_model.testing.serve_subprocess`; unset inside a built Bento, where the model comes
# from BentoML's model store through the alias below.
ENV_ARTIFACT_DIR = "MODELDEPLOY_ARTIFACT_DIR"

# Fraction (0..1) of /predict calls answered with HTTP 500. Off (0) by default; used by demos and
# by the canary tests to make a canary fail its error-rate analysis.
ENV_FAULT_ERROR_RATE = "MODELDEPLOY_FAULT_ERROR_RATE"

# Milliseconds added to every /predict call. Off (0) by default; makes a canary fail latency-p99.
ENV_FAULT_LATENCY_MS = "MODELDEPLOY_FAULT_LATENCY_MS"

# "true" turns on BentoML's per-request access log. Off by default: at thousands of requests per
# second one log line per request costs ~10% of the worker's CPU, and /metrics has the counts.
ENV_ACCESS_LOG = "MODELDEPLOY_ACCESS_LOG"

# --- packaging ---------------------------------------------------------------------------------

# The alias under which a Bento refers to its model (bentofile `models: [{tag, alias}]`), so one
# generic service class can serve whichever model the Bento was built with.
BENTO_MODEL_ALIAS = "modeldeploy-model"

# Default BentoML model / Bento name.
DEFAULT_MODEL_NAME = "room_price"

# --- serving -----------------------------------------------------------------------------------

# Adaptive batching: at most this many rows per model call ...
MAX_BATCH_SIZE = 256
# ... and the latency budget (ms) of BentoML's adaptive dispatcher: it sizes batches to stay under
# it and answers 503 ("overloaded") when queueing alone would exceed it. 1 s: well above any sane
# p99 target (so a healthy server under load does not shed requests), well below client timeouts.
MAX_LATENCY_MS = 1000

# Rows per /predict request; larger payloads are refused with 413-like 400s before they reach the
# model (protects the batcher from one huge request).
MAX_ROWS_PER_REQUEST = 1024

# Rows per /explain request: SHAP is orders of magnitude slower than predict.
MAX_ROWS_PER_EXPLAIN = 32

# Histogram buckets for predictions and input features are derived per feature from the training
# data (quantiles), so the same buckets mean the same thing for stable and canary: this many.
HISTOGRAM_BUCKETS = 10

# --- pipeline defaults -------------------------------------------------------------------------

DEFAULT_SEED = 42
DEFAULT_ROOM_PRICE_SAMPLES = 2000
VALIDATION_FRACTION = 0.2
TEST_FRACTION = 0.2

# Parity: an exported model may differ from the original by at most this fraction of the target's
# standard deviation on any test row, and its test RMSE by at most this relative amount.
PARITY_MAX_ABS_FRACTION_OF_STD = 0.02
PARITY_MAX_RMSE_RELATIVE_DELTA = 0.01
