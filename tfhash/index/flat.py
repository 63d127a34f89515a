"""The exact index: a brute-force scan with compiled kernels, or multi-index hashing (``kind="mih"``), saved as
appendable segments."""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np

from tfhash import _kernels
from tfhash import codes as codes_lib
from tfhash.index import format as fmt
from tfhash.index.base import RowIndex, encoder_description
from tfhash.index.mih import SubstringTables

KINDS = ("flat", "mih", "auto")
# Rows added after the last tables are scanned until there are this many; then they get tables of their own.
SCAN_TAIL = 65_536
# kind="auto" weighs what a search reads. The tables read about `work` buckets and rows per query (counted on
# codes drawn from the collection, :meth:`SubstringTables.sample_work`), each a jump through memory; the scan
# reads every code in order, and a batch shares each pass between up to 32 queries. The costs per read were
# measured on this project's machine (BENCHMARKS.md (s), the crossovers of the scan and the tables).
AUTO_MIN_CODES = 100_000  # below this, no table is built: a scan takes a fraction of a millisecond
# Nanoseconds per read, one query at a time and in a batch of 32 or more (in between: the single cost shared
# by the batch): every one of the 16 cells of the crossover table (real and uniform codes, 10^6 and 10^7 of them,
# batches of 1, 4, 32 and 1,000) picks the faster of the two with these.
NS_PER_TABLE_READ = (80.0, 25.0)
NS_PER_CODE_SCANNED = (2.2, 0.1)


def _per_query(costs, num_queries):
    single, batched = costs
    return batched + (single - batched) / min(max(num_queries, 1), 32)


def prefers_tables(count: int, work_per_query: float, num_queries: int) -> bool:
    """``kind="auto"``'s rule: the tables for ``num_queries`` queries over ``count`` codes, when they read
    ``work_per_query`` buckets and rows a query, if that costs less than a scan."""
    return (work_per_query * _per_query(NS_PER_TABLE_READ, num_queries)
            < count * _per_query(NS_PER_CODE_SCANNED, num_queries))


