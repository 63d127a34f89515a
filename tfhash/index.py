"""Search over packed binary codes: an exact Hamming index, and Faiss backends behind the same interface.

Every index answers with the ``tfhash.metrics`` ranking: ascending Hamming distance, ties by the
order in which items were added. ``search`` returns ``(distances, ids)`` of shape
``[n_query, min(k, len(index))]``: k is capped at the number of items held, so a large k never
allocates more than the index. An approximate index (Faiss IVF / HNSW) can find fewer than k items
for a query; those slots hold distance ``PAD_DISTANCE`` and id -1, which is why ids must be
non-negative. ``range_search`` returns Faiss-style ``(lims, distances, ids)``: the results of query i
are ``distances[lims[i]:lims[i + 1]]``, ordered like ``search``'s (distance, then insertion order).

**Files.** ``index.save(path)`` writes a directory (a manifest ``index.json`` beside the codes and ids, or
Faiss's own file) atomically; :func:`load` opens it again, memory-mapping the exact index's codes and ids
(and a Faiss IVF index's ids and lists) so that opening a large index reads little more than its manifest.
:func:`build` streams a collection through an encoder into a saved index.

**Threads.** Every index may be shared by threads: any number may ``search`` and ``range_search`` at once,
and an ``add`` concurrent with searches loses nothing (each search sees the codes added before it
started, or also some added during it; every added code is in the index once ``add`` returns).
"""

from __future__ import annotations

import concurrent.futures
import inspect
import json
import os
import shutil
import tempfile
import threading
import time

import numpy as np
from numpy.typing import ArrayLike

from tfhash import _io, _kernels, _validation
from tfhash import codes as codes_lib

PAD_DISTANCE = np.iinfo(np.int32).max
MANIFEST = "index.json"
FORMAT = "tfhash-index"
FORMAT_VERSION = 1
CODES_FILE, IDS_FILE, FAISS_FILE = "codes.bin", "ids.bin", "faiss.index"
INDEX_ENTRIES = {MANIFEST, CODES_FILE, IDS_FILE, FAISS_FILE}


