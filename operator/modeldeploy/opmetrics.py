"""The operator's own Prometheus metrics (scraped from the operator pod's metrics port).

Names follow Prometheus conventions under the `modeldeploy_` prefix; the chart's
ServiceMonitor and PrometheusRule alerts refer to them by these names.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("modeldeploy_reconciles_total", "Reconciles of ModelDeployments, by result.",
                     ["result"])
RECONCILE_ERRORS = Counter("modeldeploy_reconcile_errors_total", "Reconciles that raised, by exception type.",
                           ["error"])
RECONCILE_DURATION = Histogram("modeldeploy_reconcile_duration_seconds", "Time to reconcile one object.",
                               buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
API_WRITES = Counter("modeldeploy_api_writes_total", "Write requests sent to the API server.", ["kind", "verb"])
MANAGED = Gauge("modeldeploy_managed_objects", "ModelDeployments known to this operator.")
LEADER = Gauge("modeldeploy_leader", "1 while this replica may reconcile: it holds the leader Lease, or runs "
               "without leader election.")
QUEUE_DEPTH = Gauge("modeldeploy_workqueue_depth", "Keys waiting in the reconcile queue.")
PHASE = Gauge("modeldeploy_phase", "1 for the current phase of each ModelDeployment.",
              ["namespace", "name", "phase"])
CANARY_WEIGHT = Gauge("modeldeploy_canary_weight", "Canary traffic percent.", ["namespace", "name"])
ANALYSIS = Counter("modeldeploy_analysis_total", "Canary analyses by metric and verdict.",
                   ["namespace", "name", "metric", "verdict"])
PROMOTIONS = Counter("modeldeploy_promotions_total", "Canaries promoted to stable.", ["namespace", "name"])
ROLLBACKS = Counter("modeldeploy_rollbacks_total", "Canaries rolled back.", ["namespace", "name"])
