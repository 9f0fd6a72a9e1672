#!/usr/bin/env python3
"""`make kind-demo`: the `make demo` story on kind, the local cluster users already have.

1. a kind cluster (hack/kindcluster.py): kind's node image where it can be pulled, else the one
   hack/kindnode.py assembles from our binaries (cached); dockerd started with guards only when
   no engine runs;
2. the images (hack/images.py, cached) put into the node with ``kind load image-archive``;
3. the operator by its Helm chart; Prometheus in the cluster with the shipped scrape config;
4-7. the shared story (hack/demostory.py): v1 Ready, faulty v2 rolled back, v3 promoted, with
   load through the model's Service.

Everything is removed at the end (the cluster, its network and route, the dockerd we started,
iptables and sysctls as found) unless KEEP=1; then `make kind-down` removes it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

HACK = Path(__file__).resolve().parent
sys.path.insert(0, str(HACK))

import clusterprom  # noqa: E402
from demostory import DIM, GREEN, RESET, Story, say  # noqa: E402
from kindcluster import KindCluster  # noqa: E402
from localcluster import bin_dir  # noqa: E402
from localoperator import InClusterOperator  # noqa: E402


def main() -> int:
    keep = os.environ.get("KEEP") == "1"
    cluster = KindCluster()
    operator: InClusterOperator | None = None
    story: Story | None = None
    ok = False
    try:
        say("1. a kind cluster (one node; the API server on 127.0.0.1)")
        cluster.up()
        print(f"  {json.dumps({k: round(v, 1) for k, v in cluster.timings.items()})}")
        print(cluster.kubectl("get", "nodes", "-o", "wide"), end="")

        say("2. images, built here without a registry (cached by their inputs), into the node with `kind load`")
        from images import OPERATOR_TAG, TEST_MODELS, model_version, operator_image, test_model_image

        prom_name, prom_archive = clusterprom.image(bin_dir() / "prometheus")
        versions = {}
        for label, build in [("operator", operator_image), ("prometheus", lambda: prom_archive)] + [
                (f"room-price:v{i}", lambda i=i: test_model_image(i)) for i in TEST_MODELS]:
            t0 = time.monotonic()
            archive = build()
            t1 = time.monotonic()
            secs = cluster.load(archive)
            print(f"  {label:<16} built/cached {t1 - t0:5.1f}s, kind load {secs:4.1f}s  {DIM}{archive.name}{RESET}")
            if label.startswith("room-price"):
                versions[label[-2:]] = model_version(archive) or "?"

        say("3. the operator by its Helm chart; Prometheus in the cluster with the shipped scrape config")
        operator = InClusterOperator(str(cluster.kubeconfig), OPERATOR_TAG, resync_seconds=10)
        operator.env = cluster.env
        operator.start()
        cluster.apply(clusterprom.manifests(prom_name))
        cluster.kubectl("rollout", "status", "deployment/prometheus", "-n", clusterprom.NAMESPACE, "--timeout=120s")
        print(cluster.kubectl("get", "pods", "-A", "-o", "wide"), end="")

        story = Story(env=cluster.env, prometheus_url=clusterprom.URL, versions=versions,
                      namespace_metadata={"labels": {"pod-security.kubernetes.io/enforce": "restricted"}})
        story.run()
        ok = True
        return 0
    finally:
        times = {**cluster.timings, **(story.timings if story else {})}
        print(f"\n{GREEN}timings (s):{RESET} {json.dumps({k: round(v, 1) for k, v in times.items()})}")
        if keep and ok:
            say(f"left running: export KUBECONFIG={cluster.kubeconfig}"
                + (f" DOCKER_HOST={cluster.docker.host}" if cluster.docker.started else ""))
            print("remove it all: make kind-down")
        else:
            say("removing the cluster and everything the demo started")
            if operator is not None and not ok:
                print(operator.logs()[-3000:], file=sys.stderr)
            cluster.down()


if __name__ == "__main__":
    sys.exit(main())
