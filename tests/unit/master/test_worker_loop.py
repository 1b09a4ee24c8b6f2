"""The worker's loop: selector callbacks in SelectorKey.data and a timer heap."""

from __future__ import annotations

import selectors
import socket

from mailgate.worker.loop import Loop


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
