"""Shared generators of the checker tests: client timelines with random overlaps."""

from __future__ import annotations

import random
from collections.abc import Iterator


def timeline(rng: random.Random, clients: int, per_client: int, max_duration: float = 3.0
             ) -> Iterator[tuple[int, float, float, float]]:
    """(client, call, ret, point) per op: each client's ops follow one another, clients
    overlap at random, and `point` (inside [call, ret]) is where the op takes effect."""
    for c in range(clients):
        t = rng.random()
        for _ in range(per_client):
            call = t + rng.random()
            ret = call + rng.random() * max_duration
            yield c, call, ret, rng.uniform(call, ret)
            t = ret
