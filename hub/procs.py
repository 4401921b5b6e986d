"""Processes the hub starts or adopts: detached, logging straight to files, signalled per group.

A worker or the simulator runs in its own session (``start_new_session``) with its stdout
and stderr on an ``O_APPEND`` log file in ``run_dir``: never a pipe to the hub, so a dead hub
cannot block or kill it, and Ctrl-C on the hub's terminal never reaches it. A process the
hub started itself is a ``Popen`` (its exit code is known); one adopted after a hub restart is
known by its pid record only, and its exit code is read from its log's last ``exit`` line
when it wrote one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from hub.files import PidRecord, tail_lines

__all__ = ["Proc", "spawn"]


class Proc:
    """One running process, started here (``popen``) or adopted (``record`` only)."""

    def __init__(
        self, record: PidRecord, popen: subprocess.Popen[bytes] | None, log: Path | None
    ) -> None:
        self.record = record
        self.popen = popen
        self.log = log
        self._ps: psutil.Process | None = None

    @property
    def pid(self) -> int:
        return self.record.pid

    @property
    def adopted(self) -> bool:
        return self.popen is None

    def exited(self) -> tuple[bool, int | None]:
        """``(True, code)`` once the process is gone; ``code`` is ``None`` when unknown (an
        adopted process that wrote no ``exit`` line) and negative for a signal."""
        if self.popen is not None:
            code = self.popen.poll()
            return (code is not None, code)
        if self.record.alive():
            return (False, None)
        return (True, self._logged_exit_code())

    def _logged_exit_code(self) -> int | None:
        """The code of this process's own ``exit`` line (it carries the pid): an earlier run
        of the instance may have left its own exit line in view."""
        if self.log is None:
            return None
        for line in reversed(tail_lines(self.log, 20)):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("event") != "exit":
                continue
            code = record.get("code")
            if record.get("pid") != self.pid or not isinstance(code, int):
                return None
            return code
        return None

    def signal_group(self, signum: signal.Signals) -> None:
        """Signal the process group the process leads (its children go with it)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def usage(self) -> tuple[float, int] | None:
        """CPU percent since the previous call, and resident memory in bytes."""
        try:
            if self._ps is None:
                self._ps = psutil.Process(self.pid)
                self._ps.cpu_percent(None)  # the first call only starts the measurement
            with self._ps.oneshot():
                return self._ps.cpu_percent(None), self._ps.memory_info().rss
        except psutil.Error:
            return None


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str],
    cwd: Path,
    url: str | None = None,
) -> Proc:
    """Start a detached process writing to ``log``; returns it with its pid record."""
    with open(log, "ab") as out:  # O_APPEND: a copy-truncate rotation never leaves a hole
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    try:
        record = PidRecord.of(popen.pid, url)
    except psutil.Error:  # it died at once: keep the pid so its exit code is still collected
        record = PidRecord(pid=popen.pid, create_time=0.0, url=url)
    return Proc(record, popen, log)
