"""The substring tables of multi-index hashing (``HammingIndex(kind="mih")``): planned, built, searched.

How the search works and why it is exact: :mod:`tfhash._mih`. This module chooses the substrings (the paper's
m ~ b / log2(n), checked against the codes themselves: :func:`plans`), builds the tables by counting sorts
(linear in n) and runs the kernels over threads.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from tfhash import _kernels, _mih
from tfhash import codes as codes_lib

LONGEST_SUBSTRING = 32  # the kernels read a substring as one 64-bit word from at most 5 bytes


def plans(bits: int, count: int) -> list[list[tuple[int, int]]]:
    """The substrings worth trying for ``count`` codes of ``bits`` bits, each ``[(first bit, length)]``: m =
    b / log2(n) (Norouzi et al., Sec. 4.1), rounded down and rounded to nearest (at least 2 substrings, none
    longer than 32 bits), lengths as equal as the code length allows. The paper's m fits uniformly random
    codes; codes of real images crowd into few buckets, where fewer, longer substrings read far fewer rows, so
    :meth:`SubstringTables.build` keeps whichever reads less on the codes themselves (BENCHMARKS.md (s) gives
    the plan each collection kept)."""
    exact = bits / math.log2(max(count, 2))
    out = []
    for m in sorted({math.floor(exact), round(exact)}):
        m = min(bits, max(2, m, math.ceil(bits / LONGEST_SUBSTRING)))
        lengths = [bits // m + (j < bits % m) for j in range(m)]
        chosen = [(sum(lengths[:j]), length) for j, length in enumerate(lengths)]
        if chosen not in out:
            out.append(chosen)
    return out


SAMPLE_QUERIES = 16  # codes of the collection searched to compare plans


def _sample(codes):
    """:data:`SAMPLE_QUERIES` codes drawn from ``codes`` (fixed seed): the queries plans are compared on."""
    return codes[np.random.default_rng(0).choice(codes.shape[0], min(SAMPLE_QUERIES, codes.shape[0]), replace=False)]


def direct_bits(lengths: np.ndarray, count: int) -> np.ndarray:
    """The low bits of each substring a table of ``count`` rows addresses directly: log2(count) + 2, so a probe
    mostly lands in a bucket of its own key and the offsets take at most 4 times the rows' memory (at most
    ``DIRECT_BITS``, at most the substring)."""
    return np.minimum(np.minimum(lengths, _mih.DIRECT_BITS), int(math.log2(max(count, 1))) + 2)


class SubstringTables:
    """Tables over the first ``count`` rows of a code array: for substring j, ``offsets[bases[j] + v]`` ..
    ``offsets[bases[j] + v + 1]`` delimit the rows in ``rows[j]`` whose substring j has low ``directs[j]`` bits v
    (ordered by the substring's high bits, then by row)."""

    def __init__(self, substrings: list, directs: list, offsets: np.ndarray, rows: np.ndarray, count: int) -> None:
        self.substrings = [(int(start), int(length)) for start, length in substrings]
        self.starts = np.array([start for start, _ in self.substrings], np.int64)
        self.lengths = np.array([length for _, length in self.substrings], np.int64)
        self.directs = np.array(directs, np.int64)
        self.bases = np.concatenate([[0], np.cumsum(2 ** self.directs + 1)[:-1]]).astype(np.int64)
        self.offsets, self.rows, self.count = offsets, rows, int(count)

    @classmethod
    def build(cls, codes: np.ndarray, bits: int) -> SubstringTables:
        """Tables of every row of ``codes`` ``[n, bytes]``, of the plan that reads fewest rows for k = 10
        searches of :data:`SAMPLE_QUERIES` codes drawn from ``codes`` (fixed seed); linear in n per plan."""
        candidates = plans(bits, codes.shape[0])
        sample = _sample(codes)
        best, least = None, np.iinfo(np.int64).max
        for substrings in reversed(candidates):  # the paper's m first; the other is counted until it costs more
            tables = cls._built(codes, bits, substrings)
            if len(candidates) == 1:
                return tables
            spent = tables.work(sample, codes, min(10, codes.shape[0]), least)
            if best is None or spent < least:
                best, least = tables, spent
        best._sample_work = least / len(sample)
        return best

    def sample_work(self, codes: np.ndarray) -> float:
        """Buckets probed and rows read per k = 10 search of :data:`SAMPLE_QUERIES` codes drawn from ``codes``
        (the tabled ones; counted once, on first use)."""
        if getattr(self, "_sample_work", None) is None:
            sample = _sample(codes[:self.count])
            self._sample_work = self.work(sample, codes, min(10, self.count), np.iinfo(np.int64).max) / len(sample)
        return self._sample_work

    def work(self, queries: np.ndarray, codes: np.ndarray, k: int, budget: int) -> int:
        return _mih.work(queries, codes_lib.as_words(queries), codes, codes_lib.as_words(codes), self.starts,
                         self.lengths, self.directs, self.bases, self.offsets, self.rows, self.count, k, budget)

    @classmethod
    def _built(cls, codes, bits, substrings):
        count = codes.shape[0]
        directs = direct_bits(np.array([length for _, length in substrings]), count)
        small = count < 2**31  # 4-byte rows and offsets below 2**31 rows
        offsets = np.empty(int(np.sum(2 ** directs + 1)), np.int32 if small else np.int64)
        rows = np.empty((len(substrings), count), np.uint32 if small else np.int64)
        tables = cls(substrings, directs, offsets, rows, count)
        for j, (start, length) in enumerate(substrings):
            base = tables.bases[j]
            _mih.build_table(codes, count, start, length, int(directs[j]), offsets[base:base + 2 ** directs[j] + 1],
                             rows[j])
        return tables

    def check(self, where: str) -> None:
        """Refuses tables whose offsets do not delimit their rows (a damaged file)."""
        for j, direct in enumerate(self.directs):
            part = self.offsets[self.bases[j]:self.bases[j] + 2 ** direct + 1]
            if part[0] != 0 or part[-1] != self.count or np.any(np.diff(part) < 0):
                raise ValueError(f"{where}: the offsets of substring table {j} do not delimit its rows (damaged).")

    def nearest(self, queries: np.ndarray, codes: np.ndarray, k: int, run: Callable) -> tuple[np.ndarray, np.ndarray]:
        """``(distances, rows)`` ``[nq, k]`` of the k nearest tabled rows (k <= count), ties by row.
        ``run(n_queries, worker)`` splits the queries over threads."""
        query_words, words = codes_lib.as_words(queries), codes_lib.as_words(codes)
        out_distances = np.empty((queries.shape[0], k), np.int32)
        out_rows = np.empty((queries.shape[0], k), np.int64)
        scan = np.zeros(queries.shape[0], bool)

        def worker(start, stop):
            _mih.knn(queries, query_words, codes, words, self.starts, self.lengths, self.directs, self.bases,
                     self.offsets, self.rows, self.count, k, out_distances, out_rows, scan, start, stop)

        run(queries.shape[0], worker)
        if scan.any():  # the queries the tables would answer more slowly: scanned, exactly as the flat index does
            scanned = query_words[scan]
            distances, rows = np.empty((scanned.shape[0], k), np.int32), np.empty((scanned.shape[0], k), np.int64)
            _kernels.knn(scanned, words, k, distances, rows, 0, scanned.shape[0])
            out_distances[scan], out_rows[scan] = distances, rows
        return out_distances, out_rows

    def within(self, queries: np.ndarray, codes: np.ndarray, radius: int, run: Callable) -> tuple:
        """``(counts, distances, rows)`` of every tabled row within ``radius`` of each query."""
        query_words, words = codes_lib.as_words(queries), codes_lib.as_words(codes)
        scan = np.zeros(queries.shape[0], bool)

        def worker(start, stop):
            return _mih.within_radius(queries, query_words, codes, words, self.starts, self.lengths, self.directs,
                                      self.bases, self.offsets, self.rows, self.count, radius, scan, start, stop)

        parts = run(queries.shape[0], worker)
        counts, distances, rows = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                                   np.concatenate([p[2] for p in parts]))
        if scan.any():  # scanned instead, as the flat index does, and put in their queries' places
            found = _kernels.within_radius(query_words[scan], words, radius, 0, int(scan.sum()))
            ends = np.cumsum(counts)
            per_query = [(distances[end - n:end], rows[end - n:end]) for n, end in zip(counts, ends)]
            lims = np.concatenate([[0], np.cumsum(found[0])])
            for i, q in enumerate(np.flatnonzero(scan)):
                per_query[q] = found[1][lims[i]:lims[i + 1]], found[2][lims[i]:lims[i + 1]]
                counts[q] = found[0][i]
            distances = np.concatenate([d for d, _ in per_query]) if per_query else distances
            rows = np.concatenate([r for _, r in per_query]) if per_query else rows
        return counts, distances, rows

    @property
    def nbytes(self) -> int:
        return self.offsets.nbytes + self.rows.nbytes
