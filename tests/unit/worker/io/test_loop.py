"""The worker's loop: a callback per registered socket and a timer heap."""

from __future__ import annotations

import selectors
import socket
import weakref

from mailgate.worker.io.loop import COMPACT_AFTER, Loop


def test_timers_run_in_due_order() -> None:
    loop = Loop()
    ran: list[str] = []
    loop.call_later(0.02, lambda: ran.append("late"))
    loop.call_later(0.0, lambda: ran.append("early"))
    while len(ran) < 2:
        loop.run_once(max_wait=0.1)
    assert ran == ["early", "late"]


def test_cancelled_timer_does_not_run() -> None:
    loop = Loop()
    ran: list[str] = []
    loop.cancel(loop.call_later(0.0, lambda: ran.append("x")))
    loop.run_once(max_wait=0.01)
    assert ran == []


def test_ready_socket_calls_the_callback_in_its_key() -> None:
    loop = Loop()
    left, right = socket.socketpair()
    masks: list[int] = []
    loop.selector.register(left, selectors.EVENT_READ, masks.append)
    right.send(b"x")
    loop.run_once(max_wait=1.0)
    assert masks == [selectors.EVENT_READ]
    left.close()
    right.close()


def test_a_failing_callback_is_reported_and_the_loop_goes_on() -> None:
    failures: list[tuple[str, object]] = []
    loop = Loop(on_error=lambda err, owner: failures.append((str(err), owner)))
    ran: list[str] = []

    class Broken:
        def fire(self) -> None:
            raise RuntimeError("bug")

    broken = Broken()
    loop.call_later(0, broken.fire)
    loop.call_later(0, lambda: ran.append("next"))
    loop.run_once(0)
    assert failures == [("bug", broken)]
    assert ran == ["next"]
    loop.close()


def test_a_cancelled_timer_lets_go_of_its_callback() -> None:
    # A closed session cancels its timeout timer, which stays in the heap until its due time:
    # it must not keep the session alive that long.
    loop = Loop()

    class Owner:
        def fire(self) -> None:
            raise AssertionError("cancelled")

    owner = Owner()
    gone = weakref.ref(owner)
    loop.cancel(loop.call_later(60, owner.fire))
    del owner
    assert gone() is None
    loop.close()


def test_cancelled_timers_do_not_pile_up_in_the_heap() -> None:
    loop = Loop()
    timers = [loop.call_later(60, lambda: None) for _ in range(3 * COMPACT_AFTER)]
    for timer in timers:
        loop.cancel(timer)
    assert len(loop._timers) <= COMPACT_AFTER + 1
    ran: list[str] = []
    loop.call_later(0, lambda: ran.append("due"))
    loop.run_once(0)
    assert ran == ["due"]
    loop.close()


def test_cancelling_a_timer_that_already_ran_changes_nothing() -> None:
    loop = Loop()
    ran: list[str] = []
    timer = loop.call_later(0, lambda: ran.append("once"))
    loop.run_once(0)
    loop.cancel(timer)
    loop.run_once(0)
    assert ran == ["once"]
    loop.close()
