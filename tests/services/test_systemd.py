"""sd_notify over a real AF_UNIX datagram socket, and the service frame around a main loop."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from falcon.services import systemd
from falcon.services.loop import ServiceControl, run_service

from .sdsocket import NotifySocket


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    sock = NotifySocket(abstract=request.param == "abstract")
    monkeypatch.setenv("NOTIFY_SOCKET", sock.address)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()


def test_ready_watchdog_stopping_and_status_arrive(notify_socket: NotifySocket) -> None:
    assert systemd.notify_ready("warming up")
    assert systemd.notify_watchdog()
    assert systemd.notify_status("two lines\nbecome one")
    assert systemd.notify_stopping()
    notify_socket.wait_for("STOPPING=1")
    assert notify_socket.messages == [
        "READY=1\nSTATUS=warming up", "WATCHDOG=1", "STATUS=two lines become one", "STOPPING=1",
    ]


def test_everything_is_a_no_op_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not systemd.notify_ready()
    assert not systemd.notify_watchdog()
    assert not systemd.notify_stopping()


def test_a_dead_socket_is_logged_not_raised(monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify")
    assert not systemd.notify_ready()
    assert "sd_notify to /nonexistent/notify failed" in caplog.text
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert not systemd.notify_ready()


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert systemd.watchdog_interval({}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    mine = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    assert systemd.watchdog_interval(mine) == 0.5
    # The variables were meant for another process (our parent): not ours to answer.
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_service_loop_pings_the_watchdog_and_stops_on_sigterm(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # ping every 0.05 s
    loops = 0

    def body(control: ServiceControl) -> int:
        nonlocal loops
        control.ready("up")
        while not control.wait(0.02):
            loops += 1
            if notify_socket.fields().count("WATCHDOG=1") >= 3:
                os.kill(os.getpid(), signal.SIGTERM)
        return 3

    previous = signal.getsignal(signal.SIGTERM)
    assert run_service(body, name="test") == 3
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers are put back
    notify_socket.wait_for("STOPPING=1")
    fields = notify_socket.fields()
    assert fields[:2] == ["READY=1", "STATUS=up"]
    assert fields[-2:] == ["STOPPING=1", "STATUS=received SIGTERM"]
    assert fields.count("WATCHDOG=1") >= 3
    assert loops > 0


def test_run_service_in_a_thread_skips_signals_and_sends_stopping_on_error(
    notify_socket: NotifySocket,
) -> None:
    def body(control: ServiceControl) -> int:
        control.ready()
        raise RuntimeError("boom")

    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_service(body, name="test")
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    assert [str(e) for e in errors] == ["boom"]
    notify_socket.wait_for("STOPPING=1")
