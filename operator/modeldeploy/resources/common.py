"""Names, labels, owner references and the revision hash shared by every builder."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from modeldeploy import GROUP, KIND, VERSION
from modeldeploy.api import ModelDeployment, ModelSpec

Track = Literal["stable", "canary"]

MANAGED_BY = "modeldeploy"
# Server-side apply field managers: ours, and the one that holds a Deployment's `replicas` while
# it passes from us to an HPA (see reconcile.plan: a field only we own would be deleted).
FIELD_MANAGER = "modeldeploy"
HANDOVER_MANAGER = "modeldeploy-handover"
LABEL_NAME = "modeldeploy.io/name"
LABEL_TRACK = "modeldeploy.io/track"
LABEL_REVISION = "modeldeploy.io/revision"
ANNOTATION_BENTO = "modeldeploy.io/bento"

_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9._-]")


def label_value(text: str) -> str:
    """Make any string a valid label value (<= 63 chars, alphanumeric at both ends)."""
    v = _LABEL_VALUE_BAD.sub("_", text)[:63]
    return v.strip("._-")


def revision_hash(model: ModelSpec) -> str:
    """Stable hash of everything that shapes the model pods; a new hash is a new revision.

    Unset optional fields are left out, so a later operator version that adds an optional field
    (as `runAsUser` was added) keeps the hashes of existing objects and starts no canary of its own.
    """
    canon = json.dumps(model.model_dump(by_alias=True, mode="json", exclude_none=True), sort_keys=True,
                       separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:10]


def child_names(name: str) -> set[str]:
    """Every name the children of ModelDeployment `name` can have (see the two functions below)."""
    return {name, f"{name}-canary", f"{name}-stable"}


def deployment_name(md: ModelDeployment, track: Track) -> str:
    return md.name if track == "stable" else f"{md.name}-canary"


def track_service_name(md: ModelDeployment, track: Track) -> str:
    """Per-track Services, used by the Gateway API and Istio routers."""
    return f"{md.name}-{track}"


def selector_labels(md: ModelDeployment, track: Track | None = None) -> dict[str, str]:
    labels = {LABEL_NAME: md.name}
    if track is not None:
        labels[LABEL_TRACK] = track
    return labels


def common_labels(md: ModelDeployment, track: Track | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": label_value(md.name),
        "app.kubernetes.io/instance": label_value(md.name),
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **selector_labels(md, track),
    }
    return labels


def owner_reference(md: ModelDeployment) -> dict[str, Any]:
    """Children are owned by the ModelDeployment, so deleting it garbage-collects them."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": md.name,
        "uid": md.metadata.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(md: ModelDeployment, name: str, track: Track | None = None,
             annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": md.namespace,
        "labels": common_labels(md, track),
        "ownerReferences": [owner_reference(md)],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


def controlled_by(obj: dict[str, Any], md: ModelDeployment) -> bool:
    """Is `obj` ours to change: its controller owner reference is this ModelDeployment (by uid)?"""
    uid = md.metadata.get("uid")
    return any(ref.get("controller") and ref.get("kind") == KIND and ref.get("uid") == uid
               for ref in obj.get("metadata", {}).get("ownerReferences") or [])


def owner_of(obj: dict[str, Any]) -> str:
    """Who an object belongs to, in words, for a NameConflict message."""
    meta = obj.get("metadata", {})
    refs = meta.get("ownerReferences") or []
    ref = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    if ref is not None:
        who = f"{ref.get('kind')} {ref.get('name')!r}"
        if ref.get("kind") == KIND:
            who += f" (uid {ref.get('uid')}, not this one's)"
        return "owned by " + who
    managers = [m.get("manager") for m in meta.get("managedFields") or [] if m.get("manager")]
    return f"no owner, written by {', '.join(dict.fromkeys(managers))}" if managers else "no owner"
