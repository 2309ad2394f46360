"""What a task printed, made safe for its driver's terminal (runtime/terminal.py)."""

from manta._private.runtime.terminal import safe_line, safe_lines


def test_plain_text_tabs_and_unicode_pass_unchanged():
    assert safe_lines("a\tb\nünïcødé ✓\n") == ["a\tb", "ünïcødé ✓"]
    assert safe_lines("no newline") == ["no newline"]
    assert safe_lines("\n\n") == ["", ""]


def test_control_sequences_are_shown_not_sent():
    attacks = {
        "\x1b]0;pwned\x07": "\\x1b]0;pwned\\x07",              # window title (OSC)
        "\x1b]52;c;ZWNobyBoaQ==\x07": "\\x1b]52;c;ZWNobyBoaQ==\\x07",  # clipboard write (OSC 52)
        "\x1b[2J\x1b[H": "\\x1b[2J\\x1b[H",                    # clear the screen, cursor home
        "\x1b[1A\x1b[2K": "\\x1b[1A\\x1b[2K",                  # up a line, erase it
        "\x1bP$q\x1b\\": "\\x1bP$q\\x1b\\",                     # DCS request (the terminal answers)
        "\x9b6n": "\\x9b6n",                                    # C1 CSI: report the cursor (answers)
        "bell\x07\x08\x7f": "bell\\x07\\x08\\x7f",
    }
    for raw, shown in attacks.items():
        assert safe_line(raw) == shown
        assert "\x1b" not in safe_line(raw) and "\x9b" not in safe_line(raw)


def test_colours_pass_and_a_progress_bar_shows_its_last_state():
    assert safe_line("\x1b[1;31mred\x1b[0m") == "\x1b[1;31mred\x1b[0m"
    # A colour-looking sequence with another final byte is not a colour.
    assert safe_line("\x1b[31;1H") == "\\x1b[31;1H"
    assert safe_lines(" 10%\r 50%\r100%\r\ndone\r\n") == ["100%", "done"]
    # A carriage return cannot rewind over the (prefix) the driver writes first.
    assert safe_line("innocent\rEVIL\x1b[0K") == "EVIL\\x1b[0K"