class HammingIndex(RowIndex):
    """Exact search in Hamming space: every answer is the brute-force one, ties by row.

    ``kind="flat"`` scans every code with compiled kernels (``tfhash._kernels``): counting selection for
    ``search``, a counting sort of the hits for ``range_search``, the database read in cache-sized blocks.
    ``kind="mih"`` answers from multi-index hashing tables (``tfhash._mih``; Norouzi et al., TPAMI 2014), which
    visit only the codes near each query: on the codes of real images, which crowd together, a query over 10^8
    codes takes milliseconds where the scan takes a second (BENCHMARKS.md (s)); a query far from every code
    (uniformly random codes) is scanned once the tables would cost more. The tables cost ``4 * m`` bytes per code
    (m substrings, about ``bits / log2(n)``) plus their offsets, and are built on the first search, in time
    linear in n; codes added later are scanned until there are :data:`SCAN_TAIL` of them, then tabled as a run
    of their own (runs merge as they grow, so each code is tabled O(log n) times). ``kind="auto"`` scans below
    :data:`AUTO_MIN_CODES` codes; above, it builds the tables and picks per call by the measured rule of
    :func:`prefers_tables` (BENCHMARKS.md (s)).
    Saved segments and tables are memory-mapped; codes added after loading are held in memory beside them and
    saved as a new segment.

    Args:
        bits: code length; codes must be ``ceil(bits / 8)`` bytes wide.
        kind: ``"flat"`` (the default), ``"mih"`` or ``"auto"``.
        n_jobs: worker threads (queries are split between them); ``None`` uses every core.
    """

    backend = "numpy"
    kind = "flat"

    def __init__(self, bits, *, kind="flat", n_jobs=None):
        super().__init__(bits)
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {', '.join(KINDS)}, got {kind!r}.")
        self.kind = kind
        self.n_jobs = n_jobs
        self._runs = []  # SubstringTables runs, each with .first (its first row); together rows [0, covered)
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
        return {"n_jobs": self.n_jobs, **({"kind": self.kind} if self.kind != "flat" else {})}

    def _run(self, count, worker):
        """Splits ``count`` queries over threads; ``worker(start, stop)`` fills its rows of the outputs."""
        n_jobs = _kernels.threads_for(count, self._rows, self.n_jobs)
        bounds = np.linspace(0, count, n_jobs + 1).astype(int)
        if n_jobs == 1:
            return [worker(0, count)]
        with concurrent.futures.ThreadPoolExecutor(n_jobs) as pool:
            return list(pool.map(lambda b: worker(*b), zip(bounds[:-1], bounds[1:])))

    # --- multi-index hashing ----------------------------------------------------------------------

    def _uses_tables(self, num_queries):
        if self.kind != "auto":
            return self.kind == "mih"
        if self._rows < AUTO_MIN_CODES:
            return False
        largest = max(self._tabled(), key=lambda run: run.count)
        work = largest.sample_work(self._rows_view(largest.first, largest.first + largest.count))
        return prefers_tables(self._rows, work, num_queries)

    def _rows_view(self, start, stop):
        """The codes of rows [start, stop) as one array without a copy: when they span stored parts, the parts
        are joined in memory first, once (a run of tables merged across a saved segment and later adds)."""
        for codes, first in self._segments():
            if first <= start and stop <= first + codes.shape[0]:
                return np.asarray(codes)[start - first:stop - first]
        self._memory, self._mapped = self._codes_of_rows(slice(0, self._rows)), []
        return self._memory[start:stop]

    def _tabled(self):
        """The tables' runs, brought up to date: rows past them get a run once there are SCAN_TAIL of them, and a
        run at least half the size of the one before merges into it (call under the lock)."""
        covered = self._runs[-1].first + self._runs[-1].count if self._runs else 0
        if self._rows - covered > (SCAN_TAIL if self._runs else 0):
            self._runs.append(self._table_run(covered, self._rows))
            while len(self._runs) > 1 and 2 * self._runs[-1].count >= self._runs[-2].count:
                last = self._runs.pop()
                self._runs[-1] = self._table_run(self._runs[-1].first, last.first + last.count)
        return self._runs

    def _table_run(self, start, stop):
        run = SubstringTables.build(self._rows_view(start, stop), self.bits)
        run.first, run.entry = start, None  # entry: its saved files, once written
        return run

    def _search_parts(self, num_queries):
        """``(tables or None, codes, first row)`` of what a search covers, in row order."""
        if not self._uses_tables(num_queries):
            return [(None, codes, start) for codes, start in self._segments()]
        runs = self._tabled()
        parts = [(run, self._rows_view(run.first, run.first + run.count), run.first) for run in runs]
        covered = runs[-1].first + runs[-1].count if runs else 0
        if covered < self._rows:
            parts.append((None, self._rows_view(covered, self._rows), covered))
        return parts

    # --- search -----------------------------------------------------------------------------------

    def _nearest_rows(self, queries, k):
        query_words = codes_lib.as_words(queries)
        found = []
        for tables, codes, start in self._search_parts(queries.shape[0]):
            if tables is None:
                found.append(self._nearest(query_words, codes, min(k, codes.shape[0]), start))
            else:
                distances, rows = tables.nearest(queries, codes, min(k, codes.shape[0]), self._run)
                found.append((distances, rows + start))
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

        self._run(query_words.shape[0], worker)
        if start:
            out_pos += start
        return out_dist, out_pos

    def _rows_within(self, queries, radius):
        query_words = codes_lib.as_words(queries)
        found = []
        for tables, codes, start in self._search_parts(queries.shape[0]):
            if tables is None:
                found.append(self._within(query_words, codes, radius, start))
            else:
                counts, distances, rows = tables.within(queries, codes, radius, self._run)
                found.append((np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), distances, rows + start))
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

        parts = self._run(query_words.shape[0], worker)
        lims = np.concatenate([[0], np.cumsum(np.concatenate([part[0] for part in parts]))]).astype(np.int64)
        rows = np.concatenate([part[2] for part in parts]).astype(np.int64, copy=False)
        if start:
            rows += start
        return lims, np.concatenate([part[1] for part in parts]), rows

    def _rebuild(self, live_rows):
        self._memory = np.concatenate([codes for codes, _ in self._segments()])[live_rows]
        self._mapped, self._runs = [], []

    # --- files -----------------------------------------------------------------------------------

    def _fill(self, directory, encoder, details):
        """Writes every row as one segment (plus the removed rows and the tables) into a new directory."""
        ids = self._all_ids()
        segments = [fmt.write_segment(directory, 0, [codes for codes, _ in self._segments()], [ids],
                                      self._names_of_rows(0, self._rows))] if self._rows else []
        runs = self._tabled() if self.kind == "mih" else self._runs
        self._new_table_entries = [self._write_run(directory, number, run) for number, run in enumerate(runs, 1)]
        manifest = self._written(directory, encoder, details, segments)
        return {**manifest, "tables": self._new_table_entries} if runs else manifest

    def _write_run(self, directory, number, run):
        return fmt.write_tables(directory, number, run.first, run.substrings, run.directs, run.offsets, run.rows)

    def _written_whole(self):
        super()._written_whole()
        for run, entry in zip(self._runs, getattr(self, "_new_table_entries", [])):
            run.entry = entry  # the runs' files in the directory just written (set once it is in place)

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
        if self.kind != "flat":  # runs tabled since the last save get files of their own
            written = {id(run): self._write_run(directory, number + i, run)
                       for i, run in enumerate(run for run in self._runs if run.entry is None)}
            manifest["tables"] = [run.entry or written[id(run)] for run in self._runs]
        manifest = {**manifest, "segments": segments, "removed": removed, "count": self.ntotal, "rows": self._rows,
                    "generation": manifest["generation"] + 1, "options": self._options(),
                    "encoder": encoder_description(encoder) if encoder is not None else manifest["encoder"],
                    "details": {**manifest["details"], **(details or {})}}
        fmt.commit_append(directory, manifest)
        self._generation, self._saved_rows, self._saved_dead = manifest["generation"], self._rows, self._dead.shape[0]
        for run, entry in zip(self._runs, manifest.get("tables") or []):
            run.entry = entry

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
        if self.kind != "flat":
            self._runs = []
            for (first, substrings, directs, offsets, rows), entry in zip(
                    fmt.map_tables(directory, manifest, verify), manifest.get("tables") or []):
                run = SubstringTables(substrings, directs, offsets, rows, rows.shape[1])
                run.check(f"`path` {directory!r}")
                run.first, run.entry = first, entry
                self._runs.append(run)
        if self.ntotal != manifest["count"]:
            raise ValueError(f"`path` {directory!r}: its files hold {self.ntotal} items, the manifest says "
                             f"{manifest['count']} (damaged).")
        self._saved_rows, self._saved_dead = self._rows, dead.shape[0]
