"""The hub's row policy (hub/supervisor.py), its run-folder files (hub/files.py) and its
processes (hub/procs.py), without a hub.

Exit codes come from real short-lived processes started with ``hub.procs.spawn``; time is
a fake ``now`` handed to the row, so backoff and stop escalation are checked to the second
without waiting for them. The stop escalation signals a real process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from hub.files import PidRecord, RunDir, rotate_log, tail_lines
from hub.procs import Proc, spawn
from hub.supervisor import (
    EXIT_MEANING,
    QUICK_S,
    STALE_AFTER_S,
    TERM_AFTER_S,
    ProcessState,
    Row,
    RowPolicy,
)
from tests.hub_harness import ROWS, alive, write_config
from worker import ipc
from worker.config_loader import load_config
from worker.core.config import InstanceConfig

WAIT_S = 15.0


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> InstanceConfig:
    config = write_config(tmp_path_factory.mktemp("cfg"), [ROWS[0]])
    return load_config(config).instances[0]


@pytest.fixture
def exited_with(tmp_path: Path) -> Iterator[Callable[[str], tuple[Proc, int | None]]]:
    """``exited_with("exit 2")`` → a real process that ran that shell script and is gone,
    with the exit code ``Proc.exited`` reports for it (negative for a signal)."""
    started: list[Proc] = []

    def run(script: str) -> tuple[Proc, int | None]:
        proc = spawn(
            ["/bin/sh", "-c", script], log=tmp_path / "child.log", env=os.environ, cwd=tmp_path
        )
        started.append(proc)
        assert proc.popen is not None
        proc.popen.wait(WAIT_S)
        done, code = proc.exited()
        assert done
        return proc, code

    yield run
    for proc in started:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)


def policy(
    start_retries: int = 5, backoff_max_s: float = 60.0, stop_grace_s: float = 30.0
) -> RowPolicy:
    return RowPolicy(
        start_retries=start_retries, backoff_max_s=backoff_max_s, stop_grace_s=stop_grace_s
    )


def hello(pid: int) -> ipc.Hello:
    return ipc.Hello(instance="btc", pid=pid, mode="SIM", version="test")


class Link:
    """The hub's side of a worker connection: records what the row sends."""

    def __init__(self) -> None:
        self.sent: list[ipc.Down] = []

    def __call__(self, command: ipc.Down) -> bool:
        self.sent.append(command)
        return True


def running(row: Row, proc: Proc, now: float, link: Link | None = None) -> None:
    row.started(proc, now)
    row.said_hello(hello(proc.pid), link if link is not None else Link(), now + 0.5)
    assert row.state is ProcessState.RUNNING


# ------------------------------------------------------------------------ exit codes


@pytest.mark.parametrize("code", [2, 3, 4])
@pytest.mark.parametrize("said_hello", [False, True])
def test_exit_codes_2_3_4_are_fatal_at_once(
    cfg: InstanceConfig,
    exited_with: Callable[[str], tuple[Proc, int | None]],
    code: int,
    said_hello: bool,
) -> None:
    proc, exit_code = exited_with(f"exit {code}")
    assert exit_code == code
    row = Row(cfg, policy())
    if said_hello:
        running(row, proc, 0.0)
    else:
        row.started(proc, 0.0)
    row.exited(exit_code, 100.0 if said_hello else 0.5)  # long-running or quick: the same
    assert row.state is ProcessState.FATAL
    assert row.proc is None and row.exit_code == code and row.quick_failures == 0
    assert row.error is not None and str(code) in row.error and EXIT_MEANING[code] in row.error
    row.tick(1000.0)
    assert row.state is ProcessState.FATAL


def test_a_clean_exit_nobody_asked_for_is_exited(
    cfg: InstanceConfig, exited_with: Callable[[str], tuple[Proc, int | None]]
) -> None:
    proc, code = exited_with("exit 0")
    assert code == 0
    row = Row(cfg, policy())
    running(row, proc, 0.0)
    row.exited(code, 50.0)
    assert row.state is ProcessState.EXITED
    assert row.exit_code == 0 and row.error is None and row.proc is None


