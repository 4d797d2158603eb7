"""The one progress bar (private): downloads and training epochs draw it on a stream."""

from __future__ import annotations

WIDTH = 30


class ProgressBar:
    """``show(label, done, total, extra)`` redraws one line in place; ``clear()`` blanks it
    and ``finish()`` ends it with a newline.  Disabled (a no-op) unless ``enabled`` is True,
    or ``None`` and the stream is a terminal."""

    def __init__(self, stream, enabled: bool | None = None):
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else bool(enabled)
        self.drawn = False

    def show(self, label: str, done: int, total: int | None, extra: str = "") -> None:
        if not self.enabled:
            return
        if total:
            bar = "#" * (WIDTH * done // total)
            line = f"{label} [{bar:.<{WIDTH}}] {extra}"
        else:
            line = f"{label} {extra}"
        self.stream.write("\r" + line)
        self.stream.flush()
        self.drawn = True

    def clear(self) -> None:
        if self.drawn:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()
            self.drawn = False

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
