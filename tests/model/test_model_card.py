"""The operator's card reader against a real model server: `bentoml serve` of a real artifact on 127.0.0.1,
read through `controller.cards.fetch_card` (what the operator asks a ready pod), no mock in between."""

from __future__ import annotations

import json

import pytest

from modeldeploy.api import ModelCard
from modeldeploy.controller.cards import CardError, fetch_card
from modeldeploy_model import runtime
from modeldeploy_model.testing import free_port, serve_subprocess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tiny_artifact):
    s = serve_subprocess(tiny_artifact)
    try:
        yield s
    finally:
        s.stop()


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
