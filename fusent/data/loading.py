"""What every file decoder shares: a per-file error with a kind and a reason, and a decoded value with findings.

A decoder raises ``LoadError`` for input that cannot be used at all (the sample then goes on without that
modality), and returns ``Decoded`` for input that can: its ``problems`` (reported, e.g. a silent clip) and ``notes``
(counted, e.g. a stereo file mixed down) travel with the value so the feature cache can replay them on a hit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: The name of an input given as bytes or an array rather than a file: left out of messages, which then say only what
#: is wrong (the caller knows which field it gave).
IN_MEMORY = "<bytes>"


class LoadError(ValueError):
    """What is wrong (``kind``, e.g. ``corrupt_audio``; ``reason``) with which file (``name``); str() says both.

    Subclasses (``ImageLoadError``, ``AudioLoadError``) only name the modality; the feature cache stores any of them.
    """

    def __init__(self, kind: str, reason: str, name: str = IN_MEMORY):
        super().__init__(reason if name.startswith("<") else f"{reason}: {name}")
        self.kind, self.reason, self.name = kind, reason, name

    def for_file(self, name: str) -> LoadError:
        """The same error about another file (a cached failure is stored without its file name)."""
        return type(self)(self.kind, self.reason, name)


@dataclass
class Decoded(Generic[T]):
    """A decoded input, with what was wrong but tolerable (``problems``: kind -> message) and what was converted
    (``notes``: kinds, counted in ``ProblemReport.notes``)."""

    value: T
    problems: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def decoded(value: Any) -> Decoded[Any]:
    """Wrap the output of a decoder that has nothing to report (text, images)."""
    return Decoded(value)
