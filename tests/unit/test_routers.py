"""What share of traffic each canary step can get, per router: whole pods for `replicas`, exact for L7."""

from __future__ import annotations

from modeldeploy.routers import STEP_TOLERANCE_POINTS, replicas_for_steps, step_shares
from modeldeploy.routers.gatewayapi import GatewayAPIRouter
from modeldeploy.routers.replicas import ReplicasRouter


def test_whole_pods_give_one_stable_replica_half_the_traffic_at_any_small_step() -> None:
    shares = step_shares(ReplicasRouter(), [10, 25, 50], 1)
    assert [(s.step, s.share, s.canary) for s in shares] == [(10, 50, 1), (25, 50, 1), (50, 50, 1)]
    assert [s.approximate for s in shares] == [True, True, False]


def test_the_share_is_k_over_stable_plus_k() -> None:
    assert [(s.share, s.canary) for s in step_shares(ReplicasRouter(), [10, 25], 2)] == [(33, 1), (33, 1)]
    assert [(s.share, s.canary) for s in step_shares(ReplicasRouter(), [10, 25, 50], 9)] == [(10, 1), (25, 3),
                                                                                             (50, 9)]


def test_a_few_points_off_is_not_approximate() -> None:
    # 4 stable, 25 %: 1 canary pod is 20 %, 5 points off: within the tolerance.
    (s,) = step_shares(ReplicasRouter(), [25], 4)
    assert (s.share, abs(s.share - s.step)) == (20, STEP_TOLERANCE_POINTS) and not s.approximate


def test_an_l7_router_gives_every_step_exactly() -> None:
    assert not any(s.approximate for s in step_shares(GatewayAPIRouter(), [1, 10, 25, 50, 100], 1))
    assert replicas_for_steps(GatewayAPIRouter(), [1, 10]) == 1


def test_the_smallest_stable_size_that_gives_the_steps() -> None:
    assert replicas_for_steps(ReplicasRouter(), [10, 25, 50]) == 6
    assert not any(s.approximate for s in step_shares(ReplicasRouter(), [10, 25, 50], 6))
    assert any(s.approximate for s in step_shares(ReplicasRouter(), [10, 25, 50], 5))
    assert replicas_for_steps(ReplicasRouter(), [100]) is None  # the replicas router never gives a canary 100 %
