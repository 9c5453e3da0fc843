"""MinHash signatures and LSH banding: the pure math of near-duplicate detection (numpy, no I/O).

A document is the set of its word n-grams ("shingles"). Each word is hashed once (xxh3-64); an n-gram's hash
is a random linear combination of its words' hashes in uint64 arithmetic, of which the top 32 bits are kept.
Each of `num_perm` hash functions is `h(x) = (a*x + b) mod p` with p = 2^61 - 1 (a Mersenne prime) and
random 1 <= a < p, 0 <= b < p; `universal_hashes` computes it for 32-bit x in uint64 without overflow by
splitting a, and reduces mod p by folding (2^61 = 1 mod p). The result is the canonical residue except for a
value in [p, p + 3] standing for 0..3, a chance below 2^-58 per value, which is negligible. (a must range over
all of [1, p): with a < 2^32, a*x wraps around p at most 8 times, and the minima of different functions become
strongly correlated.) A signature is, for each function, the minimum over the document's shingles, truncated to
its low 32 bits. Two documents agree on one value with probability equal to the Jaccard similarity of their
shingle sets (plus 2^-32 for truncation collisions).

Rules for short texts: a text with fewer words than `ngram` (but at least one) is a single shingle made of all
its words; a text with no words has no shingles, and the caller must never match it with anything (its
signature is all 0xFFFFFFFF and its shingle count 0).

Memory is bounded whatever the document size: text is read in windows of about `window_chars` characters cut
at whitespace (the last n-1 word hashes carry over, so shingles are exactly those of the whole text), and the
(shingles x num_perm) matrix is computed in blocks of `_BLOCK` shingles. A run of more than `window_chars`
characters without any whitespace is the one case cut mid-run (after 2 * window_chars), which splits that run
into two words.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from itertools import repeat

import numpy as np
import xxhash

MERSENNE = np.uint64((1 << 61) - 1)
_SHIFT_61 = np.uint64(61)
_SHIFT_32 = np.uint64(32)
_SHIFT_29 = np.uint64(29)
_LOW_29 = np.uint64((1 << 29) - 1)
_LOW_32 = np.uint64(0xFFFFFFFF)
_BLOCK = 1024  # shingles per (block x num_perm) matrix: 1 MiB at 128 permutations, so it stays in cache
_WORDS = re.compile(r"\w+")
_ASCII_WORDS = re.compile(rb"\w+")
# str.split() also splits on the ASCII information separators 0x1c-0x1f, bytes.split() does not
_ASCII_SEPARATORS = bytes.maketrans(b"\x1c\x1d\x1e\x1f", b"    ")
_SPACE = re.compile(r"\s")


class MinHasher:
    """Computes MinHash signatures of texts; the same parameters and seed always give the same signatures.

    `lowercase` folds case before splitting; `normalize` makes words the runs of letters, digits and `_` (so
    punctuation and symbols are ignored), otherwise words are the whitespace-separated tokens.
    """

    def __init__(
        self,
        num_perm: int = 128,
        ngram: int = 5,
        seed: int = 1,
        lowercase: bool = True,
        normalize: bool = True,
        window_chars: int = 1 << 20,
    ) -> None:
        if num_perm < 1 or ngram < 1 or window_chars < 1:
            raise ValueError("num_perm, ngram and window_chars must be at least 1")
        rng = np.random.default_rng(seed)
        self.num_perm, self.ngram, self.window_chars = num_perm, ngram, window_chars
        self.lowercase, self.normalize = lowercase, normalize
        self.a = rng.integers(1, MERSENNE, num_perm, dtype=np.uint64)
        self.b = rng.integers(0, MERSENNE, num_perm, dtype=np.uint64)
        self.multipliers = rng.integers(0, 1 << 63, ngram, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.word_seed = int(rng.integers(0, 1 << 63))

    def windows(self, text: str) -> Iterator[str]:
        """The text in pieces of about `window_chars` characters, cut just before a whitespace character."""
        size, start = self.window_chars, 0
        while len(text) - start > size:
            found = _SPACE.search(text, start + size, start + 2 * size)
            cut = found.start() if found else start + 2 * size
            yield text[start:cut]
            start = cut
        yield text[start:]

    def word_hashes(self, piece: str) -> np.ndarray:
        """uint64 xxh3 hashes of the words of one piece of text."""
        if piece.isascii():  # most text: bytes regex and split agree with str's on ASCII, and skip re-encoding
            data = piece.encode("ascii")
            data = data.lower() if self.lowercase else data
            words = _ASCII_WORDS.findall(data) if self.normalize else data.translate(_ASCII_SEPARATORS).split()
        else:
            piece = piece.lower() if self.lowercase else piece
            found = _WORDS.findall(piece) if self.normalize else piece.split()
            # one encode for the whole piece: words never contain a space, so splitting on it restores them
            words = " ".join(found).encode("utf-8", "surrogatepass").split(b" ") if found else []
        return np.fromiter(map(xxhash.xxh3_64_intdigest, words, repeat(self.word_seed)), np.uint64, len(words))

    def shingles(self, text: str) -> Iterator[np.ndarray]:
        """The text's 32-bit shingle hashes (as uint64), window by window; nothing for a text without words."""
        keep = self.ngram - 1
        carry = np.zeros(0, dtype=np.uint64)
        total = 0
        for piece in self.windows(text):
            words = np.concatenate([carry, self.word_hashes(piece)]) if len(carry) else self.word_hashes(piece)
            total += len(words) - len(carry)
            if len(words) >= self.ngram:
                yield ngram_hashes(words, self.multipliers)
            carry = words[max(0, len(words) - keep) :] if keep else words[:0]
        if 0 < total < self.ngram:
            yield ngram_hashes(carry[-total:], self.multipliers)

    def signatures(
        self, texts: Sequence[str], shingle_sets: list[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(len(texts), num_perm) uint32 signatures, and each text's shingle count (0: never matches).

        When `shingle_sets` is a list, each text's shingle hashes (uint32, in text order, repeats included: sorting
        is left to the few that are ever compared) are appended to it.
        """
        minima = _Minima(self.a, self.b, len(texts))
        counts = np.zeros(len(texts), dtype=np.int64)
        for index, text in enumerate(texts):
            blocks = []
            for block in self.shingles(text):
                minima.add(index, block)
                counts[index] += len(block)
                if shingle_sets is not None:
                    blocks.append(block.astype(np.uint32))
            if shingle_sets is not None:
                shingle_sets.append(np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.uint32))
        return minima.result(), counts


class _Minima:
    """Every text's running minimum of every hash function, fed shingles through one fixed-size block, so
    each (num_perm x block) matrix is full-sized and reuses the same memory."""

    def __init__(self, a: np.ndarray, b: np.ndarray, n_texts: int) -> None:
        self.a, self.b = a, b
        # permutation-major (num_perm, texts): numpy reduces along the contiguous axis several times faster
        self.minima = np.full((len(a), n_texts), np.iinfo(np.uint64).max, dtype=np.uint64)
        self.shingles = np.empty(_BLOCK, dtype=np.uint64)
        self.owner = np.empty(_BLOCK, dtype=np.int64)
        self.fill = 0
        self.values = np.empty((len(a), _BLOCK), dtype=np.uint64)
        self.spare = np.empty_like(self.values)

    def add(self, index: int, shingles: np.ndarray) -> None:
        done = 0
        while done < len(shingles):
            take = min(_BLOCK - self.fill, len(shingles) - done)
            self.shingles[self.fill : self.fill + take] = shingles[done : done + take]
            self.owner[self.fill : self.fill + take] = index
            self.fill += take
            done += take
            if self.fill == _BLOCK:
                self._fold()

    def _fold(self) -> None:
        n, owner = self.fill, self.owner[: self.fill]
        starts = np.flatnonzero(np.concatenate(([True], owner[1:] != owner[:-1])))  # a text's shingles are adjacent
        values = universal_hashes(self.shingles[:n], self.a, self.b, self.values[:, :n], self.spare[:, :n])
        texts = owner[starts]
        self.minima[:, texts] = np.minimum(self.minima[:, texts], np.minimum.reduceat(values, starts, axis=1))
        self.fill = 0

    def result(self) -> np.ndarray:
        """(texts, num_perm) uint32: the low 32 bits of each minimum."""
        if self.fill:
            self._fold()
        return np.ascontiguousarray((self.minima & _LOW_32).astype(np.uint32).T)


def ngram_hashes(word_hashes: np.ndarray, multipliers: np.ndarray) -> np.ndarray:
    """32-bit hashes (as uint64) of every run of len(multipliers) consecutive words.

    With fewer words than that, the one hash of all the words. Each is the top half of
    sum_j multipliers[j] * word_hashes[i + j] in uint64 arithmetic (odd multipliers: order-sensitive).
    """
    n = min(len(multipliers), len(word_hashes))
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    count = len(word_hashes) - n + 1
    total = word_hashes[:count] * multipliers[0]
    for j in range(1, n):
        total += word_hashes[j : j + count] * multipliers[j]
    return total >> np.uint64(32)


def universal_hashes(
    x: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None, spare: np.ndarray | None = None
) -> np.ndarray:
    """(len(a), len(x)) matrix congruent to (a*x + b) mod p, p = 2^61 - 1, each value below p + 4.

    For x < 2^32 and a, b < p, without overflowing uint64: with a = a1 * 2^29 + a0 (a0 < 2^29, a1 < 2^32),
    w = a1*x < 2^64 splits into w = w_hi * 2^32 + w_lo, and since 2^61 = 1 (mod p),
    a*x = w_hi * 2^61 + w_lo * 2^29 + a0*x = w_hi + w_lo * 2^29 + a0*x (mod p): three terms below 2^61.
    `out` and `spare` are optional preallocated uint64 buffers of the result's shape (the hot loop reuses them).
    """
    if out is None:
        out = np.empty((len(a), len(x)), dtype=np.uint64)
    if spare is None:
        spare = np.empty_like(out)
    a1, a0 = (a >> _SHIFT_29)[:, None], (a & _LOW_29)[:, None]
    np.multiply(a1, x, out=out)
    np.right_shift(out, _SHIFT_32, out=spare)  # w_hi
    np.left_shift(out, _SHIFT_29, out=out)
    out &= MERSENNE  # w_lo * 2^29
    out += spare
    np.multiply(a0, x, out=spare)
    out += spare
    out += b[:, None]  # below 3 * 2^61 + 2^32: no overflow
    np.right_shift(out, _SHIFT_61, out=spare)
    out &= MERSENNE
    out += spare
    return out


def collision_probability(similarity: np.ndarray | float, bands: int, rows: int) -> np.ndarray:
    """The LSH S-curve: probability that two documents of this Jaccard similarity share at least one band."""
    return 1.0 - (1.0 - np.asarray(similarity, dtype=np.float64) ** rows) ** bands


def optimal_bands(
    threshold: float, num_perm: int, false_negative_weight: float = 0.5, grid: int = 1001
) -> tuple[int, int]:
    """The (bands, rows) with bands * rows <= num_perm minimising the weighted error around `threshold`.

    False positives are the area under the S-curve below the threshold, false negatives the area above it
    missed; the error is `(1 - w) * FP + w * FN` with w = `false_negative_weight`. Ties go to fewer bands.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {threshold}")
    below = np.linspace(0.0, threshold, grid)
    above = np.linspace(threshold, 1.0, grid)
    best, best_error = (1, num_perm), np.inf
    for bands in range(1, num_perm + 1):
        rows = np.arange(1, num_perm // bands + 1)[:, None]
        fp = np.trapezoid(collision_probability(below[None, :], bands, rows), below, axis=1)
        fn = np.trapezoid(1.0 - collision_probability(above[None, :], bands, rows), above, axis=1)
        error = (1.0 - false_negative_weight) * fp + false_negative_weight * fn
        i = int(np.argmin(error))
        if error[i] < best_error - 1e-12:
            best, best_error = (bands, i + 1), float(error[i])
    return best


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, a bijection of uint64 that spreads every input bit over the output."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def band_hashes(signatures: np.ndarray, bands: int, rows: int, seed: int = 1) -> np.ndarray:
    """(n, bands) uint64: one hash per band of `rows` signature values, each band starting from its own seed.

    Two documents fall into the same bucket of band i exactly when their values in that band are equal (up to
    a 64-bit hash collision); equal values in different bands give different hashes.
    """
    n = signatures.shape[0]
    values = signatures[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    state = np.random.default_rng(seed).integers(0, 1 << 63, bands, dtype=np.uint64)
    h = np.broadcast_to(state, (n, bands)).copy()
    for j in range(rows):
        h = _mix64(h ^ values[:, :, j])
    return h


def estimated_jaccard(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Fraction of equal values between signatures (row by row): an unbiased estimate of Jaccard similarity."""
    return np.mean(left == right, axis=-1)


def exact_jaccard(left: np.ndarray, right: np.ndarray) -> float:
    """Jaccard similarity of two sorted arrays of distinct shingle hashes (0 when both are empty)."""
    if len(left) < len(right):
        left, right = right, left
    if len(right) == 0:
        return 0.0
    at = np.minimum(np.searchsorted(left, right), len(left) - 1)
    common = int(np.count_nonzero(left[at] == right))
    return common / (len(left) + len(right) - common)
