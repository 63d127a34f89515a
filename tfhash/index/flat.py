"""The exact index: brute-force Hamming distance with compiled kernels, saved as appendable segments."""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np

from tfhash import _kernels
from tfhash import codes as codes_lib
from tfhash.index import format as fmt
from tfhash.index.base import RowIndex, encoder_description


class HammingIndex(RowIndex):
    """Exact search by brute-force Hamming distance, with compiled kernels (``tfhash._kernels``): counting
    selection for ``search``, a counting sort of the hits for ``range_search``. Both scan the database in
    cache-sized blocks, so their memory is that of their results. Saved segments are memory-mapped; codes
    added after loading are held in memory beside them and saved as a new segment.

    Args:
        bits: code length; codes must be ``ceil(bits / 8)`` bytes wide.
        n_jobs: worker threads (queries are split between them); ``None`` uses every core.
    """

    backend = "numpy"
    kind = "flat"

    def __init__(self, bits, *, n_jobs=None):
        super().__init__(bits)
        self.n_jobs = n_jobs
        self._mapped = []  # codes of the saved segments (memory-mapped), never changed
        self._pending = []  # codes added since: joined into self._memory before a search
        self._memory = np.empty((0, self.width), np.uint8)

    def _store(self, codes):
        self._pending.append(np.array(codes, copy=True))  # a value: the caller may refill its array

    def _segments(self):
        """``(codes, first row)`` of each stored part, in row order (call under the lock)."""
        if self._pending:
            self._memory = np.concatenate([self._memory] + self._pending)
            self._pending = []
        parts, start = [], 0
        for codes in self._mapped + [self._memory]:
            if codes.shape[0]:
                parts.append((codes, start))
            start += codes.shape[0]
        return parts

    def _options(self):
        return {"n_jobs": self.n_jobs}

    def _run(self, queries, worker):
        """Splits the queries over threads; ``worker(start, stop)`` fills its rows of the outputs."""
        n_jobs = _kernels.threads_for(queries.shape[0], self._rows, self.n_jobs)
        bounds = np.linspace(0, queries.shape[0], n_jobs + 1).astype(int)
        if n_jobs == 1:
            return [worker(0, queries.shape[0])]
        with concurrent.futures.ThreadPoolExecutor(n_jobs) as pool:
            return list(pool.map(lambda b: worker(*b), zip(bounds[:-1], bounds[1:])))

    def _nearest_rows(self, queries, k):
        query_words = codes_lib.as_words(queries)
        found = [self._nearest(query_words, codes, min(k, codes.shape[0]), start) for codes, start in self._segments()]
        if len(found) == 1:
            return found[0]
        # Each segment's nearest, joined: a stable sort by distance keeps ties in row order.
        distances = np.concatenate([d for d, _ in found], axis=1)
        rows = np.concatenate([r for _, r in found], axis=1)
        order = np.argsort(distances, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(distances, order, axis=1), np.take_along_axis(rows, order, axis=1)

    def _nearest(self, query_words, codes, k, start):
        out_dist = np.empty((query_words.shape[0], k), np.int32)
        out_pos = np.empty((query_words.shape[0], k), np.int64)
        database_words = codes_lib.as_words(np.asarray(codes))  # a memory-mapped segment is read as it is scanned

        def worker(begin, stop):
            _kernels.knn(query_words, database_words, k, out_dist, out_pos, begin, stop)

        self._run(query_words, worker)
        if start:
            out_pos += start
        return out_dist, out_pos

    def _rows_within(self, queries, radius):
        query_words = codes_lib.as_words(queries)
        found = [self._within(query_words, codes, radius, start) for codes, start in self._segments()]
        if len(found) == 1:
            return found[0]
        # Each segment's balls, joined per query: a stable sort by (query, distance) keeps row order.
        query = np.concatenate([np.repeat(np.arange(queries.shape[0]), np.diff(lims)) for lims, _, _ in found])
        distances = np.concatenate([d for _, d, _ in found])
        rows = np.concatenate([r for _, _, r in found])
        order = np.lexsort((distances, query))
        lims = np.concatenate([[0], np.cumsum(np.bincount(query, minlength=queries.shape[0]))]).astype(np.int64)
        return lims, distances[order], rows[order]

    def _within(self, query_words, codes, radius, start):
        database_words = codes_lib.as_words(np.asarray(codes))

        def worker(begin, stop):
            return _kernels.within_radius(query_words, database_words, radius, begin, stop)

        parts = self._run(query_words, worker)
        lims = np.concatenate([[0], np.cumsum(np.concatenate([part[0] for part in parts]))]).astype(np.int64)
        rows = np.concatenate([part[2] for part in parts]).astype(np.int64, copy=False)
        if start:
            rows += start
        return lims, np.concatenate([part[1] for part in parts]), rows

    def _rebuild(self, live_rows):
        self._memory = np.concatenate([codes for codes, _ in self._segments()])[live_rows]
        self._mapped = []

    # --- files -----------------------------------------------------------------------------------

    def _fill(self, directory, encoder, details):
        """Writes every row as one segment (plus the removed rows) into a new directory."""
        ids = self._all_ids()
        segments = [fmt.write_segment(directory, 0, [codes for codes, _ in self._segments()], [ids],
                                      self._names_of_rows(0, self._rows))] if self._rows else []
        return self._written(directory, encoder, details, segments)

    def _save_in_place(self, manifest, encoder, details):
        """Appends the rows added since load as a new segment and records the removed rows."""
        if self._rewrite or manifest["rows"] != self._saved_rows:
            return super()._save_in_place(manifest, encoder, details)
        self._segments()
        self._all_ids()
        directory = self._directory
        number = 1 + max([-1] + [int(name.split("-")[1].split(".")[0]) for name in os.listdir(directory)
                                 if fmt.ENTRY.fullmatch(name) and "-" in name])
        segments = list(manifest["segments"])
        if self._rows > self._saved_rows:
            added = slice(self._saved_rows, self._rows)
            segments.append(fmt.write_segment(directory, number, [self._codes_of_rows(added)], [self._all_ids()[added]],
                                              self._names_of_rows(self._saved_rows, self._rows)))
        removed = manifest["removed"]
        if self._dead.shape[0] != self._saved_dead:
            removed = fmt.write_removed(directory, number, self._dead)
        manifest = {**manifest, "segments": segments, "removed": removed, "count": self.ntotal, "rows": self._rows,
                    "generation": manifest["generation"] + 1, "options": self._options(),
                    "encoder": encoder_description(encoder) if encoder is not None else manifest["encoder"],
                    "details": {**manifest["details"], **(details or {})}}
        fmt.commit_append(directory, manifest)
        self._generation, self._saved_rows, self._saved_dead = manifest["generation"], self._rows, self._dead.shape[0]

    def _stored(self):
        """``(codes, ids)`` of the items held, in row order (copies)."""
        with self._lock:
            live = ~self._is_dead(np.arange(self._rows))
            return self._codes_of_rows(slice(0, self._rows))[live], np.array(self._all_ids())[live]

    def _codes_of_rows(self, rows):
        """The codes of a slice of rows, across segments."""
        parts = [codes[max(0, rows.start - start):max(0, rows.stop - start)] for codes, start in self._segments()]
        return np.concatenate(parts) if parts else np.empty((0, self.width), np.uint8)

    def _open(self, directory, manifest, verify):
        """Memory-maps the saved segments: they are read as searches scan them, never whole."""
        segments, dead = fmt.read_segments(directory, manifest, self.width, verify)
        self._mapped = [codes for codes, _, _ in segments]
        for _, ids, names in segments:
            self._adopt_rows(ids, names)
        self._dead = dead
        if self.ntotal != manifest["count"]:
            raise ValueError(f"`path` {directory!r}: its files hold {self.ntotal} items, the manifest says "
                             f"{manifest['count']} (damaged).")
        self._saved_rows, self._saved_dead = self._rows, dead.shape[0]