def check_ids(ids, count, what):
    """``ids`` as an array of ``count`` non-negative integers (``what`` says what they belong to)."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.shape[0] != count or ids.dtype.kind not in "iu":
        raise ValueError(f"`ids` must be 1-D integers, {what} ({count}), got dtype {ids.dtype} and shape {ids.shape}.")
    if ids.size:
        # Ids are stored as int64 with -1 marking an empty result slot: refuse what cannot be told apart.
        low, high = ids.min(), ids.max()
        if low < 0 or high > np.iinfo(np.int64).max:
            raise ValueError(f"`ids` must be in [0, 2**63 - 1] (-1 marks an empty result), got values in "
                             f"[{low}, {high}].")
    return ids


class _SearchIndex:
    """Argument checks and id bookkeeping shared by the backends."""

    def __init__(self, bits):
        self.bits = _validation.check_bits(bits)
        self.width = codes_lib.num_bytes(self.bits)
        self._lock = threading.RLock()  # guards every change of what the index holds

    def _check(self, codes, name):
        codes = _validation.check_codes(codes, name, bits=self.bits)
        return np.ascontiguousarray(codes)  # no copy when already C-contiguous

    def _check_ids(self, ids, count):
        if ids is None:
            return np.arange(self.ntotal, self.ntotal + count, dtype=np.int64)
        return check_ids(ids, count, "one per code").astype(np.int64, copy=False)

    def _capped_k(self, k):
        return min(_validation.check_positive_int(k, "k"), self.ntotal)

    def _check_radius(self, radius):
        """A non-negative integer radius, capped at ``bits`` (no distance is larger)."""
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
            raise ValueError(f"`radius` must be a non-negative integer, got {radius!r}.")
        return int(min(radius, self.bits))

    def __len__(self):
        return self.ntotal

    def save(self, path: str | os.PathLike, *, encoder=None, overwrite: bool = False, details: dict | None = None) -> str:
        """Writes the index to the directory ``path`` (atomically: a reader sees the old index or the new one,
        never a part); returns ``path``.

        ``path`` must be new or an empty directory; ``overwrite=True`` also replaces a previous saved index
        that holds nothing else. ``encoder`` (a Hasher or a loaded export) is recorded in the manifest, so
        :func:`load` can refuse codes from another encoder. ``details``: JSON facts kept in the manifest
        (:func:`build` records its source and any skipped items there).
        """
        def fill(directory):
            with self._lock:
                files, options = self._write_files(directory)
                count = self.ntotal
            return _manifest(self.backend, self.bits, count, options, files, encoder_description(encoder), details)

        return _write_directory(path, overwrite, fill)


class HammingIndex(_SearchIndex):
    """Exact search by brute-force Hamming distance, with compiled kernels (``tfhash._kernels``): counting
    selection for ``search``, a counting sort of the hits for ``range_search``. Both scan the database in
    cache-sized blocks, so their memory is that of their results.

    Args:
        bits: code length; codes must be ``ceil(bits / 8)`` bytes wide.
        n_jobs: worker threads (queries are split between them); ``None`` uses every core.
    """

    backend = "numpy"

    def __init__(self, bits, *, n_jobs=None):
        super().__init__(bits)
        self.n_jobs = n_jobs
        self._parts, self._id_parts = [], []
        # The codes held: the saved ones (memory-mapped by load, or every code of an index built in memory),
        # then those added since load, in memory beside them; neither array changes once made.
        self._codes = np.empty((0, self.width), np.uint8)
        self._ids = np.empty(0, np.int64)
        self._added = np.empty((0, self.width), np.uint8)
        self._added_ids = np.empty(0, np.int64)

    def _write_files(self, directory):
        segments = self._segments()
        files = {"codes": _write_arrays(directory, CODES_FILE, [codes for codes, _ in segments]),
                 "ids": _write_arrays(directory, IDS_FILE, [ids.astype("<i8", copy=False) for _, ids in segments])}
        return files, {"n_jobs": self.n_jobs}

    def _open_files(self, directory, manifest):
        """Memory-maps the saved codes and ids: they are read as searches scan them, never whole, also after
        more codes are added (those are held in memory beside them)."""
        count = manifest["count"]
        self._codes = _map_array(directory, manifest, "codes", np.uint8, (count, self.width))
        self._ids = _map_array(directory, manifest, "ids", np.dtype("<i8"), (count,))

    @property
    def ntotal(self):
        with self._lock:
            return int(self._codes.shape[0] + self._added.shape[0] + sum(p.shape[0] for p in self._parts))

    def add(self, codes: ArrayLike, ids: ArrayLike | None = None) -> HammingIndex:
        """Adds packed codes (with optional int ids; default: running positions)."""
        codes = self._check(codes, "codes")
        with self._lock:  # default ids follow the codes held, so they are assigned under the lock too
            ids = self._check_ids(ids, codes.shape[0])
            self._parts.append(codes)
            self._id_parts.append(ids)
        return self

    def _segments(self):
        """The codes and ids held now, in insertion order, as one or two ``(codes, ids)`` pairs of arrays that
        are never changed afterwards (a snapshot that a search may read while other threads add). Codes added
        to a memory-mapped index are joined in memory beside the mapped ones, which stay on disk."""
        with self._lock:
            if self._parts:
                if isinstance(self._codes, np.memmap):
                    self._added = np.concatenate([self._added] + self._parts)
                    self._added_ids = np.concatenate([self._added_ids] + self._id_parts)
                else:
                    self._codes = np.concatenate([self._codes] + self._parts)
                    self._ids = np.concatenate([self._ids] + self._id_parts)
                self._parts, self._id_parts = [], []
            segments = [(self._codes, self._ids), (self._added, self._added_ids)]
            return [segment for segment in segments if segment[0].shape[0]] or segments[:1]

    def _run(self, queries, worker):
        """Splits the queries over threads; ``worker(start, stop)`` fills its rows of the outputs."""
        n_jobs = self.n_jobs or os.cpu_count() or 1
        work = queries.shape[0] * max(1, self.ntotal)
        n_jobs = 1 if work < 10_000_000 else max(1, min(int(n_jobs), queries.shape[0]))
        bounds = np.linspace(0, queries.shape[0], n_jobs + 1).astype(int)
        if n_jobs == 1:
            return [worker(0, queries.shape[0])]
        with concurrent.futures.ThreadPoolExecutor(n_jobs) as pool:
            return list(pool.map(lambda b: worker(*b), zip(bounds[:-1], bounds[1:])))

    def search(self, queries: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest codes of each query: ``(distances int32 [nq, k'], ids int64 [nq, k'])``, k' = min(k, len)."""
        queries = self._check(queries, "queries")
        segments = self._segments()
        k = min(_validation.check_positive_int(k, "k"), sum(codes.shape[0] for codes, _ in segments))
        if k == 0 or queries.shape[0] == 0:
            return np.full((queries.shape[0], k), PAD_DISTANCE, np.int32), np.full((queries.shape[0], k), -1, np.int64)
        query_words = codes_lib.as_words(queries)
        found = [self._nearest(query_words, codes, ids, min(k, codes.shape[0])) for codes, ids in segments]
        if len(found) == 1:
            return found[0]
        # Each segment's nearest, joined: a stable sort by distance keeps ties in insertion order.
        distances = np.concatenate([d for d, _ in found], axis=1)
        ids = np.concatenate([i for _, i in found], axis=1)
        order = np.argsort(distances, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(distances, order, axis=1), np.take_along_axis(ids, order, axis=1)

    def _nearest(self, query_words, codes, ids, k):
        out_dist = np.empty((query_words.shape[0], k), np.int32)
        out_pos = np.empty((query_words.shape[0], k), np.int64)
        database_words = codes_lib.as_words(np.asarray(codes))  # a memory-mapped index is read as it is scanned

        def worker(start, stop):
            _kernels.knn(query_words, database_words, k, out_dist, out_pos, start, stop)

        self._run(query_words, worker)
        return out_dist, np.asarray(ids)[out_pos]

    def range_search(self, queries: ArrayLike, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All codes within Hamming distance ``radius`` (inclusive): ``(lims, distances, ids)``."""
        queries = self._check(queries, "queries")
        radius = self._check_radius(radius)
        query_words = codes_lib.as_words(queries)
        found = [self._within(query_words, codes, ids, radius) for codes, ids in self._segments()]
        if len(found) == 1:
            return found[0]
        # Each segment's balls, joined per query: a stable sort by (query, distance) keeps insertion order.
        query = np.concatenate([np.repeat(np.arange(queries.shape[0]), np.diff(lims)) for lims, _, _ in found])
        distances = np.concatenate([d for _, d, _ in found])
        ids = np.concatenate([i for _, _, i in found])
        order = np.lexsort((distances, query))
        lims = np.concatenate([[0], np.cumsum(np.bincount(query, minlength=queries.shape[0]))]).astype(np.int64)
        return lims, distances[order], ids[order]

    def _within(self, query_words, codes, ids, radius):
        database_words = codes_lib.as_words(np.asarray(codes))

        def worker(start, stop):
            return _kernels.within_radius(query_words, database_words, radius, start, stop)

        parts = self._run(query_words, worker)
        lims = np.concatenate([[0], np.cumsum(np.concatenate([part[0] for part in parts]))]).astype(np.int64)
        positions = np.concatenate([part[2] for part in parts])
        return lims, np.concatenate([part[1] for part in parts]), np.asarray(ids)[positions]


class FaissIndex(_SearchIndex):
    """Faiss binary indexes (needs the ``[faiss]`` extra: ``pip install "tfhash[faiss]"``).

    Packed tfhash codes are Faiss's binary layout, so they are handed over as they are (no copy,
    no re-packing). Ids are kept beside the Faiss index, which numbers codes by position, so ties are
    ordered by insertion as in every index. Calls are serialised by a lock (Faiss allows no ``add``
    beside a search); each search runs on Faiss's own threads.

    Args:
        bits: code length.
        kind: ``"flat"`` (exact, ``IndexBinaryFlat``), ``"ivf"`` (inverted lists over a binary
            k-means quantizer, trained on the first ``add``; approximate, for large databases),
            ``"hnsw"`` (graph search; approximate) or ``"multihash"`` (``IndexBinaryMultiHash``: codes
            that agree exactly on one of ``multihash_tables`` substrings of ``multihash_bits`` bits, or
            differ there in at most ``multihash_flips`` bits; approximate, no training).
        nlist: IVF lists (default: about 4 * sqrt(items at first add), at most that many items); the
            first ``add`` must hold at least ``nlist`` codes.
        nprobe: IVF lists visited per query.
        hnsw_neighbors: HNSW graph degree M.
        hnsw_search_depth: HNSW candidates kept while searching (efSearch; at least k is used): higher finds
            more of the true neighbours, slower.
        multihash_tables, multihash_bits, multihash_flips: the multi-hash tables, the bits each hashes
            (``multihash_tables * multihash_bits <= bits``; default: as many 16-bit tables as fit, at least
            one) and the bits flipped when probing them.
    """

    KINDS = ("flat", "ivf", "hnsw", "multihash")
    backend = "faiss"

    def __init__(self, bits, kind="flat", *, nlist=None, nprobe=16, hnsw_neighbors=16, hnsw_search_depth=128,
                 multihash_tables=None, multihash_bits=None, multihash_flips=0):
        super().__init__(bits)
        try:
            import faiss
        except ImportError as err:
            raise ImportError('FaissIndex needs Faiss: pip install "tfhash[faiss]" (or faiss-cpu).') from err
        self._faiss = faiss
        self.kind = _validation.check_choice(kind, "kind", self.KINDS)
        self.nlist = None if nlist is None else _validation.check_positive_int(nlist, "nlist")
        self.nprobe = _validation.check_positive_int(nprobe, "nprobe")
        self.hnsw_neighbors = _validation.check_positive_int(hnsw_neighbors, "hnsw_neighbors")
        self.hnsw_search_depth = _validation.check_positive_int(hnsw_search_depth, "hnsw_search_depth")
        dim = 8 * self.width
        self.multihash_bits = _validation.check_positive_int(multihash_bits or min(16, dim), "multihash_bits")
        self.multihash_tables = _validation.check_positive_int(
            multihash_tables or max(1, dim // self.multihash_bits), "multihash_tables")
        self.multihash_flips = int(multihash_flips)
        if self.multihash_flips < 0 or self.multihash_flips > self.multihash_bits:
            raise ValueError(f"`multihash_flips` must be in [0, multihash_bits={self.multihash_bits}], got "
                             f"{multihash_flips!r}.")
        if self.kind == "multihash" and self.multihash_tables * self.multihash_bits > dim:
            raise ValueError(f"`multihash_tables` x `multihash_bits` must be at most the {dim} bits of a code, got "
                             f"{self.multihash_tables} x {self.multihash_bits}.")
        if self.kind == "flat":
            self._inner = faiss.IndexBinaryFlat(dim)
        elif self.kind == "hnsw":
            self._inner = faiss.IndexBinaryHNSW(dim, self.hnsw_neighbors)
            self._inner.hnsw.efSearch = self.hnsw_search_depth
        elif self.kind == "multihash":
            self._inner = faiss.IndexBinaryMultiHash(dim, self.multihash_tables, self.multihash_bits)
            self._inner.nflip = self.multihash_flips
        else:
            self._inner = None  # built at the first add, when nlist can follow the data size
        self._index = None
        self._lists_mapped = False
        self._id_parts = []

    @property
    def ntotal(self):
        with self._lock:
            return sum(part.shape[0] for part in self._id_parts)

    def _all_ids(self):
        """The ids of every code held, by position (one array; call under the lock)."""
        if len(self._id_parts) != 1:
            self._id_parts = [np.concatenate(self._id_parts) if self._id_parts else np.empty(0, np.int64)]
        return self._id_parts[0]

    def _build(self, codes):
        faiss = self._faiss
        if self.kind == "ivf":
            # k-means needs at least one training code per list.
            if self.nlist is not None and codes.shape[0] < self.nlist:
                raise ValueError(f"FaissIndex(kind='ivf', nlist={self.nlist}) trains its lists on the first `add`, "
                                 f"which needs at least {self.nlist} codes, got {codes.shape[0]}; add more codes "
                                 "first or pass a smaller `nlist`.")
            nlist = self.nlist or max(1, min(codes.shape[0], int(4 * np.sqrt(codes.shape[0]))))
            quantizer = faiss.IndexBinaryFlat(8 * self.width)
            self._inner = faiss.IndexBinaryIVF(quantizer, 8 * self.width, nlist)
            self._inner.nprobe = self.nprobe
            self._quantizer = quantizer  # keep it alive as long as the index
            self._inner.train(codes)
        # Faiss numbers codes by position; ids are mapped here, so ties can be ordered by position.
        self._index = self._inner

    def add(self, codes: ArrayLike, ids: ArrayLike | None = None) -> FaissIndex:
        codes = self._check(codes, "codes")
        with self._lock:  # Faiss does not allow add beside a search; default ids follow the codes held
            ids = self._check_ids(ids, codes.shape[0])
            if codes.shape[0] == 0:
                return self  # nothing to add, and an IVF index cannot train on nothing
            if self._index is None:
                self._build(codes)
            self._lists_into_memory()
            self._index.add(codes)
            self._id_parts.append(ids)
        return self

    def _lists_into_memory(self):
        """Copies the lists of a loaded IVF index, memory-mapped read-only, into memory (where Faiss can add to
        them or write them out); a no-op for any other index."""
        if not self._lists_mapped:
            return
        faiss, mapped = self._faiss, self._index.invlists
        lists = faiss.ArrayInvertedLists(mapped.nlist, mapped.code_size)
        mapped.copy_subset_to(lists, faiss.InvertedLists.SUBSET_TYPE_ID_RANGE, 0, np.iinfo(np.int64).max)
        self._index.replace_invlists(lists, True)
        lists.this.disown()  # the index owns the lists now
        self._lists_mapped = False

    def _write_files(self, directory):
        files = {"ids": _write_arrays(directory, IDS_FILE, [self._all_ids().astype("<i8", copy=False)])}
        if self._index is not None:
            self._lists_into_memory()
            self._faiss.write_index_binary(self._index, os.path.join(directory, FAISS_FILE))
            files["faiss"] = {"name": FAISS_FILE, "bytes": os.path.getsize(os.path.join(directory, FAISS_FILE))}
        return files, {"kind": self.kind, "nlist": self.nlist, "nprobe": self.nprobe,
                       "hnsw_neighbors": self.hnsw_neighbors, "hnsw_search_depth": self.hnsw_search_depth,
                       "multihash_tables": self.multihash_tables,
                       "multihash_bits": self.multihash_bits, "multihash_flips": self.multihash_flips}

    def _open_files(self, directory, manifest):
        count = manifest["count"]
        ids = _map_array(directory, manifest, "ids", np.dtype("<i8"), (count,))
        if "faiss" not in manifest["files"]:
            if count:
                raise ValueError(f"`path` {directory!r}: the manifest lists {count} codes but no {FAISS_FILE}.")
            return
        _check_file(directory, manifest, "faiss")
        # An IVF index's lists, nearly all of its size, are memory-mapped: opening reads the quantizer only,
        # and a search pages in the lists it probes. (Faiss maps the lists of no other binary index.)
        flags = self._faiss.IO_FLAG_MMAP if self.kind == "ivf" else 0
        try:
            index = self._faiss.read_index_binary(os.path.join(directory, FAISS_FILE), flags)
        except RuntimeError as err:
            raise ValueError(f"`path` {directory!r}: {FAISS_FILE} cannot be read by Faiss (damaged?): "
                             f"{_validation.error_summary(err)}") from err
        if index.ntotal != count or index.d != 8 * self.width:
            raise ValueError(f"`path` {directory!r}: {FAISS_FILE} holds {index.ntotal} codes of {index.d} bits, the "
                             f"manifest says {count} of {8 * self.width}.")
        if self.kind == "ivf":
            index.nprobe = self.nprobe
        if self.kind == "multihash":
            index.nflip = self.multihash_flips
        if self.kind == "hnsw":
            index.hnsw.efSearch = self.hnsw_search_depth
        self._inner = self._index = index
        self._lists_mapped = self.kind == "ivf"
        self._id_parts = [ids]

    def search(self, queries: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = self._check(queries, "queries")
        with self._lock:
            k = self._capped_k(k)
            if k == 0:
                return np.empty((queries.shape[0], 0), np.int32), np.empty((queries.shape[0], 0), np.int64)
            if self.kind == "hnsw":  # fewer candidates than k would leave result slots empty
                self._index.hnsw.efSearch = max(self.hnsw_search_depth, k)
            distances, positions = self._index.search(queries, k)
            ids = self._all_ids()
        distances = np.where(positions < 0, PAD_DISTANCE, distances).astype(np.int32)
        # Equal distances in insertion order, as every index answers (Faiss's heaps do not promise it).
        order = np.lexsort((np.where(positions < 0, np.iinfo(np.int64).max, positions), distances), axis=-1)
        distances, positions = np.take_along_axis(distances, order, -1), np.take_along_axis(positions, order, -1)
        return distances, np.where(positions < 0, -1, ids[np.maximum(positions, 0)])

    def range_search(self, queries: ArrayLike, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        queries = self._check(queries, "queries")
        radius = self._check_radius(radius)
        if self.kind == "hnsw":
            raise NotImplementedError("FaissIndex(kind='hnsw') has no range search (Faiss's IndexBinaryHNSW "
                                      "implements k-NN search only); use kind='flat' or 'ivf', or search().")
        with self._lock:
            if self._index is None:
                return np.zeros(queries.shape[0] + 1, np.int64), np.empty(0, np.int32), np.empty(0, np.int64)
            # Faiss's range is exclusive (distance < radius); ours is inclusive.
            lims, distances, positions = self._index.range_search(queries, radius + 1)
            ids = self._all_ids()
        lims, distances, positions = lims.astype(np.int64), distances.astype(np.int32), positions.astype(np.int64)
        # Faiss returns each ball unordered: order by (query, distance, insertion order).
        query = np.repeat(np.arange(queries.shape[0]), np.diff(lims))
        order = np.lexsort((positions, distances, query))
        return lims, distances[order], ids[positions[order]]


class MilvusIndex(_SearchIndex):
    """Codes in a Milvus collection (needs the ``[milvus]`` extra: ``pip install "tfhash[milvus]"``).

    The codes live in Milvus, not in this process: ``uri`` is a local ``.db`` file (Milvus Lite, for tests and
    laptops) or a server's address (a standalone or distributed deployment, with ``token``). The collection
    holds a ``BINARY_VECTOR`` field searched with the ``HAMMING`` metric (``BIN_FLAT``, exact, or
    ``BIN_IVF_FLAT``, approximate), the id of each code, and its insertion number, by which equal distances
    are ordered as in every index (among the codes Milvus returns; at the k-th distance Milvus may return
    other codes at that distance). A range search returns every code in the ball (a query with more than
    ``MAX_RESULTS`` in it is paged through Milvus's search iterator). ``save`` writes a manifest that names the uri and collection; the codes
    stay in Milvus. An existing collection is never dropped or changed by creating an index: name a new one,
    or open it with :func:`load`.

    Args:
        bits: code length.
        uri: ``"path/to/file.db"`` (Milvus Lite) or ``"http://host:19530"``.
        collection: the collection to create (or, from :func:`load`, to open).
        kind: ``"flat"`` (exact) or ``"ivf"`` (``nlist`` lists, ``nprobe`` visited per query; a server only:
            Milvus Lite indexes binary vectors with ``BIN_FLAT`` only).
        token: credentials for a server (``"user:password"`` or an API key).
    """

    backend = "milvus"
    KINDS = ("flat", "ivf")
    MAX_RESULTS = 16384  # Milvus returns at most this many results per query (its topk limit)

    # Milvus Lite gives the server process it starts for a local file half a second; on a loaded machine or a
    # cold disk its socket comes later and the first connection fails. A local file is retried this long.
    LITE_START_SECONDS = 30.0

    def __init__(self, bits, uri, *, collection="tfhash", kind="flat", nlist=1024, nprobe=16, token=None,
                 _open_existing=False):
        super().__init__(bits)
        try:
            from pymilvus import DataType, MilvusClient
        except ImportError as err:
            raise ImportError('MilvusIndex needs pymilvus (and Milvus Lite for local files): '
                              'pip install "tfhash[milvus]".') from err
        if not isinstance(uri, (str, os.PathLike)) or not os.fspath(uri).strip():
            raise ValueError(f"`uri` must be a Milvus Lite file (*.db) or a server address, got {uri!r}.")
        self.uri = os.fspath(uri)
        if "://" not in self.uri:
            if not self.uri.endswith(".db"):
                raise ValueError(f"`uri` must end in .db for Milvus Lite (a local file) or be a server address "
                                 f"such as http://localhost:19530, got {self.uri!r}.")
            self.uri = os.path.abspath(self.uri)
        self.collection = str(collection)
        self.kind = _validation.check_choice(kind, "kind", self.KINDS)
        self.nlist = _validation.check_positive_int(nlist, "nlist")
        self.nprobe = _validation.check_positive_int(nprobe, "nprobe")
        self.token = token
        if self.kind == "ivf" and "://" not in self.uri:
            raise ValueError("`kind`='ivf' (BIN_IVF_FLAT) needs a Milvus server: Milvus Lite (a local .db file) "
                             "indexes binary vectors with BIN_FLAT only; use kind='flat' there.")
        self._client = self._connect(MilvusClient)
        exists = self._client.has_collection(self.collection)
        if _open_existing:
            if not exists:
                raise ValueError(f"`collection` {self.collection!r} does not exist at {self.uri!r}.")
            self._client.load_collection(self.collection)
            self._count = self._row_count()
            return
        if exists:
            raise ValueError(f"`collection` {self.collection!r} already exists at {self.uri!r}; an index never "
                             "replaces one. Name a new collection, or open this one with tfhash.index.load.")
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("seq", DataType.INT64, is_primary=True)  # insertion order: the tie order
        schema.add_field("item_id", DataType.INT64)
        schema.add_field("code", DataType.BINARY_VECTOR, dim=8 * self.width)
        index_params = self._client.prepare_index_params()
        if self.kind == "flat":
            index_params.add_index(field_name="code", index_type="BIN_FLAT", metric_type="HAMMING")
        else:
            index_params.add_index(field_name="code", index_type="BIN_IVF_FLAT", metric_type="HAMMING",
                                   params={"nlist": self.nlist})
        self._client.create_collection(self.collection, schema=schema, index_params=index_params)
        self._client.load_collection(self.collection)
        self._count = 0

    def _connect(self, client_class):
        from pymilvus import MilvusException, Status

        deadline = time.monotonic() + (self.LITE_START_SECONDS if "://" not in self.uri else 0.0)
        while True:
            try:
                return client_class(uri=self.uri, **({"token": self.token} if self.token else {}))
            except MilvusException as err:
                if err.code != Status.CONNECT_FAILED or time.monotonic() >= deadline:
                    raise
            time.sleep(0.5)

    def _row_count(self):
        self._client.flush(self.collection)
        return int(self._client.get_collection_stats(self.collection)["row_count"])

    @property
    def ntotal(self):
        with self._lock:
            return self._count

    def add(self, codes: ArrayLike, ids: ArrayLike | None = None) -> MilvusIndex:
        codes = self._check(codes, "codes")
        with self._lock:
            ids = self._check_ids(ids, codes.shape[0])
            for start in range(0, codes.shape[0], 10_000):
                rows = [{"seq": self._count + start + i, "item_id": int(item), "code": code.tobytes()}
                        for i, (code, item) in enumerate(zip(codes[start:start + 10_000], ids[start:start + 10_000]))]
                self._client.insert(self.collection, rows)
            self._count += codes.shape[0]
        return self

    def _search_params(self, params):
        return {"metric_type": "HAMMING", "params": {"nprobe": self.nprobe, **params}}

    def _search(self, queries, limit, params):
        return self._client.search(self.collection, data=[q.tobytes() for q in queries], limit=limit,
                                   anns_field="code", search_params=self._search_params(params),
                                   output_fields=["item_id"])

    @staticmethod
    def _ordered(hits):
        """Distances and ids of one query's hits, by distance, then insertion number."""
        hits = sorted(hits, key=lambda h: (h["distance"], h["id"]))
        return (np.array([int(h["distance"]) for h in hits], np.int32),
                np.array([int(h["entity"]["item_id"]) for h in hits], np.int64))

    def search(self, queries: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = self._check(queries, "queries")
        with self._lock:
            k = self._capped_k(k)
            if k > self.MAX_RESULTS:
                raise ValueError(f"`k` must be at most {self.MAX_RESULTS} for a Milvus index (Milvus's limit), got {k}.")
            out_dist = np.full((queries.shape[0], k), PAD_DISTANCE, np.int32)
            out_ids = np.full((queries.shape[0], k), -1, np.int64)
            if k == 0 or queries.shape[0] == 0:
                return out_dist, out_ids
            for row, hits in enumerate(self._search(queries, k, {})):
                distances, ids = self._ordered(hits)
                out_dist[row, :len(ids)], out_ids[row, :len(ids)] = distances, ids
        return out_dist, out_ids

    def range_search(self, queries: ArrayLike, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        queries = self._check(queries, "queries")
        radius = self._check_radius(radius)
        # Milvus's range keeps range_filter <= distance < radius; ours is inclusive.
        params = {"radius": radius + 1, "range_filter": 0}
        with self._lock:
            if self._count == 0 or queries.shape[0] == 0:
                return np.zeros(queries.shape[0] + 1, np.int64), np.empty(0, np.int32), np.empty(0, np.int64)
            parts = [self._ordered(hits) for hits in self._search(queries, min(self.MAX_RESULTS, self._count), params)]
            for row, (distances, _) in enumerate(parts):
                if distances.shape[0] >= self.MAX_RESULTS and self._count > self.MAX_RESULTS:
                    # more than one search returns: page through this query's ball with Milvus's iterator
                    parts[row] = self._ordered(self._every_hit(queries[row], params))
        lims = np.concatenate([[0], np.cumsum([d.shape[0] for d, _ in parts])]).astype(np.int64)
        return (lims, np.concatenate([d for d, _ in parts]).astype(np.int32),
                np.concatenate([i for _, i in parts]).astype(np.int64))

    def _every_hit(self, query, params):
        iterator = self._client.search_iterator(
            self.collection, data=[query.tobytes()], batch_size=self.MAX_RESULTS, limit=-1, anns_field="code",
            search_params=self._search_params(params), output_fields=["item_id"])
        hits = []
        try:
            while page := iterator.next():
                hits += page
        finally:
            iterator.close()
        return hits

    def _write_files(self, directory):
        return {}, {"uri": self.uri, "collection": self.collection, "kind": self.kind, "nlist": self.nlist,
                    "nprobe": self.nprobe}

    def _open_files(self, directory, manifest):
        if self._count != manifest["count"]:
            raise ValueError(f"`path` {directory!r}: the Milvus collection {self.collection!r} at {self.uri!r} holds "
                             f"{self._count} codes, the manifest says {manifest['count']}.")


BACKENDS = {"numpy": HammingIndex, "faiss": FaissIndex, "milvus": MilvusIndex}


def make_index(bits: int, backend: str = "numpy", **options) -> HammingIndex | FaissIndex | MilvusIndex:
    """An empty index: ``backend="numpy"`` (:class:`HammingIndex`), ``"faiss"`` (:class:`FaissIndex`) or
    ``"milvus"`` (:class:`MilvusIndex`, which needs ``uri``)."""
    _validation.check_choice(backend, "backend", BACKENDS)
    return BACKENDS[backend](bits, **options)


# --- files -----------------------------------------------------------------------------------------


def encoder_description(encoder):
    """What a manifest records of the encoder that made the codes: scheme, bits and the encoder's
    fingerprint (a digest of its weights; ``None`` for exports written before fingerprints existed)."""
    if encoder is None:
        return None
    if not hasattr(encoder, "bits") or not hasattr(encoder, "scheme"):
        raise ValueError(f"`encoder` must be a tfhash Hasher or a loaded export (tfhash.load), got "
                         f"{type(encoder).__name__}.")
    return {"scheme": str(encoder.scheme), "bits": int(encoder.bits),
            "fingerprint": getattr(encoder, "fingerprint", None)}


def _manifest(backend, bits, count, options, files, encoder, details=None):
    return {"format": FORMAT, "version": FORMAT_VERSION, "backend": backend, "bits": int(bits),
            "code_bytes": codes_lib.num_bytes(bits), "count": int(count), "options": options, "files": files,
            "encoder": encoder, "bit_order": "lsb-first (Faiss layout)", "ids": "int64 little-endian",
            "details": details or {}}


def _write_directory(path, overwrite, fill, label="tmp"):
    """Writes a saved index at ``path`` whole and returns ``path``: ``fill(directory)`` writes the files into a
    new directory beside it and returns the manifest; :func:`_seal` then renames it into place. The directory
    is removed if anything fails."""
    path = check_save_target(path, overwrite)
    target = os.path.abspath(path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    directory = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=f".{os.path.basename(target)}.{label}-")
    try:
        _seal(directory, target, overwrite, fill(directory))
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return path


def _seal(directory, target, overwrite, manifest):
    """Finishes an index written into ``directory``: its manifest, the modes the user's umask gives, then one
    rename to ``target``, which replaces only a previous index, and only with ``overwrite``."""
    _io.write_json_atomically(os.path.join(directory, MANIFEST), manifest)
    _io.honour_umask(directory)
    _io.place_directory(directory, target, PREVIOUS_INDEX if overwrite else None)


def _write_arrays(directory, name, arrays):
    """Writes the arrays' bytes (C order), one after another, to ``directory/name``, in pieces so a
    memory-mapped array is streamed; returns the manifest's entry for the file."""
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        for array in arrays:
            rows = max(1, (64 << 20) // max(1, array.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))))
            for start in range(0, array.shape[0], rows):
                f.write(np.ascontiguousarray(array[start:start + rows]).tobytes())
        f.flush()
        os.fsync(f.fileno())
    return {"name": name, "bytes": os.path.getsize(path)}


def _check_file(directory, manifest, key):
    entry = manifest["files"].get(key)
    if not isinstance(entry, dict) or entry.get("name") not in INDEX_ENTRIES:
        raise ValueError(f"`path` {directory!r}: the manifest lists no valid {key!r} file.")
    path = os.path.join(directory, entry["name"])
    if not os.path.isfile(path):
        raise ValueError(f"`path` {directory!r} is missing {entry['name']} (a damaged or partly copied index).")
    size = os.path.getsize(path)
    if size != entry["bytes"]:
        state = "truncated" if size < entry["bytes"] else "longer than written"
        raise ValueError(f"`path` {directory!r}: {entry['name']} is {state}: {size} bytes, the manifest says "
                         f"{entry['bytes']} (a damaged or partly copied index).")
    return path


def _map_array(directory, manifest, key, dtype, shape):
    path = _check_file(directory, manifest, key)
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if os.path.getsize(path) != expected:
        raise ValueError(f"`path` {directory!r}: {os.path.basename(path)} holds {os.path.getsize(path)} bytes, "
                         f"{shape[0]} items of the manifest need {expected}.")
    if expected == 0:
        return np.empty(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def read_manifest(path):
    """The manifest of the saved index at ``path``, checked (a dict)."""
    manifest_path = os.path.join(os.fspath(path), MANIFEST)
    if not os.path.isfile(manifest_path):
        raise ValueError(f"`path` must be a saved tfhash index (a directory with {MANIFEST}), got {path!r}.")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    except ValueError as err:
        raise ValueError(f"`path` {path!r}: {MANIFEST} is not valid JSON ({err}).") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"`path` {path!r}: {MANIFEST} is not a tfhash index manifest.")
    if manifest.get("version") != FORMAT_VERSION:
        raise ValueError(f"`path` {path!r} was saved in index format version {manifest.get('version')!r}; this "
                         f"tfhash reads version {FORMAT_VERSION}.")
    try:
        _validation.check_bits(manifest["bits"])
        if manifest["backend"] not in BACKENDS or not isinstance(manifest["files"], dict):
            raise ValueError(f"backend {manifest['backend']!r}")
        if not isinstance(manifest["count"], int) or manifest["count"] < 0:
            raise ValueError(f"count {manifest['count']!r}")
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"`path` {path!r}: {MANIFEST} is damaged ({_validation.error_summary(err)}).") from err
    return manifest


def _why_not_replaceable(path):
    """Why ``path`` is not a saved index that overwrite=True may replace, or None when it is."""
    try:
        read_manifest(path)
    except (OSError, ValueError):
        return "is not empty and is not a saved tfhash index"
    foreign = sorted(set(os.listdir(path)) - INDEX_ENTRIES)
    if foreign:
        return f"is a saved tfhash index that also holds other files ({', '.join(foreign)})"
    return None


PREVIOUS_INDEX = _io.Replaceable("a previous index", _why_not_replaceable)


def check_save_target(path, overwrite=False):
    """``path`` if an index may be saved there (new, an empty directory, or with ``overwrite`` a previous index
    holding nothing else); else a ValueError that says why. For callers that do long work before saving."""
    return _io.check_directory_target(path, overwrite, PREVIOUS_INDEX)


def check_encoder(manifest, encoder, path):
    """Refuses an ``encoder`` whose codes are not the ones the index at ``path`` holds."""
    if encoder is None:
        return
    asked = encoder_description(encoder)
    if asked["bits"] != manifest["bits"]:
        raise ValueError(f"`encoder` makes {asked['bits']}-bit codes; the index at {path!r} holds "
                         f"{manifest['bits']}-bit codes.")
    saved = manifest.get("encoder")
    if saved is None:
        return  # the index does not say which encoder made it
    if saved.get("scheme") != asked["scheme"]:
        raise ValueError(f"`encoder` is a {asked['scheme']!r} encoder; the index at {path!r} holds codes of a "
                         f"{saved.get('scheme')!r} encoder.")
    if saved.get("fingerprint") and asked["fingerprint"] and saved["fingerprint"] != asked["fingerprint"]:
        raise ValueError(f"`encoder` is not the encoder whose codes the index at {path!r} holds (fingerprint "
                         f"{asked['fingerprint'][:12]} against {saved['fingerprint'][:12]}): its codes would not "
                         "be comparable. Build the index again with this encoder.")


def build(encoder, source, path: str | os.PathLike, **options) -> HammingIndex | FaissIndex:
    """Streams ``source`` through ``encoder`` into a saved index at ``path`` (see
    :func:`tfhash.collection.build` for the arguments): bounded memory, a progress bar, resumable."""
    from tfhash import collection

    return collection.build(encoder, source, path, **options)


def load(path: str | os.PathLike, *, encoder=None, **options) -> HammingIndex | FaissIndex:
    """Opens an index written by ``save`` or :func:`build`.

    The exact index's codes and ids are memory-mapped, not read: opening costs the same for any size, and
    searches page in what they scan. ``encoder`` (optional) must be the one the codes were made with (same
    bits, scheme and fingerprint), else the index is refused. ``options`` override the saved search
    options (e.g. ``n_jobs``, ``nprobe``). A truncated or damaged file is refused with what is wrong.
    """
    path = os.fspath(path)
    manifest = read_manifest(path)
    check_encoder(manifest, encoder, path)
    # Saved options this version no longer takes (e.g. the exact index's retired chunk_size) are search
    # settings, not part of the codes: they are left out rather than refusing the index.
    taken = inspect.signature(BACKENDS[manifest["backend"]]).parameters
    saved = {key: value for key, value in (manifest.get("options") or {}).items()
             if value is not None and key in taken}
    if manifest["backend"] == "milvus":
        saved["_open_existing"] = True  # the codes are in the collection the manifest names
    index = make_index(manifest["bits"], manifest["backend"], **{**saved, **options})
    index._open_files(path, manifest)
    return index
