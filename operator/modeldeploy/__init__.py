"""modeldeploy: a Kubernetes operator that serves BentoML models with metric-driven canaries."""

__version__ = "0.1.0"

GROUP = "modeldeploy.io"
VERSION = "v1alpha1"
PLURAL = "modeldeployments"
KIND = "ModelDeployment"
