"""Faiss binary indexes behind the tfhash interface (the ``[faiss]`` extra)."""

from __future__ import annotations

import os

import numpy as np
from numpy.typing import ArrayLike

from tfhash import _validation
from tfhash.index import format as fmt
from tfhash.index.base import RowIndex


class FaissIndex(RowIndex):
    """Faiss binary indexes (needs the ``[faiss]`` extra: ``pip install "tfhash[faiss]"``).

    Packed tfhash codes are Faiss's binary layout, so they are handed over as they are. Ids are kept beside
    the Faiss index, which numbers codes by position, so ties are ordered by insertion as in every index.
    Calls are serialised by a lock (Faiss allows no ``add`` beside a search); each search runs on Faiss's
    own threads. Removed items are skipped by searches until ``compact()`` rebuilds the Faiss index.

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
        hnsw_search_depth: HNSW candidates kept while searching (efSearch; at least k is used).
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
        self._index = None
        self._lists_mapped = False

    def _new_faiss_index(self, codes):
        faiss, dim = self._faiss, 8 * self.width
        if self.kind == "flat":
            return faiss.IndexBinaryFlat(dim)
        if self.kind == "hnsw":
            index = faiss.IndexBinaryHNSW(dim, self.hnsw_neighbors)
            index.hnsw.efSearch = self.hnsw_search_depth
            return index
        if self.kind == "multihash":
            index = faiss.IndexBinaryMultiHash(dim, self.multihash_tables, self.multihash_bits)
            index.nflip = self.multihash_flips
            return index
        # k-means needs at least one training code per list.
        if self.nlist is not None and codes.shape[0] < self.nlist:
            raise ValueError(f"FaissIndex(kind='ivf', nlist={self.nlist}) trains its lists on the first `add`, "
                             f"which needs at least {self.nlist} codes, got {codes.shape[0]}; add more codes "
                             "first or pass a smaller `nlist`.")
        nlist = self.nlist or max(1, min(codes.shape[0], int(4 * np.sqrt(codes.shape[0]))))
        self._quantizer = faiss.IndexBinaryFlat(dim)  # kept alive as long as the index
        index = faiss.IndexBinaryIVF(self._quantizer, dim, nlist)
        index.nprobe = self.nprobe
        index.train(codes)
        return index

    def _store(self, codes):
        # Faiss copies the codes into its own storage: handed over as they are, without a copy of ours
        if self._index is None:
            self._index = self._new_faiss_index(codes)
        self._lists_into_memory()
        self._index.add(codes)

    def _all_codes(self):
        index = self._index
        if index is None:
            return np.empty((0, self.width), np.uint8)
        self._lists_into_memory()
        if self.kind == "ivf":
            index.make_direct_map()
        if self.kind == "multihash":  # its codes are in its flat storage
            index = self._faiss.downcast_IndexBinary(index.storage)
        return index.reconstruct_n(0, index.ntotal)

    def _rebuild(self, live_rows):
        codes = self._all_codes()[live_rows]
        self._index = None
        if codes.shape[0]:
            self._store(codes)

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

    def _nearest_rows(self, queries, k):
        if self.kind == "hnsw":  # fewer candidates than k would leave result slots empty
            self._index.hnsw.efSearch = max(self.hnsw_search_depth, k)
        distances, rows = self._index.search(queries, k)
        # Equal distances in insertion order, as every index answers (Faiss's heaps do not promise it).
        order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), distances), axis=-1)
        return np.take_along_axis(distances, order, -1), np.take_along_axis(rows, order, -1)

    def _rows_within(self, queries, radius):
        # Faiss's range is exclusive (distance < radius); ours is inclusive.
        lims, distances, rows = self._index.range_search(queries, radius + 1)
        lims, distances, rows = lims.astype(np.int64), distances.astype(np.int32), rows.astype(np.int64)
        # Faiss returns each ball unordered: order by (query, distance, insertion order).
        query = np.repeat(np.arange(queries.shape[0]), np.diff(lims))
        order = np.lexsort((rows, distances, query))
        return lims, distances[order], rows[order]

    def range_search(self, queries: ArrayLike, radius: int) -> tuple:
        if self.kind == "hnsw":
            raise NotImplementedError("FaissIndex(kind='hnsw') has no range search (Faiss's IndexBinaryHNSW "
                                      "implements k-NN search only); use kind='flat' or 'ivf', or search().")
        return super().range_search(queries, radius)

    def _options(self):
        return {"kind": self.kind, "nlist": self.nlist, "nprobe": self.nprobe, "hnsw_neighbors": self.hnsw_neighbors,
                "hnsw_search_depth": self.hnsw_search_depth, "multihash_tables": self.multihash_tables,
                "multihash_bits": self.multihash_bits, "multihash_flips": self.multihash_flips}

    def _fill(self, directory, encoder, details):
        segments = [fmt.write_segment(directory, 0, None, [self._all_ids()], self._names_of_rows(0, self._rows))]
        extra = {}
        if self._index is not None:
            self._lists_into_memory()
            self._faiss.write_index_binary(self._index, os.path.join(directory, fmt.FAISS_FILE))
            extra["faiss"] = fmt.describe_file(directory, fmt.FAISS_FILE)
        return {**self._written(directory, encoder, details, segments), **extra}

    def _open(self, directory, manifest, verify):
        segments, dead = fmt.read_segments(directory, manifest, self.width, verify)
        for _, ids, names in segments:
            self._adopt_rows(ids, names)
        self._dead = dead
        rows = manifest["rows"]
        if manifest.get("faiss") is None:
            if rows:
                raise ValueError(f"`path` {directory!r}: the manifest lists {rows} codes but no {fmt.FAISS_FILE}.")
            return
        path = fmt.file_path(directory, manifest["faiss"], verify)
        # An IVF index's lists, nearly all of its size, are memory-mapped: opening reads the quantizer only,
        # and a search pages in the lists it probes. (Faiss maps the lists of no other binary index.)
        flags = self._faiss.IO_FLAG_MMAP if self.kind == "ivf" else 0
        try:
            index = self._faiss.read_index_binary(path, flags)
        except RuntimeError as err:
            raise ValueError(f"`path` {directory!r}: {fmt.FAISS_FILE} cannot be read by Faiss (damaged?): "
                             f"{_validation.error_summary(err)}") from err
        if index.ntotal != rows or index.d != 8 * self.width:
            raise ValueError(f"`path` {directory!r}: {fmt.FAISS_FILE} holds {index.ntotal} codes of {index.d} bits, "
                             f"the manifest says {rows} of {8 * self.width}.")
        if self.kind == "ivf":
            index.nprobe = self.nprobe
        if self.kind == "multihash":
            index.nflip = self.multihash_flips
        if self.kind == "hnsw":
            index.hnsw.efSearch = self.hnsw_search_depth
        self._index = index
        self._lists_mapped = self.kind == "ivf"
        self._saved_rows, self._saved_dead = self._rows, dead.shape[0]