# ------------------------------------------------------------------------------ backoff


def test_crashes_back_off_1_2_4_and_so_on_capped_at_backoff_max(
    cfg: InstanceConfig, exited_with: Callable[[str], tuple[Proc, int | None]]
) -> None:
    proc, code = exited_with("exit 1")
    assert code == 1
    row = Row(cfg, policy(start_retries=20, backoff_max_s=10))
    now = 0.0
    delays = []
    for _ in range(7):
        row.started(proc, now)
        now += 0.5
        row.exited(code, now)
        assert row.state is ProcessState.BACKOFF, row.error
        delays.append(row.retry_at - now)
        assert row.error is not None and f"restarting in {delays[-1]:g} s" in row.error
        now = row.retry_at
    assert delays == [1, 2, 4, 8, 10, 10, 10]


def test_a_signal_death_is_a_crash(
    cfg: InstanceConfig, exited_with: Callable[[str], tuple[Proc, int | None]]
) -> None:
    proc, code = exited_with("kill -9 $$")
    assert code == -signal.SIGKILL
    row = Row(cfg, policy())
    running(row, proc, 0.0)
    row.exited(code, 2.0)
    assert row.state is ProcessState.BACKOFF and row.retry_at == 3.0
    assert row.error is not None and "signal 9" in row.error


@pytest.mark.parametrize("start_retries", [0, 1, 3])
def test_fatal_after_start_retries_quick_failures(
    cfg: InstanceConfig,
    exited_with: Callable[[str], tuple[Proc, int | None]],
    start_retries: int,
) -> None:
    """``start_retries`` restarts after quick failures (supervisord's ``startretries``), then
    FATAL: the first start plus ``start_retries`` retries, all failing quickly."""
    proc, code = exited_with("exit 1")
    row = Row(cfg, policy(start_retries=start_retries, backoff_max_s=60))
    now = 0.0
    for attempt in range(start_retries + 1):
        row.started(proc, now)
        now += 1.0
        row.exited(code, now)
        if attempt < start_retries:
            assert row.state is ProcessState.BACKOFF, (attempt, row.error)
            now = row.retry_at
    assert row.state is ProcessState.FATAL
    assert row.error is not None and f"gave up after {start_retries} quick restarts" in row.error
    row.tick(now + 1000)
    assert row.state is ProcessState.FATAL


def test_a_crash_after_a_long_run_resets_the_count(
    cfg: InstanceConfig, exited_with: Callable[[str], tuple[Proc, int | None]]
) -> None:
    proc, code = exited_with("exit 1")
    row = Row(cfg, policy(start_retries=3, backoff_max_s=60))
    now = 0.0
    for expected in (1, 2, 4):  # three quick failures: one more would be FATAL
        running(row, proc, now)
        now += 2.0
        row.exited(code, now)
        assert row.state is ProcessState.BACKOFF and row.retry_at - now == expected
        now = row.retry_at
    running(row, proc, now)
    now += QUICK_S + 1  # this one ran for a while
    row.exited(code, now)
    assert row.state is ProcessState.BACKOFF, row.error
    assert row.retry_at - now == 1 and row.quick_failures == 1


def test_a_worker_that_never_said_hello_fails_quickly_however_long_it_took(
    cfg: InstanceConfig, exited_with: Callable[[str], tuple[Proc, int | None]]
) -> None:
    proc, code = exited_with("exit 1")
    row = Row(cfg, policy(start_retries=1))
    row.started(proc, 0.0)
    row.exited(code, 1.0)
    assert row.state is ProcessState.BACKOFF
    row.started(proc, 2.0)
    row.exited(code, 2.0 + 10 * QUICK_S)  # still STARTING: no Hello ever came
    assert row.state is ProcessState.FATAL


