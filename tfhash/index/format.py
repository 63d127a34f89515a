"""The saved index's on-disk format: the one module that reads and writes it.

A saved index is a directory holding ``index.json`` (the manifest) and the files it lists:

============================  ==================================================================
file                          what it holds
============================  ==================================================================
``index.json``                the manifest (fields below); written last, by one rename
``codes-NNNNNN.bin``          a segment's packed codes, ``count x code_bytes`` bytes, row order
``ids-NNNNNN.bin``            the segment's ids, int64 little-endian, one per code
``names-NNNNNN.idx`` / .bin   optional: each item's name (a file's path relative to the source root,
                              a record's key) as UTF-8 text, and ``count + 1`` int64 offsets into it
``removed-NNNNNN.bin``        rows removed since the segments were written (int64 row numbers)
``tables-NNNNNN.idx`` / .bin  optional, ``kind="mih"``: a run of multi-index hashing tables over rows
                              ``first .. first + rows``: per substring, ``2**direct_bits + 1`` offsets
                              (``.idx``), then per substring the run's rows (``.bin``); both int32 / uint32
                              below 2**31 rows (``row_bytes`` 4), int64 above
``faiss.index``               a Faiss index (Faiss backends: codes live here, ids in ``ids-*``)
``index.lock``                held while a process appends to the index
============================  ==================================================================

Manifest fields: ``format`` ("tfhash-index"), ``version`` (:data:`FORMAT_VERSION`), ``backend``, ``bits``,
``code_bytes``, ``count`` (items held), ``rows`` (rows written, removed ones included), ``generation``
(raised by every save, so two writers cannot both append to what they loaded), ``options`` (search
settings), ``encoder`` (scheme, bits and fingerprint of the encoder that made the codes), ``segments``
(each ``{"rows", "codes", "ids", "names"?}`` with file entries), ``removed`` (a file entry or null),
``faiss`` (a file entry, Faiss backends), ``tables`` (optional: each run's ``{"first", "rows", "substrings",
"direct_bits", "row_bytes", "offsets", "rows_file"}``, substrings as ``[first bit, length]``), ``location``
(Milvus),
``checksum`` (the algorithm), ``details`` (a build's source, skipped items, listing). A file entry is
``{"name", "bytes", "xxh3_128"}``.

Checksums are XXH3-128 (the ``xxhash`` package): about 20 GB/s of one core on data in memory, so a
verifying load is bound by the disk, not the hash. ``load(verify=False)`` skips them.

Every write is atomic: a new index is written into a hidden directory beside the target and renamed into
place; an append writes new files under new names, then replaces the manifest by a rename, under a lock
and only if the manifest is still the one the writer loaded.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import xxhash

from tfhash import _io, _validation

MANIFEST = "index.json"
LOCK_FILE = "index.lock"
FORMAT = "tfhash-index"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: one codes.bin / ids.bin pair, no checksums
CHECKSUM = "xxh3_128"
FAISS_FILE = "faiss.index"
ID_DTYPE = np.dtype("<i8")
BACKENDS = ("numpy", "faiss", "milvus")
# Every name an index writes; anything else in a directory makes it not (only) an index.
ENTRY = re.compile(r"(index\.json|index\.lock|faiss\.index|codes\.bin|ids\.bin|"
                   r"(codes|ids|names|removed|tables)-\d{6}\.(bin|idx))")
_BLOCK = 16 << 20


def segment_file(kind: str, number: int) -> str:
    """The name of segment ``number``'s file of ``kind``: "codes", "ids", "names", "tables" (their ``.bin``),
    "offsets" (the names' ``.idx``), "table_offsets" (the tables' ``.idx``) or "removed"."""
    stem, extension = {"offsets": ("names", "idx"), "table_offsets": ("tables", "idx")}.get(kind, (kind, "bin"))
    return f"{stem}-{number:06d}.{extension}"


def _hasher():
    return xxhash.xxh3_128()


def file_checksum(path: str | os.PathLike) -> str:
    """The XXH3-128 hex digest of a file, read in 16 MB blocks."""
    digest = _hasher()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def describe_file(directory: str | os.PathLike, name: str) -> dict:
    """The manifest entry of a finished file in ``directory``."""
    path = os.path.join(directory, name)
    return {"name": name, "bytes": os.path.getsize(path), CHECKSUM: file_checksum(path)}


def write_arrays(directory: str | os.PathLike, name: str, arrays: Sequence[np.ndarray]) -> dict:
    """Writes the arrays' bytes (C order) one after another to a new file ``directory/name``, in pieces (a
    memory-mapped array is streamed), synced to disk; returns its manifest entry (size and checksum)."""
    path = os.path.join(directory, name)
    digest, size = _hasher(), 0
    with open(path, "xb") as f:
        for array in arrays:
            row_bytes = max(1, array.itemsize * int(np.prod(array.shape[1:], dtype=np.int64)))
            rows = max(1, (64 << 20) // row_bytes)
            for start in range(0, array.shape[0], rows):
                block = np.ascontiguousarray(array[start:start + rows]).tobytes()
                f.write(block)
                digest.update(block)
                size += len(block)
        f.flush()
        os.fsync(f.fileno())
    return {"name": name, "bytes": size, CHECKSUM: digest.hexdigest()}


def write_names(directory: str | os.PathLike, number: int, names: Any) -> dict:
    """Writes a :class:`Names` column as a names segment; returns its ``{"offsets", "text"}`` entries."""
    return {"offsets": write_arrays(directory, segment_file("offsets", number), [np.asarray(names.offsets, ID_DTYPE)]),
            "text": write_arrays(directory, segment_file("names", number), [np.asarray(names.text, np.uint8)])}


class Names:
    """A segment's names, memory-mapped: ``names[i]`` is row i's name."""

    def __init__(self, offsets, text):
        self.offsets, self.text = offsets, text

    @classmethod
    def of(cls, names: Any) -> Names:
        encoded = [str(name).encode("utf-8") for name in names]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return cls(offsets, np.frombuffer(b"".join(encoded), np.uint8).copy())

    def __len__(self):
        return self.offsets.shape[0] - 1

    def __getitem__(self, row):
        return bytes(self.text[int(self.offsets[row]):int(self.offsets[row + 1])]).decode("utf-8")

    def take(self, rows: Any) -> Names:
        """The names of ``rows``, gathered without a loop over them."""
        rows = np.asarray(rows, np.int64)
        starts = np.asarray(self.offsets[rows], np.int64)
        lengths = np.asarray(self.offsets[rows + 1], np.int64) - starts
        offsets = np.zeros(rows.shape[0] + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Names(offsets, np.asarray(self.text)[gather])

    @staticmethod
    def join(parts: Sequence) -> Names:
        texts = [np.asarray(part.text) for part in parts]
        shifts = np.cumsum([0] + [t.shape[0] for t in texts[:-1]])
        offsets = np.concatenate([[0]] + [np.asarray(p.offsets[1:], np.int64) + s for p, s in zip(parts, shifts)])
        return Names(offsets.astype(np.int64), np.concatenate(texts) if texts else np.empty(0, np.uint8))


# --- reading -----------------------------------------------------------------------------------------


def _damaged(path, what):
    return ValueError(f"`path` {os.fspath(path)!r}: {MANIFEST} is damaged: {what}.")


def _check_entry(path, entry, field):
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not ENTRY.fullmatch(entry["name"]):
        raise _damaged(path, f"{field} must be a file entry {{'name', 'bytes', ...}} naming an index file, got "
                             f"{entry!r}")
    if isinstance(entry.get("bytes"), bool) or not isinstance(entry.get("bytes"), int) or entry["bytes"] < 0:
        raise _damaged(path, f"{field}.bytes must be a non-negative integer, got {entry.get('bytes')!r}")


def _check_int(path, manifest, field):
    value = manifest.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _damaged(path, f"field {field!r} must be a non-negative integer, got {value!r}")
    return value


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of the saved index at ``path``, its fields checked (a dict); a version-1 manifest is
    read as one segment without checksums."""
    path = os.fspath(path)
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise ValueError(f"`path` must be a saved tfhash index (a directory with {MANIFEST}), got {path!r}.")
    manifest = _io.read_json_file(manifest_path, "it is the manifest of a saved tfhash index")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"`path` {path!r}: {MANIFEST} is not a tfhash index manifest.")
    version = manifest.get("version")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"`path` {path!r} was saved in index format version {version!r}; this tfhash reads "
                         f"versions {', '.join(map(str, READABLE_VERSIONS))}.")
    if version == 1:
        manifest = _from_version_1(path, manifest)
    _validation_of(path, manifest)
    return manifest


