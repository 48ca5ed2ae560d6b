"""A compacted topic replicated over three brokers: a follower that was down while the leader
cleaned catches up over the Fetch path through the cleaned region (offset gaps, emptied
batches) and rejoins the ISR; every replica runs its own cleaner; after the leader is killed,
the new leader serves the latest value of every key."""

import struct

import pytest
from confluent_kafka.admin import NewTopic

from cluster_helpers import managed_cluster, partition_states, segment_batches
from helpers import TIMEOUT, admin, consume
from test_cluster import FAILOVER_TIMEOUT, VOTERS, wait_until
from test_compaction import COMPACT, FAST_CLEANER, check_log, produce_history

RECORD_COUNT = struct.Struct(">i")  # at byte 57 of a batch


@pytest.fixture
def cluster(request, tmp_path):
    yield from managed_cluster(request, tmp_path, overrides=FAST_CLEANER)


def test_a_follower_catches_up_through_a_cleaned_region(cluster):
    topic = "replicated-table"
    a = admin(cluster.bootstrap())
    futures = a.create_topics([NewTopic(topic, 1, 3, config=COMPACT)], operation_timeout=TIMEOUT)
    futures[topic].result(TIMEOUT)

    def state():
        s = partition_states(cluster.bootstrap(), topic)
        return s[0] if s and len(s[0][2]) == 3 and s[0][0] in VOTERS else None

    leader, replicas, _ = wait_until(f"{topic} in sync", state, FAILOVER_TIMEOUT)
    lagging = next(i for i in replicas if i != leader)
    cluster.brokers[lagging].kill()
    wait_until(
        f"broker {lagging} out of the ISR",
        lambda: (lambda s: s and lagging not in s[0][2])(
            partition_states(cluster.bootstrap(), topic)
        ),
        FAILOVER_TIMEOUT,
    )

    produced = produce_history(cluster.bootstrap(), topic)
    recs = wait_until(
        "the leader cleaned",
        lambda: (lambda rs: rs if len(rs) < produced // 2 else None)(
            consume(cluster.bootstrap(), topic, [0])
        ),
        40,
    )
    check_log(recs)

    # the lagging follower comes back and copies the cleaned log at the leader's offsets
    cluster.brokers[lagging].start()
    wait_until(
        f"broker {lagging} back in the ISR",
        lambda: (lambda s: s and lagging in s[0][2])(partition_states(cluster.bootstrap(), topic)),
        FAILOVER_TIMEOUT * 2,
    )
    # its files hold the gaps: batches start past where the previous one ended, or keep fewer
    # records than their offset range
    b = cluster.brokers[lagging]
    code = b.stop()
    assert code == 0, b.log_tail(30)
    batches = segment_batches(b.data_dir / f"{topic}-0")
    assert batches[-1][1] == produced - 1, "the follower has the whole log"
    gaps = 0
    prev_last = -1
    for base, last, raw in batches:
        (count,) = RECORD_COUNT.unpack_from(raw, 57)
        gaps += int(base > prev_last + 1) + int(count < last - base + 1)
        assert base > prev_last, "offsets ascend"
        prev_last = last
    assert gaps > 0, "the follower's copy has the leader's gaps"
    b.start()
    wait_until(
        f"broker {lagging} in the ISR again",
        lambda: (lambda s: s and lagging in s[0][2])(partition_states(cluster.bootstrap(), topic)),
        FAILOVER_TIMEOUT * 2,
    )

    # the leader dies: a follower takes over and serves the same latest values
    cluster.brokers[leader].kill()
    wait_until(
        "a new leader",
        lambda: (lambda s: s and s[0][0] not in (-1, leader))(
            partition_states(cluster.bootstrap(), topic)
        ),
        FAILOVER_TIMEOUT,
    )
    recs = consume(cluster.bootstrap(), topic, [0])
    check_log(recs)
