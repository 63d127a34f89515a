"""The interface every index backend implements, and the row bookkeeping the local backends share."""

from __future__ import annotations

import abc
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from tfhash import _validation
from tfhash import codes as codes_lib
from tfhash.index import format as fmt

PAD_DISTANCE = np.iinfo(np.int32).max
NO_NAME = "\x00"  # the name of an item added without one, beside items with names


def check_ids(ids: ArrayLike, count: int, what: str) -> np.ndarray:
    """``ids`` as an int64 copy of ``count`` distinct non-negative integers (``what`` says what they belong to)."""
    ids = np.asarray(ids)
    if ids.ndim == 1 and ids.size == 0:
        ids = ids.astype(np.int64)  # an empty list has no integer dtype of its own
    if ids.ndim != 1 or ids.shape[0] != count or ids.dtype.kind not in "iu":
        raise ValueError(f"`ids` must be 1-D integers, {what} ({count}), got dtype {ids.dtype} and shape {ids.shape}.")
    if ids.size:
        # Ids are stored as int64 with -1 marking an empty result slot: refuse what cannot be told apart.
        low, high = ids.min(), ids.max()
        if low < 0 or high > np.iinfo(np.int64).max:
            raise ValueError(f"`ids` must be in [0, 2**63 - 1] (-1 marks an empty result), got values in "
                             f"[{low}, {high}].")
    ids = ids.astype(np.int64, copy=True)  # a value: the caller may refill its buffer afterwards
    check_distinct(ids, "`ids`")
    return ids


def check_distinct(ids: ArrayLike, where: str) -> None:
    """Refuses ids that repeat (the one message for every place ids arrive)."""
    ordered = np.sort(ids)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if repeated.size:
        raise ValueError(duplicate_message(repeated, where))


def duplicate_message(repeated: ArrayLike, where: str) -> str:
    shown = ", ".join(str(int(i)) for i in np.unique(repeated)[:5])
    return f"{where} holds id {shown}{' and more' if np.unique(repeated).size > 5 else ''} twice; ids must be unique."


def ids_to_remove(ids: ArrayLike) -> np.ndarray:
    """``ids`` given to ``remove``: distinct non-negative integers, any number of them."""
    ids = np.asarray(ids)
    return check_ids(ids, ids.shape[0] if ids.ndim == 1 else -1, "to remove")


def missing_message(ids: ArrayLike, held: ArrayLike) -> str:
    """The error for ids an operation needs held: ``ids`` and the mask of those held."""
    missing = ", ".join(str(int(i)) for i in ids[~held][:5])
    return f"`ids` must be held by the index; it holds no item with id {missing}."


def check_names(names: Sequence[str | None] | None, count: int) -> Any:
    """``names`` (strings, or None for an item without a name) as a :class:`format.Names` column."""
    if names is None:
        return None
    if isinstance(names, fmt.Names) and len(names) == count:
        return names
    if isinstance(names, (str, bytes)) or len(names) != count:
        raise ValueError(f"`names` must be a sequence of {count} strings (one per code), got {type(names).__name__} "
                         f"of length {len(names) if hasattr(names, '__len__') else '?'}.")
    return fmt.Names.of([NO_NAME if name is None else name for name in names])


