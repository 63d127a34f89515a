"""Streaming a collection through an encoder into a saved index (:func:`tfhash.index.build`).

The codes and ids are appended to files in a working directory beside the target (``.NAME.build``);
after every few batches they are flushed to disk and ``build.json`` records how far the source has been
read. A build that stops (killed, out of disk, interrupted) resumes from there when run again: the
files are cut back to what ``build.json`` records and the source is read on from the same position, so
no item is missing or twice. The finished directory is then renamed to the target in one step.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from tfhash import _io, _validation, sources
from tfhash import index as index_lib
from tfhash.index import format as fmt
from tfhash.index.mih import SubstringTables

if TYPE_CHECKING:
    from tfhash.hasher import BaseHasher, Hasher

PROGRESS_FILE = "build.json"
LOCK_FILE = "build.lock"
LISTING_FILE = "listing.txt"
CODES_FILE, IDS_FILE = fmt.segment_file("codes", 0), fmt.segment_file("ids", 0)
NAMES_FILE, NAME_OFFSETS_FILE = fmt.segment_file("names", 0), fmt.segment_file("offsets", 0)
FLUSH_SECONDS = 2.0
WORK_ENTRIES = {PROGRESS_FILE, LOCK_FILE, LISTING_FILE, CODES_FILE, IDS_FILE, NAMES_FILE, NAME_OFFSETS_FILE,
                fmt.MANIFEST}


def _working_directory(target):
    return os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.build")


def _exclusive(directory):
    """Holds an exclusive lock on the working directory: a second build of the same index fails at once
    (the lock goes with the process, so a killed build leaves nothing that blocks its resumption)."""
    return _io.exclusive_lock(os.path.join(directory, LOCK_FILE), "build of this index")


def _progress_bar(total, initial, enabled, what="encoding"):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="item", unit_scale=True, desc=what, smoothing=0.1)


def _listing_changes(old, new):
    """What differs between two listings of a folder, in words."""
    old_set, new_set = set(old), set(new)
    added, gone = sorted(new_set - old_set), sorted(old_set - new_set)
    parts = [f"{len(added)} file(s) added ({', '.join(added[:3])}{', ...' if len(added) > 3 else ''})"] if added else []
    if gone:
        parts.append(f"{len(gone)} file(s) gone ({', '.join(gone[:3])}{', ...' if len(gone) > 3 else ''})")
    return "; ".join(parts) or "the same files in another order"


def _resume_state(work, expected, resume, source):
    """What an earlier build in ``work`` got through, or a fresh state; refuses a build of other data."""
    path = os.path.join(work, PROGRESS_FILE)
    if not os.path.isfile(path):
        return {**expected, "consumed": 0, "written": 0, "name_bytes": 0, "skipped": []}
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    if not resume:
        raise ValueError(f"an interrupted build of this index is in {work!r}; pass resume=True to finish it (or "
                         "delete that directory to start again).")
    listing_path = os.path.join(work, LISTING_FILE)
    if source.listing() is not None and os.path.isfile(listing_path) and state.get("source") != expected["source"]:
        with open(listing_path, encoding="utf-8") as f:
            before = f.read().split("\n")
        if before != source.listing():
            raise ValueError(f"`source` changed since the interrupted build in {work!r} began: "
                             f"{_listing_changes(before, source.listing())}. Its ids would no longer name the same "
                             "files; delete that directory to build again from the folder as it is now.")
    for key in ("source", "encoder", "bits", "batch_size", "ids"):
        if state.get(key) != expected[key]:
            raise ValueError(f"the interrupted build in {work!r} was made with another {key} ({state.get(key)!r}, "
                             f"now {expected[key]!r}); it cannot be resumed with this one. Delete that directory "
                             "to start again.")
    return state


def _claim_working_directory(path, work):
    """Creates the build's working directory ``work``, refusing one that holds files no build writes: never write
    into (or later move) someone else's files."""
    os.makedirs(work, exist_ok=True)
    foreign = sorted(set(os.listdir(work)) - WORK_ENTRIES)
    if foreign:
        raise ValueError(f"`path` {path!r}: the build's working directory {work!r} exists and holds files no build "
                         f"writes ({', '.join(foreign[:5])}); move it away or choose another path.")


