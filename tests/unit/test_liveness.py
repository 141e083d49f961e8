"""The liveness /healthz reads: the loop's thread alone beats; each wait gives its own length."""

from __future__ import annotations

import threading

from order_archiver.reporting.liveness import BeatingStop, Liveness


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_wait_is_alive_for_its_length_and_another_threads_waits_do_not_count():
    clock = Clock()
    liveness = Liveness(grace_s=10, clock=clock)
    stop = BeatingStop(threading.Event(), liveness)
    stop.wait(0.01)  # the loop: "back within 0.01 s" (a 30 s backoff says 30 s)
    clock.now += 10
    assert liveness.overdue_s() == 0
    clock.now += 5
    assert liveness.overdue_s() > 4  # stuck: past its wait plus the grace
    # The lease's renewal thread waits on the same stop: it must not keep a hung loop alive.
    renewal = threading.Thread(target=lambda: (stop.wait(0.01), stop.is_set()))
    renewal.start()
    renewal.join()
    assert liveness.overdue_s() > 4
    assert not stop.is_set()  # the loop looks at its stop: a turn, alive again
    assert liveness.overdue_s() == 0
    stop.stop.set()  # the signal handler sets the run's own stop
    assert stop.is_set()
    assert stop.wait(5)