def _from_version_1(path, manifest):
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise _damaged(path, f"field 'files' must be an object, got {files!r}")
    count = manifest.get("count")
    upgraded = {**manifest, "rows": count, "generation": 0, "removed": None, "segments": [], "checksum": None}
    if "ids" in files:
        upgraded["segments"] = [{"rows": count, "ids": files["ids"], **({"codes": files["codes"]} if "codes" in files
                                                                        else {})}]
    if "faiss" in files:
        upgraded["faiss"] = files["faiss"]
    if manifest.get("backend") == "milvus":
        upgraded["location"] = {k: (manifest.get("options") or {}).get(k) for k in ("uri", "collection")}
    return upgraded


def _validation_of(path, manifest):
    try:
        _validation.check_bits(manifest.get("bits"))
    except ValueError:
        raise _damaged(path, f"field 'bits' must be a positive integer, got {manifest.get('bits')!r}") from None
    if manifest.get("backend") not in BACKENDS:
        raise _damaged(path, f"field 'backend' must be one of {', '.join(BACKENDS)}, got {manifest.get('backend')!r}")
    count, rows = _check_int(path, manifest, "count"), _check_int(path, manifest, "rows")
    _check_int(path, manifest, "generation")
    for field in ("options", "details"):
        if manifest.get(field) is not None and not isinstance(manifest[field], dict):
            raise _damaged(path, f"field {field!r} must be an object, got {manifest[field]!r}")
    encoder = manifest.get("encoder")
    if encoder is not None and (not isinstance(encoder, dict) or not isinstance(encoder.get("scheme"), str)):
        raise _damaged(path, f"field 'encoder' must be null or an object with a 'scheme', got {encoder!r}")
    segments = manifest.get("segments")
    if not isinstance(segments, list):
        raise _damaged(path, f"field 'segments' must be a list, got {segments!r}")
    for i, segment in enumerate(segments):
        if not isinstance(segment, dict):
            raise _damaged(path, f"segments[{i}] must be an object, got {segment!r}")
        _check_int(path, segment, "rows")
        for key in ("codes", "ids") if manifest["backend"] == "numpy" else ("ids",):
            _check_entry(path, segment.get(key), f"segments[{i}].{key}")
        if segment.get("names") is not None:
            names = segment["names"]
            if not isinstance(names, dict):
                raise _damaged(path, f"segments[{i}].names must be an object, got {names!r}")
            for key in ("offsets", "text"):
                _check_entry(path, names.get(key), f"segments[{i}].names.{key}")
    tables = manifest.get("tables") or []
    if not isinstance(tables, list):
        raise _damaged(path, f"field 'tables' must be a list, got {tables!r}")
    covered = 0
    for i, run in enumerate(tables):
        if not isinstance(run, dict) or run.get("first") != covered or run.get("row_bytes") not in (4, 8):
            raise _damaged(path, f"tables[{i}] must be an object whose 'first' ({covered}) follows the run before, "
                                 f"with 'row_bytes' 4 or 8, got {run!r}")
        covered += _check_int(path, run, "rows")
        if not _covers_in_order(run.get("substrings"), manifest["bits"]):
            raise _damaged(path, f"tables[{i}].substrings must be [first bit, length] pairs of 1 to 32 bits that "
                                 f"cover the {manifest['bits']} bits in order, got {run.get('substrings')!r}")
        directs = run.get("direct_bits")
        if (not isinstance(directs, list) or len(directs) != len(run["substrings"])
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= min(length, 24)
                           for d, (_, length) in zip(directs, run["substrings"]))):
            raise _damaged(path, f"tables[{i}].direct_bits must give each substring 1 to min(length, 24) bits, "
                                 f"got {directs!r}")
        for key in ("offsets", "rows_file"):
            _check_entry(path, run.get(key), f"tables[{i}].{key}")
    if covered > rows:
        raise _damaged(path, f"its tables cover {covered} rows, field 'rows' says {rows}")
    for key in ("removed", "faiss"):
        if manifest.get(key) is not None:
            _check_entry(path, manifest[key], key)
    if manifest["backend"] != "milvus" and sum(s["rows"] for s in segments) != rows:
        raise _damaged(path, f"its segments hold {sum(s['rows'] for s in segments)} rows, field 'rows' says {rows}")
    if count > rows:
        raise _damaged(path, f"field 'count' ({count}) is larger than field 'rows' ({rows})")


