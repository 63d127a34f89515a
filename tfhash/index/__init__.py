"""Search over packed binary codes: an exact Hamming index, Faiss and Milvus backends behind one interface
(:class:`SearchIndex`), and saved indexes (:mod:`tfhash.index.format`).

Every index answers with the ``tfhash.metrics`` ranking: ascending Hamming distance, ties by the order in
which items were added. ``search`` returns ``(distances, ids)`` of shape ``[n_query, min(k, len(index))]``.
An approximate index (Faiss IVF / HNSW) can find fewer than k items for a query; those slots hold distance
``PAD_DISTANCE`` and id -1, which is why ids must be non-negative. ``range_search`` returns Faiss-style
``(lims, distances, ids)``: the results of query i are ``distances[lims[i]:lims[i + 1]]``.

**Changes.** ``add`` copies what it is given and refuses an id already held; ``remove(ids)`` and
``update(ids, codes)`` work on every backend; ``compact()`` drops removed items from what is stored.
``save()`` back to the directory an index was loaded from appends what changed (the exact index writes a
new segment; Faiss indexes are written anew by Faiss).

**Files.** ``index.save(path)`` writes a directory atomically; :func:`load` opens it again, checking every
file's checksum (``verify=False`` skips that) and memory-mapping the exact index's codes, ids and names.
:func:`tfhash.collection.build` streams a collection through an encoder into a saved index.

**Threads.** Any number of threads may ``search`` and ``range_search`` at once; an ``add`` concurrent with
searches loses nothing (each search sees the codes added before it started, or also some added during it).
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from tfhash.index.base import PAD_DISTANCE, SearchIndex, check_ids, encoder_description
from tfhash.index.faiss_backend import FaissIndex
from tfhash.index.flat import HammingIndex
from tfhash.index.format import FORMAT_VERSION, MANIFEST, check_save_target, read_manifest
from tfhash.index.milvus import MilvusIndex, location_of

BACKENDS = {"numpy": HammingIndex, "faiss": FaissIndex, "milvus": MilvusIndex}

__all__ = ["BACKENDS", "FORMAT_VERSION", "MANIFEST", "PAD_DISTANCE", "FaissIndex", "HammingIndex", "MilvusIndex",
           "SearchIndex", "check_encoder", "check_ids", "check_save_target", "encoder_description", "load",
           "make_index", "read_manifest"]


def make_index(bits: int, backend: str = "numpy", **options: Any) -> SearchIndex:
    """An empty index: ``backend="numpy"`` (:class:`HammingIndex`: exact; ``kind="flat"`` scans, ``"mih"``
    answers from multi-index hashing tables, ``"auto"`` picks per search), ``"faiss"`` (:class:`FaissIndex`)
    or ``"milvus"`` (:class:`MilvusIndex`, which needs ``uri``)."""
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    return BACKENDS[backend](bits, **options)


def check_encoder(manifest: dict, encoder: Any, path: str | os.PathLike) -> None:
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
    if saved.get("fingerprint") and not asked["fingerprint"]:
        raise ValueError(f"`encoder` carries no fingerprint, so it cannot be checked against the encoder whose codes "
                         f"the index at {path!r} holds ({saved['fingerprint'][:12]}); pass the Hasher or an export "
                         "written by tfhash (its metadata records the fingerprint).")
    if saved.get("fingerprint") and saved["fingerprint"] != asked["fingerprint"]:
        raise ValueError(f"`encoder` is not the encoder whose codes the index at {path!r} holds (fingerprint "
                         f"{asked['fingerprint'][:12]} against {saved['fingerprint'][:12]}): its codes would not "
                         "be comparable. Build the index again with this encoder.")


def load(path: str | os.PathLike, *, encoder: Any = None, kind: str | None = None, verify: bool = True,
         **options: Any) -> SearchIndex:
    """Opens an index written by ``save`` or :func:`tfhash.collection.build`.

    The exact index's files are memory-mapped, not read: searches page in what they scan. ``verify`` checks
    every file against the checksum in the manifest first (reading each file once; ``verify=False`` skips
    that for a huge index and still checks every file's size). ``encoder`` (optional) must be the one the
    codes were made with (same bits, scheme and fingerprint), else the index is refused. ``kind``, when
    given, must be the saved kind. ``options`` override saved search settings (e.g. ``n_jobs``, ``nprobe``).
    Nothing is created and nothing is connected to before the manifest is checked.
    """
    path = os.fspath(path)
    manifest = read_manifest(path)
    check_encoder(manifest, encoder, path)
    backend = BACKENDS[manifest["backend"]]
    saved_kind = (manifest["options"] or {}).get("kind", getattr(backend, "kind", None))
    if kind is not None and kind != saved_kind:
        raise ValueError(f"`kind` {kind!r} disagrees with the index at {path!r}, which is a {saved_kind!r} "
                         f"{manifest['backend']} index; leave `kind` out to open it as it is.")
    # Saved options this version no longer takes are search settings, not part of the codes: left out.
    taken = inspect.signature(backend).parameters
    saved = {key: value for key, value in (manifest["options"] or {}).items() if value is not None and key in taken}
    if manifest["backend"] == "milvus":
        uri, collection = location_of(path, manifest)
        index = MilvusIndex(manifest["bits"], uri, **{**saved, "collection": collection, **options},
                            _open_existing=True)
    else:
        index = backend(manifest["bits"], **{**saved, **options})
    index._open(path, manifest, verify)
    index._directory, index._generation = os.path.abspath(path), manifest["generation"]
    return index