def _encode_all(encoder, source, ids, state, work, batch_size, progress):
    """Encodes the items of ``source`` not yet in the working directory's files, after the last recorded flush."""
    if source.listing() is not None and not state["consumed"]:
        _io.write_bytes_atomically(os.path.join(work, LISTING_FILE), "\n".join(source.listing()), mode="w")
    files = {key: os.path.join(work, name) for key, name in
             (("codes", CODES_FILE), ("ids", IDS_FILE), ("names", NAMES_FILE), ("offsets", NAME_OFFSETS_FILE))}
    width = (encoder.bits + 7) // 8
    with contextlib.ExitStack() as stack:
        handles = {key: stack.enter_context(open(name, "ab")) for key, name in files.items()}
        # Anything written after the last recorded flush is cut off and encoded again.
        handles["codes"].truncate(state["written"] * width)
        handles["ids"].truncate(state["written"] * 8)
        handles["names"].truncate(state["name_bytes"])
        handles["offsets"].truncate(state["written"] * 8 if source.named else 0)
        _encode_into(encoder, source, ids, state, work, handles, batch_size, progress)


def build(encoder: Hasher | BaseHasher | str | os.PathLike, source: ArrayLike | str | os.PathLike,
          path: str | os.PathLike, *, ids: ArrayLike | None = None, batch_size: int = 256, backend: str = "numpy",
          overwrite: bool = False, resume: bool = True, update: bool = False, progress: bool = True,
          data_dir: str | None = None, image_feature: str = "image", **index_options: Any) -> index_lib.SearchIndex:
    """Encodes every item of ``source`` with ``encoder`` into a saved index at ``path``; returns the index
    (opened with :func:`tfhash.index.load`).

    Args:
        encoder: a :class:`tfhash.Hasher`, a loaded export (``tfhash.load``) or an export's path (SavedModel
            directory or ``.tflite`` file).
        source: an array, a folder of images, a ``.npy`` / ``.fvecs`` / ``.bvecs`` file, TFRecord files or
            ``"tfds:NAME[:SPLIT]"`` (see :func:`tfhash.sources.open_source`). Images are decoded and resized
            to the encoder's input shape. Items of a folder, TFRecord files or TFDS keep their names in the
            index (``index.names(ids)``): a file's path relative to the folder, ``FILE:N`` for record N.
        path: the directory to create (as ``index.save``: new or empty, or a previous index with
            ``overwrite=True``).
        ids: the id of each item of the source, in its order (distinct integers, memory-mapped or not, e.g. a
            database's key column); default: the items' positions in the source.
        batch_size: items encoded at once; memory stays bounded by it whatever the collection's size.
        backend, index_options: the saved index's backend and options (``tfhash.index.make_index``).
        resume: finish an interrupted build of the same source, encoder and batch size (``False``: refuse).
        update: ``path`` is an index built from the same folder: encode only the files added since and remove
            the items of files gone, then save (appending to the index); the counts are in
            ``index.read_manifest(path)["details"]["update"]``.
        progress: a progress bar (items/s, time left).

    Undecodable items are skipped, warned about and listed in the manifest (``details["skipped"]``).
    """
    from tfhash import serving

    batch_size = _validation.check_positive_int(batch_size, "batch_size")
    _validation.check_choice(backend, "backend", index_lib.BACKENDS)
    if isinstance(encoder, (str, os.PathLike)):
        encoder = serving.load(encoder)
    description = index_lib.encoder_description(encoder)
    item_shape = tuple(getattr(encoder, "item_shape", None) or encoder.model.item_shape)
    if update:
        if ids is not None:
            raise ValueError("`ids` cannot be given with update=True: new files get ids after the largest held.")
        source = sources.open_source(source, item_shape, data_dir=data_dir, image_feature=image_feature)
        return _update(encoder, source, path, batch_size, progress)
    path = index_lib.check_save_target(path, overwrite)
    source = sources.open_source(source, item_shape, data_dir=data_dir, image_feature=image_feature)
    ids = None if ids is None else index_lib.check_ids(ids, source.count, "one per item of the source")
    index_lib.make_index(encoder.bits, backend, **index_options)  # refuse bad options before encoding

    target = os.path.abspath(path)
    work = _working_directory(target)
    _claim_working_directory(path, work)
    expected = {"source": source.describe(), "encoder": description, "bits": encoder.bits, "batch_size": batch_size,
                "ids": None if ids is None else {"count": int(ids.shape[0]), "first": int(ids[0]) if ids.size else None,
                                                 "last": int(ids[-1]) if ids.size else None}}
    with _exclusive(work):
        state = _resume_state(work, expected, resume, source)
        _encode_all(encoder, source, ids, state, work, batch_size, progress)
        for entry in state["skipped"]:
            warnings.warn(f"skipped {entry['item']} (id {entry['id']}): {entry['error']}", stacklevel=2)
        _finish(work, target, encoder, backend, index_options, state, overwrite, source.named)
    return index_lib.load(path)


