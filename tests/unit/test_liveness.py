"""The liveness /healthz reads: the loop's thread alone beats; each wait gives its own length."""

from __future__ import annotations

import threading

from order_archiver.mongodb.connection import client_options
from order_archiver.reporting.liveness import BeatingStop, Liveness, ReplyBeats, reply_beats
from order_archiver.settings import Settings
from tests.helpers import wait_for


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


def in_thread(work) -> None:
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def test_the_thread_the_loop_waits_for_beats_for_it_only_while_it_waits():
    """The catch-up's loop waits for its reader's next chunk (``source.ReadAhead``): the reader's
    beats are the loop's then, and only then (a reader running ahead of a hung loop is no beat)."""
    clock = Clock()
    liveness = Liveness(grace_s=10, clock=clock)
    stop = BeatingStop(threading.Event(), liveness)
    beating = threading.Event()
    go_on = threading.Event()

    def reader() -> None:  # a batch from the server, each time the test says
        while not go_on.wait(0.01):
            if beating.is_set():
                stop.is_set()
                beating.clear()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        clock.now += 15
        assert liveness.overdue_s() > 4
        beating.set()  # the reader beats while the loop does not wait for it: nothing
        wait_for(lambda: not beating.is_set(), what="the reader's beat")
        assert liveness.overdue_s() > 4
        with liveness.waiting_on(thread):  # the loop, here, waits for its reader
            assert liveness.overdue_s() == 0
            clock.now += 15
            assert liveness.overdue_s() > 4
            beating.set()
            wait_for(lambda: not beating.is_set(), what="the reader's beat")
            assert liveness.overdue_s() == 0  # the reader's batch: alive
            clock.now += 15
            assert liveness.overdue_s() > 4  # no batch for longer than the grace: stuck
        beating.set()
        wait_for(lambda: not beating.is_set(), what="the reader's beat")
        assert liveness.overdue_s() > 4  # the wait is over: the reader's beats no longer count

        def not_the_loop() -> None:  # only the loop hands its beats over
            with liveness.waiting_on(thread):
                beating.set()
                wait_for(lambda: not beating.is_set(), what="the reader's beat")

        in_thread(not_the_loop)
        assert liveness.overdue_s() > 4
    finally:
        go_on.set()
        thread.join()


def test_each_reply_from_mongodb_is_a_beat_of_the_loop_that_asked_only():
    """``ReplyBeats`` on the client: a reply (a ``getMore``'s batch, an error) on the loop's thread
    is a beat; a reply on another thread (the lease's renewal) is not."""
    clock = Clock()
    liveness = Liveness(grace_s=10, clock=clock)
    listener = ReplyBeats(liveness)
    clock.now += 15
    in_thread(lambda: listener.succeeded(None))  # type: ignore[arg-type]
    assert liveness.overdue_s() > 4
    listener.started(None)  # type: ignore[arg-type]  # asked is not answered
    assert liveness.overdue_s() > 4
    listener.succeeded(None)  # type: ignore[arg-type]
    assert liveness.overdue_s() == 0
    clock.now += 15
    listener.failed(None)  # type: ignore[arg-type]
    assert liveness.overdue_s() == 0


def test_only_watchs_clients_carry_the_reply_beats():
    liveness = Liveness(grace_s=10)
    assert reply_beats(threading.Event()) == []
    assert reply_beats(None) == []
    (listener,) = reply_beats(BeatingStop(threading.Event(), liveness))
    assert isinstance(listener, ReplyBeats)
    assert listener in client_options(Settings(mongodb_uri="mongodb://h"), [listener])["event_listeners"]


class Gate(threading.Event):
    """The run's stop as the reader's wait sees it: ``inside`` once the reader waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.inside.set()
        return super().wait(timeout)


def test_a_wait_the_reader_began_before_the_loop_waits_for_it_keeps_its_length():
    """The catch-up's reader (``source.ReadAhead``) reads ahead while the loop writes; a retry's
    backoff it begins then (``retry.Backoff``: up to 30 s, longer than an allowed WATCH_LIVENESS_S
    of 15 s) says "back within 30 s" while its beats do not count yet. The loop that comes to wait
    for it meanwhile is alive until that wait ends (plus the grace): MongoDB away never fails
    /healthz (docs/configuration.md). It was 503 a grace after the loop began to wait."""
    from order_archiver.mongodb.source import read_ahead

    clock = Clock()
    gate = Gate()
    results: list[object] = []
    waiting = threading.Event()

    def loop() -> None:  # the watch loop's thread: the liveness's owner
        liveness = Liveness(grace_s=15, clock=clock)
        stop = BeatingStop(gate, liveness)
        results.append(liveness)

        def chunks():
            stop.wait(30)  # a retry's backoff on the reader's thread, begun before the loop waits
            yield "chunk"

        ahead = read_ahead(chunks(), 1, stop)
        gate.inside.wait()  # the reader is in its 30 s wait (its beat came first)
        clock.now += 5  # the loop writes its chunk meanwhile, then waits for the next one
        waiting.set()
        results.append(next(ahead))
        ahead.close()

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        wait_for(lambda: waiting.is_set() and len(results) == 1, what="the loop at its wait")
        liveness = results[0]
        assert isinstance(liveness, Liveness)
        wait_for(lambda: liveness._stand_in is not None, what="the loop waiting for its reader")
        clock.now += 20  # 25 s into the reader's 30 s wait; 20 s into the loop's own
        assert liveness.overdue_s() == 0
        clock.now += 25  # the wait plus its grace are over: stuck
        assert liveness.overdue_s() > 0
    finally:
        gate.set()
        thread.join()
    assert results[1] == "chunk"


def test_the_loop_closing_its_reader_mid_read_is_back_within_the_join():
    """A catch-up that ends mid-read (a write failed: the watcher reconnects) closes its reader
    (``ReadAhead.close``), which waits up to 30 s for the reader's current read to end: a wait
    with an end, longer than an allowed WATCH_LIVENESS_S (15 s). It said nothing of it: 503 a
    grace into the join, and a probe restarting a watcher on its way to reconnect."""
    from order_archiver.mongodb.source import read_ahead

    clock = Clock()
    release = threading.Event()
    closing = threading.Event()
    holder: list[Liveness] = []

    def loop() -> None:
        liveness = Liveness(grace_s=15, clock=clock)
        holder.append(liveness)
        stop = BeatingStop(threading.Event(), liveness)

        def chunks():
            yield "chunk"
            release.wait()  # the next chunk's read: long, and no reply yet
            yield "next"

        ahead = read_ahead(chunks(), 1, stop)
        assert next(ahead) == "chunk"
        closing.set()
        ahead.close()  # the write failed: the reader is let go

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        wait_for(closing.is_set, what="the loop closing its reader")
        clock.now += 25  # into the join's 30 s
        wait_for(lambda: holder[0].overdue_s() == 0, timeout=5, what="the loop's 30 s join said")
    finally:
        release.set()
        thread.join()