class SearchIndex(abc.ABC):
    """What every index offers: ``add``, ``search``, ``range_search``, ``remove``, ``update``, ``compact``,
    ``names``, ``save``, ``len()``, ``bits`` and ``kind``.

    Every index answers with the ``tfhash.metrics`` ranking: ascending Hamming distance, ties by the order
    in which items were added (an updated item counts as added when it was updated). Ids are distinct
    non-negative integers; an id already held is refused by ``add``.
    """

    backend: str
    kind: str

    def __init__(self, bits):
        self.bits = _validation.check_bits(bits)
        self.width = codes_lib.num_bytes(self.bits)
        self._lock = threading.RLock()  # guards every change of what the index holds
        self._directory = None  # where the index was loaded from or last saved
        self._generation = None

    @property
    @abc.abstractmethod
    def ntotal(self) -> int:
        """Items held."""

    @abc.abstractmethod
    def add(self, codes: ArrayLike, ids: ArrayLike | None = None,
            names: Sequence[str | None] | None = None) -> SearchIndex:
        """Adds packed codes (copied), with optional distinct int ids (default: running numbers) and names."""

    @abc.abstractmethod
    def search(self, queries: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest codes of each query: ``(distances int32 [nq, k'], ids int64 [nq, k'])``, k' = min(k, len)."""

    @abc.abstractmethod
    def range_search(self, queries: ArrayLike, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All codes within Hamming distance ``radius`` (inclusive): Faiss-style ``(lims, distances, ids)``."""

    @abc.abstractmethod
    def remove(self, ids: ArrayLike) -> int:
        """Removes the items with these ids (each must be held); returns how many were removed."""

    @abc.abstractmethod
    def names(self, ids: ArrayLike) -> list:
        """The name of each id's item (its source file or record), ``None`` for an item added without one."""

    @abc.abstractmethod
    def _save_new(self, path, encoder, overwrite, details) -> str:
        """Writes the index as a new saved directory at ``path``; returns the directory."""

    def update(self, ids: ArrayLike, codes: ArrayLike, names: Sequence[str | None] | None = None) -> SearchIndex:
        """Replaces the codes of held items (their ids and, unless ``names`` are given, names stay; they rank as
        if just added)."""
        codes = self._check(codes, "codes")
        with self._lock:
            ids = check_ids(ids, codes.shape[0], "one per code")
            if names is None and self._has_names():
                names = self.names(ids)
            self.remove(ids)
            return self.add(codes, ids, names)

    def compact(self) -> SearchIndex:
        """Rewrites what is held without the removed items (the next ``save`` writes the index anew)."""
        return self

    def _has_names(self):
        return False

    def __len__(self):
        return self.ntotal

    def _check(self, codes, name):
        codes = _validation.check_codes(codes, name, bits=self.bits)
        return np.ascontiguousarray(codes)

    def _capped_k(self, k):
        return min(_validation.check_positive_int(k, "k"), self.ntotal)

    def _check_radius(self, radius):
        """A non-negative integer radius, capped at ``bits`` (no distance is larger)."""
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
            raise ValueError(f"`radius` must be a non-negative integer, got {radius!r}.")
        return int(min(radius, self.bits))

    def save(self, path: str | os.PathLike | None = None, *, encoder: Any = None, overwrite: bool = False,
             details: dict | None = None) -> str:
        """Saves the index and returns the directory.

        ``path`` new (or an empty directory): the whole index is written there atomically (a reader sees the old
        state or the new, never a part); ``overwrite=True`` also replaces a previous saved index that holds
        nothing else. ``path`` the directory the index was loaded from (or ``None``): the changes since then
        are appended (new segments, removed rows), unless the backend or a ``compact()`` needs a rewrite; this
        fails if another writer saved there since. ``encoder`` (a Hasher or a loaded export) is recorded, so
        :func:`tfhash.index.load` can refuse codes from another encoder; ``details``: JSON facts to keep.
        """
        if path is None:
            if self._directory is None:
                raise ValueError("`path` is needed: this index was neither loaded nor saved before.")
            path = self._directory
        if self._directory is not None and _same_directory(path, self._directory):
            with fmt.appending(self._directory, self._generation) as manifest:
                self._save_in_place(manifest, encoder, details)
            return self._directory
        directory = self._save_new(path, encoder, overwrite, details)
        self._directory, self._generation = directory, fmt.read_manifest(directory)["generation"]
        return directory

    @abc.abstractmethod
    def _save_in_place(self, manifest, encoder, details):
        """Writes the changes since load into the directory loaded from (called under its lock)."""


def _same_directory(a, b):
    return os.path.realpath(os.fspath(a)) == os.path.realpath(os.fspath(b))


def encoder_description(encoder: Any) -> dict | None:
    """What a manifest records of the encoder that made the codes: scheme, bits and the encoder's
    fingerprint (a digest of its weights; ``None`` for exports written before fingerprints existed)."""
    if encoder is None:
        return None
    if not hasattr(encoder, "bits") or not hasattr(encoder, "scheme"):
        raise ValueError(f"`encoder` must be a tfhash Hasher or a loaded export (tfhash.load), got "
                         f"{type(encoder).__name__}.")
    return {"scheme": str(encoder.scheme), "bits": int(encoder.bits),
            "fingerprint": getattr(encoder, "fingerprint", None)}


class RowIndex(SearchIndex):
    """Rows in insertion order, each an id (and optional name) beside a code the backend stores; removing
    marks rows dead, and searches skip them (asking the backend for as many more rows as are dead)."""

    def __init__(self, bits):
        super().__init__(bits)
        self._id_parts, self._name_parts = [], []  # per added part: ids, Names or None
        self._dead = np.empty(0, np.int64)  # sorted dead row numbers
        self._rows = 0
        self._next_id = 0
        self._lookup = []  # sorted (ids, rows) chunks of every row, for id -> row
        self._unsorted = []  # (ids, first row) of rows not in a lookup chunk yet (sorted when first needed)
        self._saved_rows, self._saved_dead, self._rewrite = 0, 0, False

    # backend hooks
    def _store(self, codes):
        """Keeps ``codes`` after the rows held: a copy, or the backend's own (the caller may refill its array)."""
        raise NotImplementedError

    def _nearest_rows(self, queries, k):
        """``(distances, rows)`` of the k nearest rows of each query (dead ones included), ties by row."""
        raise NotImplementedError

    def _rows_within(self, queries, radius):
        """``(lims, distances, rows)`` of every row within ``radius``, ordered by (distance, row)."""
        raise NotImplementedError

    def _rebuild(self, live_rows):
        """Keeps only ``live_rows`` (sorted) of the stored codes, in their order."""
        raise NotImplementedError

    @property
    def ntotal(self) -> int:
        with self._lock:
            return self._rows - self._dead.shape[0]

    def _all_ids(self):
        """The ids of every row as one array (joined in memory; call under the lock). Searches read ids with
        :meth:`_ids_at` instead, which leaves memory-mapped segments on disk."""
        if len(self._id_parts) > 1:
            self._name_parts = [_join_names(self._name_parts, [part.shape[0] for part in self._id_parts])]
            self._id_parts = [np.concatenate(self._id_parts)]
        return self._id_parts[0] if self._id_parts else np.empty(0, np.int64)

    def _ids_at(self, rows):
        """The ids of ``rows`` (any shape), gathered part by part."""
        if len(self._id_parts) == 1:
            return np.asarray(self._id_parts[0])[rows]
        starts = np.cumsum([0] + [part.shape[0] for part in self._id_parts])
        part = np.searchsorted(starts, rows, side="right") - 1
        ids = np.empty(np.shape(rows), np.int64)
        for p in np.unique(part):
            chosen = part == p
            ids[chosen] = np.asarray(self._id_parts[p])[rows[chosen] - starts[p]]
        return ids

    def _rows_of(self, ids):
        """The live row holding each id, -1 where none does."""
        found = np.full(ids.shape[0], -1, np.int64)
        for part_ids, first in self._unsorted:
            order = np.argsort(part_ids, kind="stable")
            self._lookup.append((np.asarray(part_ids)[order], first + order.astype(np.int64)))
        self._unsorted = []
        if len(self._lookup) > 8:
            self._lookup = [self._merged_lookup()]
        for sorted_ids, rows in self._lookup:
            # an id can stand in a chunk more than once (its rows before an update are dead): try each
            low = np.searchsorted(sorted_ids, ids, "left")
            high = np.searchsorted(sorted_ids, ids, "right")
            for offset in range(int((high - low).max(initial=0))):
                position = np.minimum(low + offset, sorted_ids.shape[0] - 1)
                candidate = rows[position]
                hit = (low + offset < high) & (found < 0) & ~self._is_dead(candidate)
                found[hit] = candidate[hit]
        return found

    def _merged_lookup(self):
        ids = np.concatenate([chunk for chunk, _ in self._lookup])
        rows = np.concatenate([chunk for _, chunk in self._lookup])
        live = ~self._is_dead(rows)
        ids, rows = ids[live], rows[live]
        order = np.argsort(ids, kind="stable")
        return ids[order], rows[order]

    def _is_dead(self, rows):
        if not self._dead.shape[0]:
            return np.zeros(np.shape(rows), bool)
        where = np.minimum(np.searchsorted(self._dead, rows), self._dead.shape[0] - 1)
        return self._dead[where] == rows

    def _check_new_ids(self, ids, count):
        if ids is None:
            return np.arange(self._next_id, self._next_id + count, dtype=np.int64)
        ids = check_ids(ids, count, "one per code")
        held = ids[self._rows_of(ids) >= 0]
        if held.size:
            raise ValueError(duplicate_message(held, "the index already; `ids`"))
        return ids

    def add(self, codes: ArrayLike, ids: ArrayLike | None = None,
            names: Sequence[str | None] | None = None) -> RowIndex:
        codes = self._check(codes, "codes")
        names = check_names(names, codes.shape[0])
        with self._lock:  # default ids follow the rows held, so they are assigned under the lock too
            ids = self._check_new_ids(ids, codes.shape[0])
            if codes.shape[0] == 0:
                return self
            self._store(codes)
            self._adopt_rows(ids, names)
        return self

    def _adopt_rows(self, ids, names):
        """Books rows of ``ids`` (and their names) after those held (call under the lock)."""
        self._unsorted.append((ids, self._rows))
        self._id_parts.append(ids)
        self._name_parts.append(names)
        self._rows += ids.shape[0]
        if ids.shape[0]:
            self._next_id = max(self._next_id, int(np.max(ids)) + 1)

    def remove(self, ids: ArrayLike) -> int:
        with self._lock:
            ids = ids_to_remove(ids)
            rows = self._rows_of(ids)
            if np.any(rows < 0):
                raise ValueError(missing_message(ids, rows >= 0))
            self._dead = np.union1d(self._dead, rows)
            return int(rows.shape[0])

    def compact(self) -> RowIndex:
        with self._lock:
            if not self._dead.shape[0]:
                return self
            live = np.setdiff1d(np.arange(self._rows, dtype=np.int64), self._dead)
            ids = self._all_ids()[live]
            names = self._name_parts[0].take(live) if self._name_parts and self._name_parts[0] is not None else None
            self._rebuild(live)
            self._id_parts, self._name_parts = [ids], [names]
            self._dead, self._rows = np.empty(0, np.int64), live.shape[0]
            self._lookup, self._unsorted = [], [(ids, 0)]
            self._rewrite = True
        return self

    def _has_names(self):
        return any(part is not None for part in self._name_parts)

    def _live_ids(self):
        """The ids held, in row order."""
        with self._lock:
            ids = self._all_ids()
            return ids[~self._is_dead(np.arange(self._rows))] if self._dead.shape[0] else np.array(ids)

    def names(self, ids: ArrayLike) -> list:
        with self._lock:
            ids = np.asarray(ids, np.int64).reshape(-1)
            rows = self._rows_of(ids)
            if np.any(rows < 0):
                raise ValueError(missing_message(ids, rows >= 0))
            starts = np.cumsum([0] + [part.shape[0] for part in self._id_parts])
            names = []
            for row in rows.tolist():
                part = int(np.searchsorted(starts, row, side="right")) - 1
                column = self._name_parts[part]
                name = None if column is None else column[row - int(starts[part])]
                names.append(None if name == NO_NAME else name)
            return names

    def search(self, queries: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = self._check(queries, "queries")
        with self._lock:
            k = self._capped_k(k)
            dead = self._dead.shape[0]
            if k == 0 or queries.shape[0] == 0:
                return (np.full((queries.shape[0], k), PAD_DISTANCE, np.int32),
                        np.full((queries.shape[0], k), -1, np.int64))
            distances, rows = self._nearest_rows(queries, min(k + dead, self._rows))
            if dead:
                skip = (rows < 0) | self._is_dead(np.maximum(rows, 0))
                order = np.argsort(skip, axis=1, kind="stable")[:, :k]
                distances, rows = np.take_along_axis(distances, order, 1), np.take_along_axis(rows, order, 1)
            distances, rows = distances[:, :k], rows[:, :k]
            empty = rows < 0
            if empty.any():  # an approximate index found fewer than k
                return (np.where(empty, PAD_DISTANCE, distances).astype(np.int32),
                        np.where(empty, -1, self._ids_at(np.maximum(rows, 0))))
            return distances.astype(np.int32, copy=False), self._ids_at(rows)

    def range_search(self, queries: ArrayLike, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        queries = self._check(queries, "queries")
        radius = self._check_radius(radius)
        with self._lock:
            if self._rows == 0 or queries.shape[0] == 0:
                return np.zeros(queries.shape[0] + 1, np.int64), np.empty(0, np.int32), np.empty(0, np.int64)
            lims, distances, rows = self._rows_within(queries, radius)
            if self._dead.shape[0]:
                keep = ~self._is_dead(rows)
                query = np.repeat(np.arange(queries.shape[0]), np.diff(lims))
                counts = np.bincount(query[keep], minlength=queries.shape[0])
                lims = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
                distances, rows = distances[keep], rows[keep]
            ids = self._ids_at(rows)
        return lims, distances.astype(np.int32, copy=False), ids

    def _written(self, directory, encoder, details, segments):
        return fmt.new_manifest(self.backend, self.bits, count=self.ntotal, rows=self._rows,
                                options=self._options(), encoder=encoder, segments=segments,
                                removed=fmt.write_removed(directory, len(segments), self._dead), details=details)

    def _options(self):
        return {}

    def _save_new(self, path, encoder, overwrite, details):
        encoder = encoder_description(encoder)
        with self._lock:
            directory = fmt.write_index(path, overwrite, lambda d: self._fill(d, encoder, details))
            self._written_whole()
        return directory

    def _save_in_place(self, manifest, encoder, details):
        """Writes everything held anew in place of the directory loaded from (under its lock)."""
        encoder = encoder_description(encoder) if encoder is not None else manifest["encoder"]
        details = {**manifest["details"], **(details or {})}
        generation = manifest["generation"] + 1

        def fill(directory):
            return {**self._fill(directory, encoder, details), "generation": generation}

        fmt.write_index(self._directory, True, fill)
        self._generation = generation
        self._written_whole()

    def _written_whole(self):
        self._saved_rows, self._saved_dead, self._rewrite = self._rows, self._dead.shape[0], False

    def _names_of_rows(self, start, stop):
        """The names of rows [start, stop) (a Names column), or None when no row has one."""
        self._all_ids()
        column = self._name_parts[0] if self._name_parts else None
        return None if column is None else column.take(np.arange(start, stop))


def _join_names(parts, sizes):
    """One names column of the parts (None when no part has names; a part without names gives NO_NAME)."""
    if all(part is None for part in parts):
        return None
    return fmt.Names.join([fmt.Names.of([NO_NAME] * n) if part is None else part for part, n in zip(parts, sizes)])
