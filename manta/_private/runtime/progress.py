"""Progress bars drawn by the driver (`manta.experimental.tqdm_ray`).

A bar in a task or an actor does not draw itself: its worker's stdout
goes to the driver among other lines, and bars redrawn there with
carriage returns would interleave with them. Instead the bar sends its
state, as a line of its own (`PROGRESS_PREFIX` + JSON), at most every
flush interval; the driver's `Bars` keeps every bar's last state and draws
them: on a terminal at the bottom, redrawn in place, with other output
printed above them (the bars are cleared, the lines written, the bars
drawn again); elsewhere (a file, a pipe, CI) one line per state received,
so a log shows each update once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from manta._private.protocol.tool_messages import PROGRESS_PREFIX
from manta._private.runtime.terminal import safe_line

_WIDTH = 24  # characters of the bar itself
# Bars the driver keeps at most: states come from tasks, which may send any number.
MAX_BARS = 1000


@dataclass(slots=True)
class BarState:
    uuid: str
    desc: str = ""
    n: float = 0
    total: float | None = None
    unit: str = "it"
    position: int = 0
    pid: int = 0
    ip: str = ""
    started: float = 0.0  # wall clock when the bar was made
    closed: bool = False

    def to_line(self) -> str:
        return PROGRESS_PREFIX + json.dumps({
            "uuid": self.uuid, "desc": self.desc, "n": self.n, "total": self.total, "unit": self.unit,
            "position": self.position, "pid": self.pid, "ip": self.ip, "started": self.started,
            "closed": self.closed,
        }) + "\n"

    @classmethod
    def from_line(cls, line: str) -> BarState | None:
        """None for a line that is not a well-formed state (it came from a task: anything goes)."""
        try:
            d = json.loads(line[len(PROGRESS_PREFIX):])
            total = d.get("total")
            return cls(uuid=str(d["uuid"]), desc=str(d.get("desc") or ""), n=float(d.get("n") or 0),
                       total=float(total) if total is not None else None, unit=str(d.get("unit") or "it"),
                       position=int(d.get("position") or 0), pid=int(d.get("pid") or 0), ip=str(d.get("ip") or ""),
                       started=float(d.get("started") or 0.0), closed=bool(d.get("closed")))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def render(s: BarState, now: float) -> str:
    elapsed = max(0.0, now - s.started) if s.started else 0.0
    rate = s.n / elapsed if elapsed > 0 else 0.0
    n = f"{s.n:g}"
    # A worker's bar says whose it is; the driver's own bars (no ip) need not.
    where = f" (pid={s.pid}, ip={safe_line(s.ip)})" if s.ip else ""
    desc = safe_line(s.desc) + ": " if s.desc else ""
    unit = safe_line(s.unit)
    timing = f"[{_clock(elapsed)}, {rate:.2f}{unit}/s]"
    if s.total:
        frac = min(1.0, max(0.0, s.n / s.total))
        filled = int(frac * _WIDTH)
        bar = "#" * filled + "-" * (_WIDTH - filled)
        return f"{desc}{frac * 100:3.0f}%|{bar}| {n}/{s.total:g} {timing}{where}"
    return f"{desc}{n}{unit} {timing}{where}"


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Bars:
    """The driver's bars. Thread-safe: states come from the I/O thread (tasks'
    output) and from the driver's own bars on any thread."""

    def __init__(self, stream: IO[str], is_tty: bool | None = None, clock: Callable[[], float] = time.time) -> None:
        self.stream = stream
        self.is_tty = stream.isatty() if is_tty is None else is_tty
        self.clock = clock
        self.bars: dict[tuple[int, str], BarState] = {}
        self._printed: dict[tuple[int, str], float] = {}  # not a terminal: the n last printed per bar
        self._drawn = 0  # lines of bars on the terminal now
        self._lock = threading.Lock()

    def update(self, state: BarState) -> None:
        key = (state.pid, state.uuid)
        with self._lock:
            if not self.is_tty:
                # One line per update; closing a bar whose last update was printed prints nothing more.
                if self._printed.get(key) != state.n or not state.closed:
                    self.stream.write(render(state, self.clock()) + "\n")
                    self.stream.flush()
                if state.closed:
                    self._printed.pop(key, None)
                else:
                    self._printed[key] = state.n
                    _bound(self._printed)
                return
            self._clear()
            if state.closed:
                self.bars.pop(key, None)
                # Left in the scrollback as it ended.
                self.stream.write(render(state, self.clock()) + "\n")
            else:
                self.bars[key] = state
                _bound(self.bars)
            self._draw()

    def write(self, text: str, stream: IO[str] | None = None) -> None:
        """Other output (to `stream`, default the bars' own): above the bars on a terminal."""
        out = stream or self.stream
        with self._lock:
            if not self.bars or not self.is_tty:
                out.write(text)
                out.flush()
                return
            self._clear()
            self.stream.flush()
            out.write(text)
            out.flush()
            self._draw()

    def _clear(self) -> None:
        if self._drawn:
            # Up to the first bar's line, then erase to the end of the screen.
            self.stream.write(f"\x1b[{self._drawn}A\r\x1b[J")
            self._drawn = 0

    def _draw(self) -> None:
        import shutil

        now = self.clock()
        size = shutil.get_terminal_size()
        # A line wider than the terminal would wrap, and the cursor moves up by lines drawn;
        # more bars than its height would scroll away.
        width, room = max(20, size.columns - 1), max(1, size.lines - 2)
        shown = sorted(self.bars.values(), key=lambda b: (b.position, b.pid, b.started))
        for state in shown[:room]:
            self.stream.write(render(state, now)[:width] + "\n")
            self._drawn += 1
        if len(shown) > room:
            self.stream.write(f"... and {len(shown) - room} more bars\n"[:width + 1])
            self._drawn += 1
        self.stream.flush()


def _bound(table: dict[Any, Any]) -> None:
    while len(table) > MAX_BARS:
        del table[next(iter(table))]  # the oldest bar first


_bars: Bars | None = None
_bars_lock = threading.Lock()


def bars(stream: IO[str] | None = None) -> Bars:
    """This driver's bars, made at first use on its stdout."""
    global _bars
    with _bars_lock:
        if _bars is None:
            import sys

            _bars = Bars(stream or sys.stdout)
        return _bars


def take_progress(lines: list[str]) -> list[str]:
    """Hands the progress lines among a task's output lines to the bars;
    returns the others."""
    rest = []
    for line in lines:
        if line.startswith(PROGRESS_PREFIX):
            state = BarState.from_line(line)
            if state is not None:
                bars().update(state)
        else:
            rest.append(line)
    return rest


def has_bars() -> bool:
    return _bars is not None and bool(_bars.bars)


def emit(state: BarState, write: Callable[[str], Any]) -> None:
    """A worker's bar: its state as one line of its output (to the driver)."""
    write(state.to_line())
