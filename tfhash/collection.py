"""Streaming a collection through an encoder into a saved index (:func:`tfhash.index.build`).

The codes and ids are appended to files in a working directory beside the target (``.NAME.build``);
after every few batches they are flushed to disk and ``build.json`` records how far the source has been
read. A build that stops (killed, out of disk, interrupted) resumes from there when run again: the
files are cut back to what ``build.json`` records and the source is read on from the same position, so
no item is missing or twice. The finished directory is then renamed to the target in one step.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings

import numpy as np

from tfhash import _io, _validation, sources
from tfhash import index as index_lib

PROGRESS_FILE = "build.json"
LOCK_FILE = "build.lock"
FLUSH_SECONDS = 2.0
WORK_ENTRIES = {PROGRESS_FILE, LOCK_FILE, index_lib.CODES_FILE, index_lib.IDS_FILE, index_lib.MANIFEST}


def _working_directory(target):
    return os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.build")


def _exclusive(directory):
    """Holds an exclusive lock on the working directory: a second build of the same index fails at once
    (the lock goes with the process, so a killed build leaves nothing that blocks its resumption)."""
    return _io.exclusive_lock(os.path.join(directory, LOCK_FILE), "build of this index")


def _progress_bar(total, initial, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="item", unit_scale=True, desc="encoding", smoothing=0.1)


def _resume_state(work, expected, resume):
    """What an earlier build in ``work`` got through, or a fresh state; refuses a build of other data."""
    path = os.path.join(work, PROGRESS_FILE)
    if not os.path.isfile(path):
        return {**expected, "consumed": 0, "written": 0, "skipped": []}
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    if not resume:
        raise ValueError(f"an interrupted build of this index is in {work!r}; pass resume=True to finish it (or "
                         "delete that directory to start again).")
    for key in ("source", "encoder", "bits", "batch_size", "ids"):
        if state.get(key) != expected[key]:
            raise ValueError(f"the interrupted build in {work!r} was made with another {key} ({state.get(key)!r}, "
                             f"now {expected[key]!r}); it cannot be resumed with this one. Delete that directory "
                             "to start again.")
    return state


def build(encoder, source, path, *, ids=None, batch_size=256, backend="numpy", overwrite=False, resume=True,
          progress=True, data_dir=None, image_feature="image", **index_options):
    """Encodes every item of ``source`` with ``encoder`` into a saved index at ``path``; returns the index
    (opened with :func:`tfhash.index.load`).

    Args:
        encoder: a :class:`tfhash.Hasher`, a loaded export (``tfhash.load``) or an export's path (SavedModel
            directory or ``.tflite`` file).
        source: an array, a folder of images, a ``.npy`` / ``.fvecs`` / ``.bvecs`` file, TFRecord files or
            ``"tfds:NAME[:SPLIT]"`` (see :func:`tfhash.sources.open_source`). Images are decoded and resized
            to the encoder's input shape.
        path: the directory to create (as ``index.save``: new or empty, or a previous index with
            ``overwrite=True``).
        ids: the id of each item of the source, in its order (an integer array, memory-mapped or not, e.g. a
            database's key column); default: the items' positions in the source.
        batch_size: items encoded at once; memory stays bounded by it whatever the collection's size.
        backend, index_options: the saved index's backend and options (``tfhash.index.make_index``). The
            exact ``"numpy"`` index is written as it is built; a Faiss index is built from the finished codes.
        resume: finish an interrupted build of the same source, encoder and batch size (``False``: refuse).
        progress: a progress bar (items/s, time left).

    Items that cannot be decoded are skipped, warned about
    and listed in the manifest (``details["skipped"]``), never dropped silently.
    """
    from tfhash import serving

    batch_size = _validation.check_positive_int(batch_size, "batch_size")
    _validation.check_choice(backend, "backend", index_lib.BACKENDS)
    path = index_lib.check_save_target(path, overwrite)
    if isinstance(encoder, (str, os.PathLike)):
        encoder = serving.load(encoder)
    description = index_lib.encoder_description(encoder)
    item_shape = tuple(getattr(encoder, "item_shape", None) or encoder.model.item_shape)
    source = sources.open_source(source, item_shape, data_dir=data_dir, image_feature=image_feature)
    ids = None if ids is None else index_lib.check_ids(ids, source.count, "one per item of the source")
    if backend == "faiss":
        index_lib.make_index(encoder.bits, backend, **index_options)  # refuse bad options before encoding

    target = os.path.abspath(path)
    work = _working_directory(target)
    os.makedirs(work, exist_ok=True)
    foreign = sorted(set(os.listdir(work)) - WORK_ENTRIES)
    if foreign:  # not a build's working directory: never write into (or later move) someone else's files
        raise ValueError(f"`path` {path!r}: the build's working directory {work!r} exists and holds files no build "
                         f"writes ({', '.join(foreign[:5])}); move it away or choose another path.")
    width = (encoder.bits + 7) // 8
    expected = {"source": source.describe(), "encoder": description, "bits": encoder.bits, "batch_size": batch_size,
                "ids": None if ids is None else {"count": int(ids.shape[0]), "first": int(ids[0]) if ids.size else None,
                                                 "last": int(ids[-1]) if ids.size else None}}
    with _exclusive(work):
        state = _resume_state(work, expected, resume)
        codes_path, ids_path = os.path.join(work, index_lib.CODES_FILE), os.path.join(work, index_lib.IDS_FILE)
        with open(codes_path, "ab") as codes_file, open(ids_path, "ab") as ids_file:
            # Anything written after the last recorded flush is cut off and encoded again.
            codes_file.truncate(state["written"] * width)
            ids_file.truncate(state["written"] * 8)
            _encode_into(encoder, source, ids, state, work, codes_file, ids_file, batch_size, progress)
        skipped = state["skipped"]
        for entry in skipped:
            warnings.warn(f"skipped {entry['item']} (id {entry['id']}): {entry['error']}", stacklevel=2)
        _finish(work, target, encoder, backend, index_options, state, overwrite)
    return index_lib.load(path)


def _encode_into(encoder, source, ids, state, work, codes_file, ids_file, batch_size, progress):
    bar = _progress_bar(source.count, state["consumed"], progress)
    last_flush = time.monotonic()
    try:
        for positions, items in source.batches(state["consumed"], batch_size):
            _note_skipped(source, state, state["consumed"], positions)
            codes = np.ascontiguousarray(encoder.encode(items, batch_size=batch_size), dtype=np.uint8)
            codes_file.write(codes.tobytes())
            ids_file.write((positions if ids is None else ids[positions]).astype("<i8").tobytes())
            state["written"] += int(positions.size)
            state["consumed"] = int(positions[-1]) + 1 if positions.size else state["consumed"]
            if bar is not None:
                bar.update(state["consumed"] - bar.n)
            if time.monotonic() - last_flush >= FLUSH_SECONDS:
                _flush(work, state, codes_file, ids_file)
                last_flush = time.monotonic()
        _note_skipped(source, state, state["consumed"], np.array([source.count]))
        state["consumed"] = source.count
        _flush(work, state, codes_file, ids_file)
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


def _flush(work, state, codes_file, ids_file):
    """Codes and ids reach the disk before ``build.json`` says they exist."""
    for f in (codes_file, ids_file):
        f.flush()
        os.fsync(f.fileno())
    _io.write_json_atomically(os.path.join(work, PROGRESS_FILE), state)


def _finish(work, target, encoder, backend, index_options, state, overwrite):
    count, width = state["written"], (encoder.bits + 7) // 8
    details = {"source": state["source"], "skipped": state["skipped"]}
    files = {"codes": {"name": index_lib.CODES_FILE, "bytes": count * width},
             "ids": {"name": index_lib.IDS_FILE, "bytes": count * 8}}
    if backend == "numpy":
        os.remove(os.path.join(work, PROGRESS_FILE))
        os.remove(os.path.join(work, LOCK_FILE))
        index_lib._seal(work, target, overwrite, index_lib._manifest(
            "numpy", encoder.bits, count, dict(index_options), files, state["encoder"], details))
        return
    # A Faiss index is built from the finished codes, then saved like any index.
    exact = index_lib.HammingIndex(encoder.bits)
    exact._open_files(work, index_lib._manifest("numpy", encoder.bits, count, {}, files, None))
    index = index_lib.make_index(encoder.bits, backend, **index_options)
    index.add(np.asarray(exact._codes), ids=np.asarray(exact._ids))
    index.save(target, encoder=encoder, overwrite=overwrite, details=details)
    shutil.rmtree(work, ignore_errors=True)
