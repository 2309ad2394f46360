"""Text from other processes made safe to write to a terminal.

A task's output is printed on its driver's terminal, and a task is code
the driver's user may not control (a library, another user's actor). Raw
control characters there can move the cursor over earlier output, retitle
the window, write the clipboard (OSC 52), or make the terminal answer with
bytes the shell then reads as typed input. So every control character but
newline and tab is shown as an escape (`\\x1b`), and no sequence reaches
the terminal, except two harmless ones that tasks use all the time:
- colours and styles (SGR: `ESC [ digits;... m`), which only set how the
  next characters look;
- a carriage return within a line, as a progress bar redraws itself: the
  line is shown as the terminal would leave it, its text after the last one.
"""

from __future__ import annotations

import re

# SGR only: its parameters are digits and separators, and its final byte is 'm'.
_SGR = r"\x1b\[[0-9;:]{0,32}m"
_CONTROL = r"[\x00-\x08\x0b-\x1f\x7f-\x9f]"
_UNSAFE = re.compile(f"({_SGR})|{_CONTROL}")


def _shown(match: re.Match[str]) -> str:
    if match.group(1):
        return match.group(1)
    return f"\\x{ord(match.group(0)):02x}"


def safe_line(line: str) -> str:
    """One line (no newline in it) as it may be written to a terminal."""
    if line.isprintable():
        return line  # most lines: nothing to do
    if "\r" in line:
        line = next((part for part in reversed(line.split("\r")) if part), "")
    return _UNSAFE.sub(_shown, line)


def safe_lines(text: str) -> list[str]:
    """`text`'s lines (split at newlines only) as they may be written to a terminal."""
    lines = text.split("\n")
    if lines and not lines[-1]:
        lines.pop()  # text ending with a newline has no empty last line
    return [safe_line(line) for line in lines]
