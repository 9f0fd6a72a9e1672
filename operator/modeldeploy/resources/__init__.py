"""Pure builders: typed spec in, plain Kubernetes object dicts out. No I/O, no client imports.

One module per managed kind. Every builder is deterministic for a given ModelDeployment, so the
reconciler can compare its output with what is in the cluster and write only on difference.
"""