def _encode_into(encoder, source, ids, state, work, handles, batch_size, progress):
    bar = _progress_bar(source.count, state["consumed"], progress)
    last_flush = time.monotonic()
    try:
        for positions, items in source.batches(state["consumed"], batch_size):
            _note_skipped(source, state, state["consumed"], positions)
            codes = np.ascontiguousarray(encoder.encode(items, batch_size=batch_size), dtype=np.uint8)
            handles["codes"].write(codes.tobytes())
            handles["ids"].write((positions if ids is None else ids[positions]).astype("<i8").tobytes())
            if source.named:
                names = [source.name(int(p)).encode("utf-8") for p in positions]
                # each name's end offset (the leading 0 is written when the index is finished)
                ends = state["name_bytes"] + np.cumsum([len(n) for n in names], dtype=np.int64)
                handles["names"].write(b"".join(names))
                handles["offsets"].write(ends.astype("<i8").tobytes())
                state["name_bytes"] = int(ends[-1]) if len(names) else state["name_bytes"]
            state["written"] += int(positions.size)
            state["consumed"] = int(positions[-1]) + 1 if positions.size else state["consumed"]
            if bar is not None:
                bar.update(state["consumed"] - bar.n)
            if time.monotonic() - last_flush >= FLUSH_SECONDS:
                _flush(work, state, handles)
                last_flush = time.monotonic()
        _note_skipped(source, state, state["consumed"], np.array([source.count]))
        state["consumed"] = source.count
        _flush(work, state, handles)
    finally:
        if bar is not None:
            bar.close()


def _note_skipped(source, state, start, positions):
    """Records, with the reason, each item from ``start`` up to the last of ``positions`` that the source left
    out (the positions a batch does not hold)."""
    if not positions.size:
        return
    for position in np.setdiff1d(np.arange(start, positions[-1]), positions):
        position = int(position)
        state["skipped"].append({"id": position, "item": source.name(position), "error": source.error(position)})


def _flush(work, state, handles):
    """Codes, ids and names reach the disk before ``build.json`` says they exist."""
    for f in handles.values():
        f.flush()
        os.fsync(f.fileno())
    _io.write_json_atomically(os.path.join(work, PROGRESS_FILE), state)