def test_the_operator_gets_fresh_retries(
    cfg: InstanceConfig, exited_with: Callable[[str], tuple[Proc, int | None]]
) -> None:
    proc, code = exited_with("exit 1")
    row = Row(cfg, policy(start_retries=0))
    row.started(proc, 0.0)
    row.exited(code, 1.0)
    assert row.state is ProcessState.FATAL
    row.reset_failures()
    row.started(proc, 5.0)
    assert row.state is ProcessState.STARTING and row.error is None and row.exit_code is None


def test_stop_while_backoff_is_stopped(
    cfg: InstanceConfig, exited_with: Callable[[str], tuple[Proc, int | None]]
) -> None:
    proc, code = exited_with("exit 1")
    row = Row(cfg, policy())
    running(row, proc, 0.0)
    row.exited(code, 3.0)
    assert row.state is ProcessState.BACKOFF
    row.stop(3.5)
    assert row.state is ProcessState.STOPPED and row.proc is None
    row.tick(1000.0)
    assert row.state is ProcessState.STOPPED


def test_exits_while_stopping_are_stopped(
    cfg: InstanceConfig, exited_with: Callable[[str], tuple[Proc, int | None]]
) -> None:
    for script, error in (("exit 0", False), ("exit 1", True), ("exit 2", True)):
        proc, code = exited_with(script)
        row = Row(cfg, policy())
        link = Link()
        running(row, proc, 0.0, link)
        row.stop(20.0)
        assert row.state is ProcessState.STOPPING and link.sent == [ipc.Stop()]
        row.exited(code, 21.0)
        assert row.state is ProcessState.STOPPED and row.exit_code == code
        assert (row.error is not None) is error, row.error


# ---------------------------------------------------------------------- other states


def test_hello_makes_a_row_running_and_silence_makes_it_stale(
    cfg: InstanceConfig, tmp_path: Path
) -> None:
    record = PidRecord.of(os.getpid())
    for state, proc in (
        (ProcessState.STARTING, Proc(record, None, None)),
        (ProcessState.UNKNOWN, Proc(record, None, None)),
    ):
        row = Row(cfg, policy())
        if state is ProcessState.STARTING:
            row.started(proc, 0.0)
        else:
            row.adopted(proc, 0.0)
        assert row.state is state and not row.stale(100.0)
        link = Link()
        row.said_hello(hello(os.getpid()), link, 1.0)
        assert row.state is ProcessState.RUNNING
        assert not row.stale(1.0 + STALE_AFTER_S)
        assert row.stale(1.0 + STALE_AFTER_S + 0.1)
        assert row.send(ipc.CancelEntry()) and link.sent == [ipc.CancelEntry()]
        row.disconnected(link)
        assert not row.send(ipc.CancelEntry())


# ------------------------------------------------------ stop escalation, a real process

CHILD = r"""
import signal, subprocess, sys, time
def term(signum, frame):
    print("TERM", flush=True)  # noted, and ignored
signal.signal(signal.SIGTERM, term)
grandchild = subprocess.Popen([sys.executable, "-c", (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('grandchild ready', flush=True)\n"
    "time.sleep(120)\n"
)])
print(f"ready {grandchild.pid}", flush=True)
while True:
    time.sleep(0.05)
"""

