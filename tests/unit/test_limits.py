from chat.limits import FailureThrottle, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_the_rate():
    bucket = TokenBucket(rate=4, burst=5, now=1000.0)  # times exact in binary
    assert [bucket.take(1000.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(1000.25) and not bucket.take(1000.25)
    assert [bucket.take(1000.375) for _ in range(2)] == [False, False]  # half a token
    assert bucket.take(1000.5)
    assert sum(bucket.take(1100.0) for _ in range(10)) == 5  # full again, never more


def test_failure_throttle_blocks_after_the_limit_within_the_window():
    clock = Clock()
    throttle = FailureThrottle(limit=3, window=60, clock=clock)
    for _ in range(2):
        throttle.failed("acct:1")
    assert not throttle.blocked("acct:1")
    throttle.failed("acct:1")
    assert throttle.blocked("acct:1") and not throttle.blocked("acct:2")
    clock.now += 61
    assert not throttle.blocked("acct:1")


def test_success_clears_the_key_and_memory_stays_bounded():
    clock = Clock()
    throttle = FailureThrottle(limit=1, window=1, clock=clock)
    throttle.failed("a")
    throttle.succeeded("a")
    assert not throttle.blocked("a")
    for i in range(100_001):
        throttle.failed(i)
    clock.now += 2
    throttle.failed("late")
    assert len(throttle._failures) == 1