def _covers_in_order(substrings, bits):
    """Whether ``substrings`` are ``[first bit, length]`` pairs (1 to 32 bits) that cut ``bits`` bits in order."""
    if not isinstance(substrings, list) or not substrings:
        return False
    covered = 0
    for pair in substrings:
        if not (isinstance(pair, list) and len(pair) == 2 and pair[0] == covered and isinstance(pair[1], int)
                and not isinstance(pair[1], bool) and 0 < pair[1] <= 32):
            return False
        covered += pair[1]
    return covered == bits


def file_path(directory: str | os.PathLike, entry: dict, verify: bool) -> str:
    """The path of a listed file, after checking its size (and, with ``verify``, its checksum)."""
    path = os.path.join(directory, entry["name"])
    if not os.path.isfile(path):
        raise ValueError(f"`path` {directory!r} is missing {entry['name']} (a damaged or partly copied index).")
    size = os.path.getsize(path)
    if size != entry["bytes"]:
        state = "truncated" if size < entry["bytes"] else "longer than written"
        raise ValueError(f"`path` {directory!r}: {entry['name']} is {state}: {size} bytes, the manifest says "
                         f"{entry['bytes']} (a damaged or partly copied index).")
    if verify and entry.get(CHECKSUM) is not None and file_checksum(path) != entry[CHECKSUM]:
        raise ValueError(f"`path` {directory!r}: {entry['name']} is damaged: its {CHECKSUM} checksum differs from "
                         "the manifest's (the file changed after it was written). Restore it from a copy or build "
                         "the index again; tfhash.index.load(..., verify=False) opens it unchecked.")
    return path


