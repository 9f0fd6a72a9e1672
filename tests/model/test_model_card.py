"""The operator's card reader against a real model server: `bentoml serve` of a real artifact on 127.0.0.1,
read through `controller.cards.fetch_card` (what the operator asks a ready pod), no mock in between."""

from __future__ import annotations

import json

import pytest

from modeldeploy.api import ModelCard
from modeldeploy.controller.cards import CardError, fetch_card
from modeldeploy_model import runtime
from modeldeploy_model.testing import free_port

pytestmark = pytest.mark.slow


def test_fetch_card_from_a_served_model(server, tiny_artifact):
    host, port = "127.0.0.1", server.port
    card = fetch_card(host, port)
    on_disk = runtime.load_card(tiny_artifact)
    assert card == ModelCard.from_card(on_disk)
    assert card.version == on_disk["version"] and card.kind == "ridge" and card.runtime == on_disk["runtime"]
    assert card.data_hash == on_disk["data_hash"] and card.gate is not None and card.gate.passed
    assert card.rmse == pytest.approx(on_disk["evaluation"]["metrics"]["test"]["rmse"])
    assert card.summary.startswith(f"ridge {on_disk['version'][:8]} ")
    assert len(json.dumps(card.model_dump(by_alias=True, mode="json", exclude_none=True))) < 1000


def test_fetch_card_from_nothing_fails_within_its_timeout():
    with pytest.raises(CardError, match="metadata"):
        fetch_card("127.0.0.1", free_port(), timeout=2.0)


def test_bento_card_reads_the_card_of_a_built_bento(tiny_artifact):
    """A built Bento refers to its model in BentoML's model store: the card labels come from there."""
    from modeldeploy_model.deploy import bento_card, containerize_command, image_labels
    from modeldeploy_model.package import package

    res = package(tiny_artifact, name="card_test")
    assert res.bento_tag is not None
    card = bento_card(res.bento_tag)
    assert card == runtime.load_card(tiny_artifact)
    cmd = containerize_command(res.bento_tag, "localhost/card-test:1", "buildah", None)
    labels = image_labels(card)
    assert all(f"label={k}={v}" in cmd for k, v in labels.items())
    assert bento_card("card_test:no-such-version") is None
