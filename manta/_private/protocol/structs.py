"""The two kinds of struct every message module builds on.

They live apart from `messages.py` so that messages of one area can have a
module of their own (`state_messages.py`) and still join the one decoder
`messages.py` builds from every `Msg` subclass.
"""

# Annotations are not postponed: see protocol/messages.py.

import msgspec


class Msg(msgspec.Struct, array_like=True, tag=True, omit_defaults=False, frozen=True):
    pass


class Record(msgspec.Struct, array_like=True, frozen=True):
    """A value carried inside messages (not sent on its own)."""
