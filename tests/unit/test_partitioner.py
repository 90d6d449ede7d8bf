"""The memoized partitioner places every key exactly where Kafka's default partitioner does."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner

from gateway.publisher import _CachedPartitioner


@pytest.mark.parametrize("partitions", [1, 3, 6, 12])
def test_same_partition_as_the_default_partitioner(partitions: int) -> None:
    cached, default = _CachedPartitioner(size=4), DefaultPartitioner()
    everyone = list(range(partitions))
    keys = [f"demo|learner-{n}|assessment-{n % 3}".encode() for n in range(50)]
    for key in keys + keys:  # the second pass is answered from the memo (and its evictions)
        assert cached(key, everyone, everyone) == default(key, everyone, everyone)