def _finish(work, target, encoder, backend, index_options: Any, state, overwrite, named):
    count = state["written"]
    details = {"source": state["source"], "skipped": state["skipped"]}
    offsets_path = os.path.join(work, NAME_OFFSETS_FILE)
    if named:  # the offsets file gets its leading 0: rewrite it whole (8 bytes an item)
        ends = np.fromfile(offsets_path, "<i8")
        os.remove(offsets_path)
        fmt.write_arrays(work, NAME_OFFSETS_FILE, [np.concatenate([[0], ends]).astype("<i8")])
    else:
        for name in (NAMES_FILE, NAME_OFFSETS_FILE):
            os.remove(os.path.join(work, name))
    segment = {"rows": count, "codes": fmt.describe_file(work, CODES_FILE), "ids": fmt.describe_file(work, IDS_FILE)}
    if named:
        segment["names"] = {"offsets": fmt.describe_file(work, NAME_OFFSETS_FILE),
                            "text": fmt.describe_file(work, NAMES_FILE)}
    for name in (PROGRESS_FILE, LOCK_FILE, LISTING_FILE):
        if os.path.exists(os.path.join(work, name)):
            os.remove(os.path.join(work, name))
    manifest = fmt.new_manifest("numpy", encoder.bits, count=count, rows=count, options=dict(index_options),
                                encoder=state["encoder"], segments=[segment], details=details)
    if backend == "numpy" and index_options.get("kind") == "mih" and count:  # its tables, ready to search
        (codes, _, _), = fmt.read_segments(work, manifest, (encoder.bits + 7) // 8, False)[0]
        tables = SubstringTables.build(np.asarray(codes), encoder.bits)
        manifest["tables"] = [fmt.write_tables(work, 1, 0, tables.substrings, tables.directs, tables.offsets,
                                               tables.rows)]
    if backend == "numpy":
        fmt.seal(work, target, overwrite, manifest)
        return
    # A Faiss index is built from the finished codes, then saved like any index.
    (codes, ids, names), = fmt.read_segments(work, manifest, (encoder.bits + 7) // 8, False)[0]
    index = index_lib.make_index(encoder.bits, backend, **index_options)
    index.add(np.asarray(codes), ids=np.asarray(ids), names=names)
    index.save(target, encoder=encoder, overwrite=overwrite, details=details)
    shutil.rmtree(work, ignore_errors=True)


def _update(encoder, source, path, batch_size, progress):
    """Brings the index at ``path`` up to date with ``source``: encodes the new items, removes the gone."""
    index = index_lib.load(path, encoder=encoder)
    listing = source.listing()
    if listing is None or not hasattr(source, "subset"):
        raise ValueError("`update=True` needs a folder of images as `source` (its files' names tell what is new and "
                         f"what is gone), got a {type(source).__name__}.")
    live = index._live_ids()
    held = dict(zip(index.names(live), live.tolist()))
    if None in held:
        raise ValueError(f"`path` {os.fspath(path)!r} holds items without names (not built from a folder), so it "
                         "cannot be brought up to date with one.")
    listed = set(listing)
    new = [position for position, name in enumerate(listing) if name not in held]
    gone = [item for name, item in held.items() if name not in listed]
    skipped = []
    if new:
        subset, consumed = source.subset(new), 0
        bar = _progress_bar(len(new), 0, progress, "encoding new files")
        for positions, items in subset.batches(0, batch_size):
            skipped += [subset.name(int(p)) for p in np.setdiff1d(np.arange(consumed, positions[-1]), positions)]
            index.add(encoder.encode(items, batch_size=batch_size), names=[subset.name(int(p)) for p in positions])
            consumed = int(positions[-1]) + 1
            if bar is not None:
                bar.update(consumed - bar.n)
        skipped += [subset.name(p) for p in range(consumed, subset.count)]
        if bar is not None:
            bar.close()
    if gone:
        index.remove(np.array(gone, np.int64))
    summary = {"added": len(new) - len(skipped), "removed": len(gone), "skipped": skipped}
    index.save(details={"update": summary})
    if progress:
        print(f"updated {os.fspath(path)}: {summary['added']} added, {summary['removed']} removed"
              + (f", {len(skipped)} skipped" if skipped else ""))
    return index


def _index_build(*args, **kwargs):
    """Deprecated name of :func:`build` (the build lives above the index package, which does not import it)."""
    warnings.warn("tfhash.index.build is now tfhash.collection.build (also tfhash.build); the old name will go.",
                  DeprecationWarning, stacklevel=2)
    return build(*args, **kwargs)


index_lib.build = _index_build
