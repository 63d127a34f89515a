"""Codes in a Milvus collection, behind the tfhash interface (the ``[milvus]`` extra)."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from tfhash import _validation
from tfhash.index import format as fmt
from tfhash.index.base import (
    PAD_DISTANCE,
    SearchIndex,
    check_ids,
    duplicate_message,
    encoder_description,
    ids_to_remove,
    missing_message,
)


class MilvusIndex(SearchIndex):
    """Codes in a Milvus collection (needs the ``[milvus]`` extra: ``pip install "tfhash[milvus]"``).

    The codes live in Milvus, not in this process: ``uri`` is a local ``.db`` file (Milvus Lite, for tests and
    laptops) or a server's address (a standalone or distributed deployment, with ``token``). The collection
    holds a ``BINARY_VECTOR`` field searched with the ``HAMMING`` metric (``BIN_FLAT``, exact, or
    ``BIN_IVF_FLAT``, approximate), the id of each code, and its insertion number, by which equal distances
    are ordered as in every index (among the codes Milvus returns; at the k-th distance Milvus may return
    other codes at that distance). A range search returns every code in the ball (a query with more than
    ``MAX_RESULTS`` in it is paged through Milvus's search iterator). ``save`` writes a manifest that names the
    collection and its uri (a Lite file relative to the index directory); the codes stay in Milvus. Removing
    deletes from the collection; Milvus compacts by itself. An existing collection is never dropped or changed by
    creating an index: name a new one,
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
        self._next_seq = 0  # insertion numbers: the primary key and the tie order
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

        if "://" not in self.uri and os.path.isdir(self.uri):
            raise ValueError(f"`uri` {self.uri!r} is a directory; Milvus Lite needs a .db file.")
        deadline = time.monotonic() + (self.LITE_START_SECONDS if "://" not in self.uri else 0.0)
        while True:
            try:
                return client_class(uri=self.uri, **({"token": self.token} if self.token else {}))
            except Exception as err:
                starting = isinstance(err, MilvusException) and err.code == Status.CONNECT_FAILED
                if starting and time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                if "://" in self.uri:
                    raise
                raise OSError(f"`uri` {self.uri!r} cannot be opened by Milvus Lite: it is not a Milvus Lite "
                              "database, or another process has it open "
                              f"({_validation.error_summary(err)}).") from err

    def _row_count(self):
        self._client.flush(self.collection)
        return int(self._client.get_collection_stats(self.collection)["row_count"])

    @property
    def ntotal(self) -> int:
        with self._lock:
            return self._count

    def _held(self, ids):
        """Which of ``ids`` the collection holds."""
        held = set()
        for start in range(0, ids.shape[0], 10_000):
            chunk = [int(i) for i in ids[start:start + 10_000]]
            rows = self._client.query(self.collection, filter=f"item_id in {chunk}", output_fields=["item_id"])
            held |= {int(row["item_id"]) for row in rows}
        return np.isin(ids, np.fromiter(held, np.int64, len(held)))

    def add(self, codes: ArrayLike, ids: ArrayLike | None = None,
            names: Sequence[str | None] | None = None) -> MilvusIndex:
        codes = self._check(codes, "codes")
        if names is not None:
            raise ValueError("`names`: a Milvus index keeps no names; use the numpy or faiss backend for names.")
        with self._lock:
            if ids is None:
                ids = np.arange(self._next_seq, self._next_seq + codes.shape[0], dtype=np.int64)
            ids = check_ids(ids, codes.shape[0], "one per code")
            held = self._held(ids) if self._count else np.zeros(ids.shape[0], bool)
            if held.any():
                raise ValueError(duplicate_message(ids[held], "the index already; `ids`"))
            for start in range(0, codes.shape[0], 10_000):
                rows = [{"seq": self._next_seq + start + i, "item_id": int(item), "code": code.tobytes()}
                        for i, (code, item) in enumerate(zip(codes[start:start + 10_000], ids[start:start + 10_000]))]
                self._client.insert(self.collection, rows)
            self._count += codes.shape[0]
            self._next_seq += codes.shape[0]
        return self

    def remove(self, ids: ArrayLike) -> int:
        ids = ids_to_remove(ids)
        with self._lock:
            held = self._held(ids)
            if not held.all():
                raise ValueError(missing_message(ids, held))
            for start in range(0, ids.shape[0], 10_000):
                self._client.delete(self.collection, filter=f"item_id in {[int(i) for i in ids[start:start + 10_000]]}")
            self._count -= ids.shape[0]
            return int(ids.shape[0])

    def names(self, ids: ArrayLike) -> list:
        raise NotImplementedError("a Milvus index keeps no names; use the numpy or faiss backend for names.")

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
                raise ValueError(f"`k` must be at most {self.MAX_RESULTS} for a Milvus index (Milvus's limit), "
                                 f"got {k}.")
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

    def _location(self, directory):
        """Where the codes are, as the manifest records it: a Milvus Lite file relative to the index directory
        (so the two can be moved together), a server's address as it is."""
        uri = self.uri if "://" in self.uri else os.path.relpath(self.uri, directory)
        return {"uri": uri, "collection": self.collection}

    def _options(self):
        return {"kind": self.kind, "nlist": self.nlist, "nprobe": self.nprobe}

    def _manifest(self, directory, encoder, details, generation=1):
        return fmt.new_manifest(self.backend, self.bits, count=self._count, rows=self._next_seq,
                                options=self._options(), encoder=encoder, details=details, generation=generation,
                                location=self._location(directory))

    def _save_new(self, path, encoder, overwrite, details):
        encoder = encoder_description(encoder)
        with self._lock:
            self._client.flush(self.collection)
            # the working directory is the target's sibling, so a location relative to it holds for the target
            return fmt.write_index(path, overwrite, lambda directory: self._manifest(directory, encoder, details))

    def _save_in_place(self, manifest, encoder, details):
        with self._lock:
            self._client.flush(self.collection)
            encoder = encoder_description(encoder) if encoder is not None else manifest["encoder"]
            updated = self._manifest(self._directory, encoder, {**manifest["details"], **(details or {})},
                                     manifest["generation"] + 1)
            fmt.commit_append(self._directory, updated)
            self._generation = updated["generation"]

    def _open(self, directory, manifest, verify):
        # rows inserted after the last save (not yet in the manifest's count) keep their insertion numbers
        later = self._client.query(self.collection, filter=f"seq >= {manifest['rows']}", output_fields=["seq"],
                                   limit=self.MAX_RESULTS)
        self._next_seq = max([manifest["rows"]] + [int(row["seq"]) + 1 for row in later])
        if self._count != manifest["count"]:
            warnings.warn(f"`path` {directory!r}: the Milvus collection {self.collection!r} at {self.uri!r} holds "
                          f"{self._count} codes, the manifest says {manifest['count']} (changed after the index was "
                          "last saved); it is opened as the collection is now, and index.save() records that.",
                          stacklevel=3)


def location_of(directory: str | os.PathLike, manifest: dict) -> tuple:
    """The uri and collection a saved Milvus index names, a Lite file resolved against its directory."""
    location = manifest.get("location")
    if not isinstance(location, dict) or not isinstance(location.get("uri"), str) or not isinstance(
            location.get("collection"), str):
        raise ValueError(f"`path` {directory!r}: {fmt.MANIFEST} is damaged: field 'location' must be an object "
                         f"with a 'uri' and a 'collection' (strings), got {location!r}.")
    uri = location["uri"]
    if "://" not in uri:
        uri = os.path.normpath(os.path.join(directory, uri))
        if not os.path.isfile(uri):
            what = "is a directory" if os.path.isdir(uri) else "does not exist"
            raise ValueError(f"`path` {directory!r}: its Milvus Lite file {uri!r} {what} (moved without the "
                             "index directory?); nothing was created.")
    return uri, location["collection"]
