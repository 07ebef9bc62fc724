"""Spreading rollout requests over engine replicas: balanced by tokens, against brute force."""

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from roll.strategies.engine import GenerationRequest, SamplingParams, assign_to_replicas, request_cost


def test_request_cost_counts_every_sample():
    request = GenerationRequest(
        request_id="r", prompt_ids=[1, 2, 3], sampling=SamplingParams(n=4, max_new_tokens=5)
    )
    assert request_cost(request) == 4 * (3 + 5)


def test_busy_replica_gets_less_new_work():
    # Replica 0 already holds 100 tokens: new requests go to replica 1 until it catches up (ties: lowest).
    assert assign_to_replicas([50, 50, 50], [100, 0]) == [1, 1, 0]
    assert assign_to_replicas([30, 30, 30, 30], [100, 0]) == [1, 1, 1, 1]


@settings(max_examples=200, deadline=None)
@given(
    costs=st.lists(st.integers(1, 50), min_size=1, max_size=7),
    outstanding=st.lists(st.integers(0, 60), min_size=1, max_size=3),
)
def test_greedy_assignment_is_within_the_lpt_bound_of_the_best(costs, outstanding):
    replica_of = assign_to_replicas(costs, outstanding)
    assert len(replica_of) == len(costs) and all(0 <= r < len(outstanding) for r in replica_of)

    def peak(assignment):
        load = list(outstanding)
        for cost, replica in zip(costs, assignment):
            load[replica] += cost
        return max(load)

    best = min(peak(a) for a in itertools.product(range(len(outstanding)), repeat=len(costs)))
    # Greedy largest-first onto the least loaded is within the largest item of the optimum.
    assert peak(replica_of) <= best + max(costs)
    assert peak(replica_of) >= best
