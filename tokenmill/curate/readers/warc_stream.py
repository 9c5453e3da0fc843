"""The decompressed bytes of one WARC file, read forward, with where each gzip member starts.

Record framing (`warc_records`) reads through a `WarcStream`: it peeks and slices by position (a decompressed
offset), streams past blocks too long to hold, and, to re-synchronise after a bad record, scans for the next
record-start candidate (a `WARC/x.y` line at a line start, `CANDIDATE`, or a gzip member whose data starts
`WARC/`). Bytes come from `compressed.VerifiedReader`, so only verified data is ever seen; a damaged member is a
`hole` the framing takes as one error. `offset` turns a position into the place in the file messages name.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tokenmill.engine.compressed import Damage, VerifiedReader

CANDIDATE = re.compile(rb"(?<=\n)WARC/[01]\.\d{1,2}\r?\n")


class WarcStream:
    """The decompressed bytes of one WARC file, read forward, with the positions (decompressed offsets) where
    gzip members start. A damaged member is a `hole`: data stops there until the hole is taken."""

    def __init__(self, url: str, start: int = 0, position: int = 0, codec: str | None = "sniff") -> None:
        reader = VerifiedReader(url, codec=codec, start=start)
        self.url = url
        self.codec = reader.codec
        self._items = iter(reader)
        self.buf = bytearray()
        self.base = self.pos = position
        self.members: list[tuple[int, int]] = []  # (position, compressed offset) of each member start seen
        self.heads: dict[int, bytes] = {}  # member start position -> its first bytes
        self.hole: Damage | None = None
        self.done = False

    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    def _pull(self) -> bool:
        if self.done or self.hole is not None:
            return False
        item = next(self._items, None)
        if item is None:
            self.done = True
            return False
        if isinstance(item, Damage):
            self.hole = item
            return False
        if self.codec is not None and item.first:
            self.members.append((self.end, item.offset))
            self.heads[self.end] = item.data[:8]
        self.buf += item.data
        return True

    def available(self, n: int, at: int | None = None) -> int:
        """Bytes available (up to `n`) from position `at` (default: the read position) before the end or a hole."""
        at = self.pos if at is None else at
        while self.end - at < n and self._pull():
            pass
        return max(0, min(n, self.end - at))

    def peek(self, n: int, at: int | None = None) -> bytes:
        at = self.pos if at is None else at
        got = self.available(n, at)
        return bytes(self.buf[at - self.base : at - self.base + got])

    def slice(self, start: int, stop: int) -> bytes:
        return bytes(self.buf[start - self.base : stop - self.base])

    def at_hole(self) -> bool:
        return self.hole is not None and self.pos >= self.end

    def exhausted(self) -> bool:
        return self.available(1) == 0

    def take_hole(self) -> Damage:
        damage, self.hole = self.hole, None
        assert damage is not None
        return damage

    def search_end(self, pattern: re.Pattern[bytes], start: int, limit: int) -> int | None:
        """Where the first match of `pattern` at or after position `start`, within `limit` bytes of it, ends."""
        while True:
            begin = start - self.base
            stop = min(len(self.buf), begin + limit)
            match = pattern.search(self.buf, begin, stop)
            if match is not None:
                return self.base + match.end()
            if stop - begin >= limit or not self._pull():
                return None

    def compact(self) -> None:
        """Forget bytes (and member starts) before the read position."""
        drop = self.pos - self.base
        if drop > 0:
            del self.buf[:drop]
            self.base = self.pos
        keep = [m for m in self.members if m[0] >= self.pos]
        earlier = [m for m in self.members if m[0] < self.pos]
        self.members = earlier[-1:] + keep
        self.heads = {p: h for p, h in self.heads.items() if p >= self.pos}

    def skip(self, n: int, sink: Callable[[bytes, int], None]) -> int:
        """Consume up to `n` bytes without keeping them, handing each stretch (and its position) to `sink`."""
        done = 0
        while done < n:
            got = self.available(min(n - done, 1 << 20))
            if not got:
                break
            sink(self.slice(self.pos, self.pos + got), self.pos)
            self.pos += got
            done += got
            del self.buf[: self.pos - self.base]
            self.base = self.pos
        return done

    def offset(self, position: int) -> str:
        """Where `position` is in the file, for messages: the byte offset (uncompressed), or the compressed offset
        of the gzip member holding it, plus how far into that member's data it lies when not at its start."""
        if self.codec is None:
            return str(position)
        holder = [m for m in self.members if m[0] <= position]
        if not holder:
            return f"? ({position} bytes into the decompressed data)"
        start, compressed = holder[-1]
        return str(compressed) if start == position else f"{compressed} (+{position - start} bytes into its member)"

    def restart(self, position: int) -> None:
        """Read again from `position` (behind the read position): from the member holding it, or the file offset."""
        if self.codec is None:
            fresh = WarcStream(self.url, start=position, position=position, codec=None)
        else:
            start, compressed = [m for m in self.members if m[0] <= position][-1]
            fresh = WarcStream(self.url, start=compressed, position=start, codec=self.codec)
        self.__dict__.update(fresh.__dict__)
        self.skip(position - self.pos, lambda data, at: None)

    def scan(self, start: int) -> int | None:
        """Move to the first record-start candidate at or after `start` (a `WARC/x.y` line at a line start, or a
        member whose data starts `WARC/`); None, at the end or a hole, when there is none."""
        self.pos = max(start, self.base)
        while True:
            i = self.pos - self.base
            found = [p for p, head in self.heads.items() if p >= self.pos and head.startswith(b"WARC/")]
            match = CANDIDATE.search(self.buf, i)
            if match is not None:
                found.append(self.base + match.start())
            if found:
                self.pos = min(found)
                return self.pos
            if not self._pull():
                self.pos = self.end
                return None
            self.pos = max(self.pos, self.end - 32)  # what was searched and cannot start a candidate is dropped
            self.compact()