def map_array(directory: str | os.PathLike, entry: dict, dtype: np.dtype, shape: tuple, verify: bool) -> np.ndarray:
    """A listed file memory-mapped read-only as an array of ``shape``."""
    path = file_path(directory, entry, verify)
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if entry["bytes"] != expected:
        raise ValueError(f"`path` {directory!r}: {entry['name']} holds {entry['bytes']} bytes; {shape[0]} items of "
                         f"the manifest need {expected}.")
    if expected == 0:
        return np.empty(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def map_names(directory: str | os.PathLike, entry: dict, rows: Any, verify: bool) -> Names:
    if entry is None:
        return None
    offsets = map_array(directory, entry["offsets"], ID_DTYPE, (rows + 1,), verify)
    text_bytes = entry["text"]["bytes"]
    if rows and (offsets[0] != 0 or offsets[-1] != text_bytes or np.any(np.diff(offsets) < 0)):
        raise ValueError(f"`path` {directory!r}: {entry['offsets']['name']} does not index "
                         f"{entry['text']['name']} (damaged).")
    return Names(offsets, map_array(directory, entry["text"], np.uint8, (text_bytes,), verify))


def read_segments(directory: str | os.PathLike, manifest: dict, width: int, verify: bool) -> list:
    """``[(codes or None, ids, names or None)]`` of every segment, memory-mapped, and the removed rows."""
    segments = []
    for segment in manifest["segments"]:
        rows = segment["rows"]
        segments.append((map_array(directory, segment["codes"], np.uint8, (rows, width), verify)
                         if "codes" in segment else None,
                         map_array(directory, segment["ids"], ID_DTYPE, (rows,), verify),
                         map_names(directory, segment.get("names"), rows, verify)))
    return segments, read_removed(directory, manifest, verify)


def map_tables(directory: str | os.PathLike, manifest: dict, verify: bool) -> list:
    """``[(first row, substrings, direct bits, offsets, rows)]`` of each saved run of tables, memory-mapped."""
    runs = []
    for run in manifest.get("tables") or []:
        dtypes = {4: (np.dtype("<i4"), np.dtype("<u4")), 8: (ID_DTYPE, ID_DTYPE)}[run["row_bytes"]]
        offsets = map_array(directory, run["offsets"], dtypes[0], (sum(2**d + 1 for d in run["direct_bits"]),),
                            verify)
        rows = map_array(directory, run["rows_file"], dtypes[1], (len(run["substrings"]), run["rows"]), verify)
        runs.append((run["first"], run["substrings"], run["direct_bits"], offsets, rows))
    return runs


def write_tables(directory: str | os.PathLike, number: int, first: int, substrings: Sequence, directs: Sequence,
                 offsets: np.ndarray, rows: np.ndarray) -> dict:
    """Writes a run of multi-index hashing tables as files ``number``; returns its manifest entry."""
    size = rows.dtype.itemsize
    return {"first": int(first), "rows": int(rows.shape[1]), "row_bytes": size,
            "substrings": [[int(start), int(length)] for start, length in substrings],
            "direct_bits": [int(d) for d in directs],
            "offsets": write_arrays(directory, segment_file("table_offsets", number),
                                    [offsets.astype("<i4" if size == 4 else ID_DTYPE, copy=False)]),
            "rows_file": write_arrays(directory, segment_file("tables", number),
                                      [rows.astype("<u4" if size == 4 else ID_DTYPE, copy=False)])}


def read_removed(directory: str | os.PathLike, manifest: dict, verify: bool) -> np.ndarray:
    entry = manifest.get("removed")
    if entry is None:
        return np.empty(0, np.int64)
    removed = np.array(map_array(directory, entry, ID_DTYPE, (entry["bytes"] // 8,), verify), np.int64)
    if removed.size and (removed.min() < 0 or removed.max() >= manifest["rows"]):
        raise ValueError(f"`path` {directory!r}: {entry['name']} names rows outside the index (damaged).")
    return np.unique(removed)


# --- writing ---------------------------------------------------------------------------------------


def new_manifest(backend: str, bits: int, *, count: int, rows: Any, options: dict, encoder: dict | None,
                 segments: list = (), removed: dict | None = None, details: dict | None = None,
                 generation: int = 1, **extra: dict | None) -> dict:
    return {"format": FORMAT, "version": FORMAT_VERSION, "backend": backend, "bits": int(bits),
            "code_bytes": (int(bits) + 7) // 8, "count": int(count), "rows": int(rows), "generation": int(generation),
            "options": options or {}, "encoder": encoder, "segments": list(segments), "removed": removed,
            "checksum": CHECKSUM, "bit_order": "lsb-first (Faiss layout)", "ids": "int64 little-endian",
            "details": details or {}, **extra}


def write_segment(directory: str | os.PathLike, number: int, codes_parts: Sequence[np.ndarray] | None,
                  ids_parts: Sequence[np.ndarray], names: Any = None) -> dict:
    """Writes segment ``number`` (codes unless ``codes_parts`` is None, ids and optional names) into
    ``directory``; returns its entry."""
    rows = sum(part.shape[0] for part in ids_parts)
    segment = {"rows": rows, "ids": write_arrays(directory, segment_file("ids", number),
                                                 [ids.astype(ID_DTYPE, copy=False) for ids in ids_parts])}
    if codes_parts is not None:
        segment["codes"] = write_arrays(directory, segment_file("codes", number), codes_parts)
    if names is not None:
        segment["names"] = write_names(directory, number, names)
    return segment


def write_removed(directory: str | os.PathLike, number: int, rows: Any) -> dict:
    if not len(rows):
        return None
    return write_arrays(directory, segment_file("removed", number), [np.asarray(rows, ID_DTYPE)])


def _why_not_replaceable(path):
    """Why ``path`` is not a saved index that overwrite=True may replace, or None when it is."""
    try:
        read_manifest(path)
    except (OSError, ValueError):
        return "is not empty and is not a saved tfhash index"
    foreign = sorted(name for name in os.listdir(path)
                     if not ENTRY.fullmatch(name) or os.path.islink(os.path.join(path, name))
                     or not os.path.isfile(os.path.join(path, name)))
    if foreign:
        return f"is a saved tfhash index that also holds other files or folders ({', '.join(foreign[:5])})"
    return None


PREVIOUS_INDEX = _io.Replaceable("a previous index", _why_not_replaceable)


def check_save_target(path: str | os.PathLike, overwrite: bool = False) -> str:
    """The directory an index may be saved at (new, an empty directory, or with ``overwrite`` a previous
    index holding nothing else), else a ValueError saying why. A symbolic link to a directory is followed:
    the index is written where it points, and the link stays."""
    path = _io.check_target_path(path, "path")
    if os.path.islink(path):
        if not os.path.exists(path):
            raise ValueError(f"`path` {path!r} is a symbolic link to {os.readlink(path)!r}, which does not exist.")
        path = os.path.realpath(path)
    return _io.check_directory_target(path, overwrite, PREVIOUS_INDEX)


def write_index(path: str | os.PathLike, overwrite: bool, fill: Callable[[str], dict], label: str = "tmp") -> str:
    """Writes a saved index at ``path`` whole and returns the directory written: ``fill(directory)`` writes the
    files into a new hidden directory beside it and returns the manifest; :func:`seal` renames it into place.
    The directory is removed if anything fails."""
    target = os.path.abspath(check_save_target(path, overwrite))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    directory = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=f".{os.path.basename(target)}.{label}-")
    try:
        seal(directory, target, overwrite, fill(directory))
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return target


def seal(directory: str | os.PathLike, target: str | os.PathLike, overwrite: bool, manifest: dict) -> str:
    """Finishes an index written into ``directory``: its manifest, the modes the user's umask gives, then one
    rename to ``target``, which replaces only a previous index, and only with ``overwrite``."""
    _io.write_json_atomically(os.path.join(directory, MANIFEST), manifest)
    _io.honour_umask(directory)
    _io.place_directory(directory, target, PREVIOUS_INDEX if overwrite else None)


@contextlib.contextmanager
def appending(directory: str | os.PathLike, generation: int) -> Iterator[dict]:
    """Holds the index's append lock; refuses when the manifest is no longer at ``generation`` (another
    writer saved since this index was loaded). Yields the manifest to extend."""
    with _io.exclusive_lock(os.path.join(directory, LOCK_FILE), "writer of this index"):
        manifest = read_manifest(directory)
        if manifest["generation"] != generation:
            raise FileExistsError(f"`path` {directory!r} was saved by another writer since this index was loaded "
                                  f"(generation {manifest['generation']}, loaded {generation}); nothing was "
                                  "written. Load it again and repeat the change.")
        yield manifest


def commit_append(directory: str | os.PathLike, manifest: dict) -> None:
    """Replaces the manifest of an index appended to (call inside :func:`appending`)."""
    _io.write_json_atomically(os.path.join(directory, MANIFEST), manifest)
    for name in os.listdir(directory):
        if ENTRY.fullmatch(name):
            _io.honour_umask(os.path.join(directory, name))
