import logging

from chat.logbook import WarningSummary


def _ours(caplog):
    """The test logger's records: a thread another test left may log meanwhile."""
    return [r for r in caplog.records if r.name == "t"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_warning_of_a_kind_in_full_the_rest_in_one_summary(caplog):
    clock = Clock()
    book = WarningSummary(logging.getLogger("t"), interval=10, clock=clock)
    caplog.set_level(logging.INFO)
    for user in range(5):
        for _ in range(3):
            book.warn("cap", "dropped {amount} for {subjects} users in {seconds} s "
                      "({events} events)", user, 2, "user %d: dropped %d", user, 2)
    book.warn("other", "{events} others", None, 1, "another kind", level=logging.INFO)
    assert [r.getMessage() for r in _ours(caplog)] == ["user 0: dropped 2", "another kind"]
    clock.now += 5
    book.flush()  # the interval is not over yet
    assert len(_ours(caplog)) == 2
    clock.now += 5
    book.flush()
    assert [r.getMessage() for r in _ours(caplog)[2:]] == [
        "dropped 28 for 5 users in 10 s (14 events)"]  # "other" had nothing more
    assert _ours(caplog)[2].levelno == logging.WARNING
    book.flush()
    assert len(_ours(caplog)) == 3


def test_an_event_after_the_interval_writes_the_summary_then_itself(caplog):
    clock = Clock()
    book = WarningSummary(logging.getLogger("t"), interval=10, clock=clock)
    caplog.set_level(logging.INFO)
    book.warn("k", "{events} more", None, 1, "first")
    book.warn("k", "{events} more", None, 1, "second")
    clock.now += 11
    book.warn("k", "{events} more", None, 1, "third")
    assert [r.getMessage() for r in _ours(caplog)] == ["first", "1 more", "third"]