POLITE_CHILD = r"""
import signal, sys, time
def term(signum, frame):
    print("TERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {WAIT_S:g} s"
        time.sleep(0.02)


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def child(tmp_path: Path) -> Iterator[Callable[[str], tuple[Proc, Path]]]:
    started: list[Proc] = []

    def start(code: str) -> tuple[Proc, Path]:
        log = tmp_path / f"child{len(started)}.log"
        proc = spawn([sys.executable, "-c", code], log=log, env=os.environ, cwd=tmp_path)
        started.append(proc)
        wait_for(lambda: any(x.startswith("ready") for x in lines(log)), "ready line")
        return proc, log

    yield start
    for proc in started:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(WAIT_S)


def test_stop_escalates_from_ipc_stop_to_sigterm_to_sigkill_of_the_group(
    cfg: InstanceConfig, child: Callable[[str], tuple[Proc, Path]]
) -> None:
    grace = 30.0
    proc, log = child(CHILD)
    wait_for(lambda: "grandchild ready" in lines(log), "grandchild ready line")
    grandchild = int(next(x for x in lines(log) if x.startswith("ready")).split()[1])
    assert os.getpgid(grandchild) == proc.pid  # spawn made the worker a group leader
    row = Row(cfg, policy(stop_grace_s=grace))
    link = Link()
    running(row, proc, 0.0, link)

    row.stop(10.0)
    assert row.state is ProcessState.STOPPING and link.sent == [ipc.Stop()]
    row.stop(11.0)  # a second stop changes nothing
    assert link.sent == [ipc.Stop()]
    row.tick(10.0 + TERM_AFTER_S - 0.01)
    assert not row.term_sent

    row.tick(10.0 + TERM_AFTER_S)
    assert row.term_sent
    wait_for(lambda: "TERM" in lines(log), "SIGTERM at the child")
    row.tick(10.0 + grace - 0.01)
    time.sleep(0.3)  # a SIGKILL sent now would have landed by then
    assert proc.exited() == (False, None)
    assert alive(grandchild)
    assert lines(log).count("TERM") == 1

    row.tick(10.0 + grace)
    wait_for(lambda: proc.exited()[0], "the child to die")
    code = proc.exited()[1]
    assert code == -signal.SIGKILL
    wait_for(lambda: not alive(grandchild), "the grandchild to die with its group")
    row.exited(code, 10.0 + grace + 0.25)
    assert row.state is ProcessState.STOPPED and row.exit_code == code
    assert row.error is not None and str(code) in row.error


def test_stop_without_a_connection_sends_sigterm_at_once(
    cfg: InstanceConfig, child: Callable[[str], tuple[Proc, Path]]
) -> None:
    proc, log = child(POLITE_CHILD)
    row = Row(cfg, policy())
    row.started(proc, 0.0)  # no Hello yet: no IPC link to send Stop on
    row.stop(1.0)
    assert row.state is ProcessState.STOPPING and row.term_sent
    wait_for(lambda: proc.exited()[0], "the child to exit on SIGTERM")
    assert "TERM" in lines(log)
    assert proc.exited() == (True, 0)
    row.exited(0, 1.5)
    assert row.state is ProcessState.STOPPED and row.error is None and row.exit_code == 0


# ------------------------------------------------------------------------- hub/procs.py


def test_spawn_detaches_and_logs_to_the_file(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    log.write_text("earlier\n")
    proc = spawn(
        [sys.executable, "-c", "import os, sys; print(os.getsid(0)); sys.stderr.write('e\\n')"],
        log=log,
        env=os.environ,
        cwd=tmp_path,
    )
    assert proc.popen is not None and proc.popen.wait(WAIT_S) == 0
    assert proc.exited() == (True, 0)
    assert lines(log) == ["earlier", str(proc.pid), "e"]  # appended; its own session


def _exit(code: object, pid: object = "PID") -> str:
    """A worker's last log line; ``"PID"`` stands for the adopted process's pid."""
    return json.dumps({"ts": "t", "level": "info", "event": "exit", "code": code, "pid": pid})


def _adopted_dead(tmp_path: Path, log_lines: list[str]) -> Proc:
    """An adopted process (pid record only) that has exited, with this log."""
    log = tmp_path / "adopted.log"
    popen = subprocess.Popen([sys.executable, "-c", "pass"])
    record = PidRecord.of(popen.pid)
    popen.wait(WAIT_S)
    text = "".join(line + "\n" for line in log_lines)
    log.write_text(text.replace('"PID"', str(popen.pid)))
    proc = Proc(record, None, log)
    assert proc.adopted and not record.alive()
    return proc


def test_an_adopted_process_exit_code_comes_from_its_last_exit_line(tmp_path: Path) -> None:
    proc = _adopted_dead(tmp_path, [_exit(2)])
    assert proc.exited() == (True, 2)

    last_wins = [
        _exit(4),
        json.dumps({"event": "started"}),
        _exit(0),
        "not json {",
        json.dumps(["event", "exit"]),
        json.dumps({"event": "stopped"}),
    ]
    assert _adopted_dead(tmp_path, last_wins).exited() == (True, 0)


def test_an_adopted_process_without_an_exit_line_has_an_unknown_code(tmp_path: Path) -> None:
    assert _adopted_dead(tmp_path, []).exited() == (True, None)
    assert _adopted_dead(tmp_path, ['{"event": "started"}', "garbage"]).exited() == (True, None)
    odd = [_exit("2")]
    assert _adopted_dead(tmp_path, odd).exited() == (True, None)
    record = PidRecord.of(os.getpid())
    assert Proc(record, None, tmp_path / "missing.log").exited() == (False, None)  # alive


def test_an_exit_line_from_before_the_process_started_is_not_its_exit_code(
    tmp_path: Path,
) -> None:
    earlier = _exit(0, pid=1)  # the previous run's (another pid)
    started = json.dumps({"event": "started"})
    # this run was killed (SIGKILL, OOM): it never wrote an exit line of its own
    assert _adopted_dead(tmp_path, [earlier, started]).exited() == (True, None)


# ------------------------------------------------------------------------- hub/files.py


def test_rotate_log_copies_then_truncates_and_keeps_three(tmp_path: Path) -> None:
    log = tmp_path / "btc.log"
    assert rotate_log(log, max_bytes=10) is False  # no file yet
    with open(log, "ab") as writer:  # O_APPEND, like a worker's stdout
        writer.write(b"short\n")
        writer.flush()
        assert rotate_log(log, max_bytes=10) is False
        assert log.read_bytes() == b"short\n"
        for n in range(1, 6):
            writer.write(f"generation {n} ".encode() + b"x" * 20 + b"\n")
            writer.flush()
            assert rotate_log(log, max_bytes=10, keep=3) is True
            assert log.stat().st_size == 0
            writer.write(b"after\n")  # the writer goes on at the new end: no hole of NULs
            writer.flush()
            assert log.read_bytes() == b"after\n"
            log.write_bytes(b"")
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["btc.log", "btc.log.1", "btc.log.2", "btc.log.3"]
    for n, generation in ((1, 5), (2, 4), (3, 3)):
        assert f"generation {generation} ".encode() in (tmp_path / f"btc.log.{n}").read_bytes()


def test_tail_lines(tmp_path: Path) -> None:
    log = tmp_path / "tail.log"
    assert tail_lines(log, 5) == []
    log.write_bytes(b"".join(f"line {i}\n".encode() for i in range(100)))
    assert tail_lines(log, 3) == ["line 97", "line 98", "line 99"]
    assert len(tail_lines(log, 1000)) == 100
    cut = tail_lines(log, 1000, max_bytes=25)  # "line 96\n" … : the first, partial line dropped
    assert cut and all(x.startswith("line ") for x in cut)
    assert cut[-1] == "line 99" and "ine 96" not in cut and len(cut) <= 3
    log.write_bytes(b"ok\n\xff\xfe broken\nlast")
    assert tail_lines(log, 2) == ["\ufffd\ufffd broken", "last"]


def test_pid_records(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.create()
    assert run.path.stat().st_mode & 0o777 == 0o700
    me = PidRecord.of(os.getpid(), "http://127.0.0.1:1")
    run.write_pid("sim", me)
    assert run.read_pid("sim") == me and me.alive()
    other = PidRecord(pid=me.pid, create_time=me.create_time - 100)  # a reused pid
    assert not other.alive()
    run.forget_pid("sim", other)  # names another process: kept
    assert run.read_pid("sim") == me
    run.forget_pid("sim", me)
    assert run.read_pid("sim") is None
    run.pid_file("btc").write_text("{half a reco")
    assert run.read_pid("btc") is None

    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    record = PidRecord.of(zombie.pid)
    wait_for(lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE, "a zombie")
    assert not record.alive()  # exited but not reaped yet: dead
    zombie.wait(WAIT_S)
    assert not record.alive()
