"""Encoding collections on Apache Beam (``pip install -e ".[beam]"``): the local build of
:func:`tfhash.index.build`, spread over a runner's workers (DirectRunner here; Dataflow, Flink or Spark with
their usual pipeline options).

    pipeline | tfhash.beam.EncodeToShards(export, "photos/*.jpg", "out/")   # (id, code) shards
    tfhash.beam.merge_shards("out/", "photos.index")                       # one saved index

:class:`EncodeToShards` lists the input when the pipeline is built (image files by glob, sorted; ``.npy``
shards, sorted, their rows numbered on from one shard to the next; TFRecord files with an encoded image
feature, their records numbered likewise), so an item's id is its place in that listing, never the order in
which workers happen to process it. Images are decoded and resized exactly as the local build does
(:func:`tfhash.sources.decode_image`); an item that cannot be read is skipped and counted in the Beam
counter ``tfhash:skipped_items`` (and listed in ``skipped-*.jsonl`` beside the shards). The export runs
in Beam's RunInference (batched, one model per worker process) through a small model handler around the
export's serving function. :func:`merge_shards` writes the saved index, sorted by id in bounded runs on
disk: the same bytes as a local build of the same items.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from tfhash import _io, _validation, index, sources
from tfhash import codes as codes_lib
from tfhash.index import format as fmt
from tfhash.index.base import duplicate_message

SHARD_PREFIX = "codes"
ENCODER_FILE = "encoder.json"
NAMES_FILE = "names.txt"  # the listed images' names, one a line, in id order
SKIPPED_COUNTER = "skipped_items"
NPY_BLOCK = 256  # rows of an array shard per Beam element
# records merge_shards sorts in memory at a time: about 100 MB for 64-bit codes (benchmarks/merge.py)
ROWS_IN_MEMORY = 1 << 20


class ExportModelHandler(ModelHandler):
    """RunInference's handler for a tfhash export (SavedModel directory or ``.tflite``): a batch of blocks of
    items in, each block's packed codes out."""

    def __init__(self, export, min_batch_size=32, max_batch_size=512):
        super().__init__()
        self.export = os.fspath(export)
        self.min_batch_size, self.max_batch_size = int(min_batch_size), int(max_batch_size)

    def load_model(self) -> Any:
        from tfhash import serving

        return serving.load(self.export)

    def run_inference(self, batch: Sequence, model: Any, inference_args: dict | None = None) -> list:
        # Each element is a block of items [n, ...] (one item, or a slice of an array shard); a block's codes
        # come back as one [n, width] array.
        sizes = [len(block) for block in batch]
        codes = model.encode(np.concatenate(batch), batch_size=max(sum(sizes), 1))
        return np.split(codes, np.cumsum(sizes)[:-1])

    def batch_elements_kwargs(self) -> dict:
        return {"min_batch_size": self.min_batch_size, "max_batch_size": self.max_batch_size}


def _is_ours(name):
    """Whether a file name is one an encoding run writes (shards, skipped lists, the encoder description)."""
    return name in (ENCODER_FILE, NAMES_FILE) or (name.startswith((f"{SHARD_PREFIX}-", "skipped-")) and
                                    name.endswith((".tfrecord", ".jsonl")))


def _listing(pattern):
    """The files a local folder holds (by :func:`tfhash.sources.list_image_files`, the local build's rule) or a
    glob (local or any Beam file system) names, sorted; and each file's name in the index."""
    if os.path.isdir(pattern):
        names = sources.list_image_files(pattern)
        return [os.path.join(pattern, name) for name in names], names
    files = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    return files, files


def _kind_of(files):
    kinds = {("npy" if f.lower().endswith(".npy") else "tfrecord" if ".tfrecord" in f.lower() else
              "images" if f.lower().endswith(sources.IMAGE_EXTENSIONS) else "other") for f in files}
    if len(kinds) != 1 or kinds == {"other"}:
        shown = ", ".join(sorted(kinds))
        raise ValueError(f"`input` must name files of one kind (images {', '.join(sources.IMAGE_EXTENSIONS)}, .npy "
                         f"shards or TFRecord files), got {shown}.")
    return kinds.pop()


class _ReadImages(beam.DoFn):
    def __init__(self, item_shape):
        self.item_shape = tuple(item_shape)

    def process(self, element):
        position, path = element
        try:
            with FileSystems.open(path) as f:
                encoded = f.read()
            image = sources.decode_image(encoded, self.item_shape).numpy()
        except Exception as err:  # noqa: BLE001 - any unreadable file is counted and skipped
            beam.metrics.Metrics.counter("tfhash", SKIPPED_COUNTER).inc()
            yield beam.pvalue.TaggedOutput("skipped", {"id": position, "item": path, "error": str(err)[:500]})
            return
        yield position, image[None]


class _ReadRecords(beam.DoFn):
    def __init__(self, item_shape, image_feature):
        self.item_shape, self.image_feature = tuple(item_shape), image_feature

    def process(self, element):
        import tensorflow as tf

        first, path = element
        for offset, record in enumerate(tf.data.TFRecordDataset([path]).as_numpy_iterator()):
            try:
                feature = {self.image_feature: tf.io.FixedLenFeature([], tf.string)}
                encoded = tf.io.parse_single_example(record, feature)[self.image_feature]
                image = sources.decode_image(encoded, self.item_shape).numpy()
            except Exception as err:  # noqa: BLE001 - any unreadable record is counted and skipped
                beam.metrics.Metrics.counter("tfhash", SKIPPED_COUNTER).inc()
                yield beam.pvalue.TaggedOutput("skipped", {"id": first + offset, "item": f"{path} record {offset}",
                                                           "error": str(err)[:500]})
                continue
            yield first + offset, image[None]


def _npy_blocks(element, block=NPY_BLOCK):
    """``(id of the first row, path, start, stop)`` of each block of one ``.npy`` shard: one element per block,
    not per row, so Beam's per-element work is paid once for every ``block`` items. Only these few values
    cross the shuffle; the rows are read where they are encoded."""
    first, path = element
    with FileSystems.open(path) as f:
        rows = _npy_rows(f)
    for start in range(0, rows, block):
        yield first + start, path, start, min(start + block, rows)


def _npy_header(f):
    """``(shape, fortran_order, dtype)`` of the ``.npy`` file open at its start; leaves ``f`` at the data."""
    version = np.lib.format.read_magic(f)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                   np.lib.format.read_array_header_2_0)
    return read_header(f)


def _npy_rows(f):
    return _npy_header(f)[0][0]


def _read_npy_block(element):
    """``(id of the first row, rows [n, ...])`` of a block named by :func:`_npy_blocks`: only its bytes are
    read (a seek past the rows before it), from a local file or object storage alike."""
    first, path, start, stop = element
    with FileSystems.open(path) as f:
        shape, fortran_order, dtype = _npy_header(f)
        if fortran_order:  # rows are not contiguous: read the shard, keep the block
            f.seek(0)
            return first, np.load(f, allow_pickle=False)[start:stop]
        row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        f.seek(f.tell() + start * row_bytes)
        data = f.read((stop - start) * row_bytes)
    return first, np.frombuffer(data, dtype).reshape((stop - start,) + tuple(shape[1:]))


def _records(element):
    """The shard records of a block's codes: each an id as 8 little-endian bytes, then its code."""
    first, codes = element
    for offset, code in enumerate(codes):
        yield int(first + offset).to_bytes(8, "little", signed=True) + code.tobytes()


class EncodeToShards(beam.PTransform):
    """Reads ``input`` (an image-file glob, ``.npy`` shards by glob, or TFRecord files by glob), encodes every
    item with ``export`` in RunInference and writes ``(id, code)`` records to ``output/codes-*.tfrecord``.

    The listing happens when the pipeline is built, here, so ids do not depend on the workers. The work is
    spread over the workers by image file, TFRecord file or block of ``NPY_BLOCK`` rows: a shuffle moves
    these descriptors, never pixels, and each worker reads what it encodes.
    """

    def __init__(self, export, input, output, *, image_feature="image", min_batch_size=32, max_batch_size=512):
        super().__init__()
        from tfhash import serving

        encoder = serving.load(export)  # checked once here; workers load their own copy
        self.export, self.input, self.output = os.fspath(export), str(input), str(output)
        self.item_shape, self.image_feature = tuple(encoder.item_shape), image_feature
        if not str(output).strip():
            raise ValueError(f"`output` must name a directory for the shards, got {output!r}.")
        files, names = _listing(self.input)
        if not files:
            raise ValueError(f"`input` {self.input!r} matches no files.")
        self.files = files
        self.kind = _kind_of(files)
        if self.kind == "npy":  # elements are blocks of NPY_BLOCK rows already
            min_batch_size, max_batch_size = 1, max(1, max_batch_size // NPY_BLOCK)
        self.handler = ExportModelHandler(export, min_batch_size, max_batch_size)
        if "://" not in self.output and os.path.isfile(self.output):
            raise ValueError(f"`output` {self.output!r} is a file; name a new or empty directory.")
        if FileSystems.exists(self.output):
            held = [m.path for m in FileSystems.match([FileSystems.join(self.output, "*")])[0].metadata_list]
            names_held = sorted(os.path.basename(p) for p in held)
            foreign = [name for name in names_held if not _is_ours(name)]
            if foreign:  # shards and encoder.json are written by name: never over someone else's files
                raise ValueError(f"`output` {self.output!r} holds files an encoding run does not write "
                                 f"({', '.join(foreign[:5])}); choose a new or empty directory.")
            if names_held:  # a run with another shard count would leave these beside its own, and the merge mix them
                raise ValueError(f"`output` {self.output!r} holds the files of another encoding run "
                                 f"({', '.join(names_held[:3])}{', ...' if len(names_held) > 3 else ''}); encode "
                                 "into a new directory, or delete them to encode again.")
        else:
            FileSystems.mkdirs(self.output)
        claim = json.dumps({"export": self.export, **index.encoder_description(encoder)})
        if "://" in self.output:  # object storage has no exclusive create: checked above, written here
            with FileSystems.create(FileSystems.join(self.output, ENCODER_FILE)) as f:
                f.write(claim.encode())
        else:  # the description claims the directory: of two runs started at once, exactly one gets it
            try:
                _io.write_bytes_atomically(os.path.join(self.output, ENCODER_FILE), claim, mode="w", replace=False)
            except FileExistsError:
                raise FileExistsError(f"`output` {self.output!r} was claimed by another encoding run meanwhile; "
                                      "nothing was written. Encode into a new directory.") from None
        if self.kind == "images":
            with FileSystems.create(FileSystems.join(self.output, NAMES_FILE)) as f:
                f.write("\n".join(names).encode("utf-8"))

    def _numbered(self, counts):
        """``(first id, file)`` of each file, ids numbered on across files of ``counts`` items."""
        firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
        return [(int(first), path) for first, path in zip(firsts, self.files)]

    def expand(self, pipeline: Any) -> Any:
        if self.kind == "images":
            listed = pipeline | "List" >> beam.Create(list(enumerate(self.files))) | "Reshuffle" >> beam.Reshuffle()
            read = listed | "Decode" >> beam.ParDo(_ReadImages(self.item_shape)).with_outputs("skipped", main="items")
        elif self.kind == "tfrecord":
            import tensorflow as tf

            counts = [int(tf.data.TFRecordDataset([p]).reduce(np.int64(0), lambda n, _: n + 1)) for p in self.files]
            listed = pipeline | "List" >> beam.Create(self._numbered(counts)) | "Reshuffle" >> beam.Reshuffle()
            read = listed | "Decode" >> beam.ParDo(_ReadRecords(self.item_shape, self.image_feature)).with_outputs(
                "skipped", main="items")
        else:
            counts = []
            for path in self.files:
                with FileSystems.open(path) as f:
                    counts.append(_npy_rows(f))
            listed = pipeline | "List" >> beam.Create(self._numbered(counts))
            blocks = listed | "Blocks" >> beam.FlatMap(_npy_blocks) | "Reshuffle" >> beam.Reshuffle()
            read = {"items": blocks | "Read" >> beam.Map(_read_npy_block),
                    "skipped": pipeline | "NoneSkipped" >> beam.Create([])}
        items, skipped = read["items"], read["skipped"]
        # The work was spread by the Reshuffle of its descriptors (paths, blocks) above: pixels never
        # cross a shuffle, each worker reads what it encodes.
        codes = items | "Encode" >> RunInference(KeyedModelHandler(self.handler))
        _ = (skipped | "SkippedJson" >> beam.Map(json.dumps)
             | "WriteSkipped" >> beam.io.WriteToText(FileSystems.join(self.output, "skipped"),
                                                   file_name_suffix=".jsonl"))
        return (codes | "Records" >> beam.FlatMap(_records)
                | "Write" >> beam.io.WriteToTFRecord(FileSystems.join(self.output, SHARD_PREFIX),
                                                     file_name_suffix=".tfrecord"))


def merge_shards(output: str | os.PathLike, path: str | os.PathLike, *, overwrite: bool = False,
                 rows_in_memory: int = ROWS_IN_MEMORY) -> str:
    """Writes the saved index (exact, numpy backend) of the shards in ``output``, sorted by id; returns it
    (opened with :func:`tfhash.index.load`). Skipped items are listed in its manifest.

    The shards are sorted in runs of at most ``rows_in_memory`` records, written beside ``path``, and the runs
    merged into the index's files, so memory stays bounded however many items the shards hold (disk needs
    about twice the index's size meanwhile). Shards of two encoding runs in one directory, or an id found
    twice, are refused.
    """
    import tensorflow as tf

    output = os.fspath(output)
    rows_in_memory = _validation.check_positive_int(rows_in_memory, "rows_in_memory")
    if not os.path.isdir(output):
        raise ValueError(f"`output` {output!r} must be the directory of an encoding run's shards; it "
                         f"{'is a file' if os.path.exists(output) else 'does not exist'}.")
    try:
        with open(os.path.join(output, ENCODER_FILE), encoding="utf-8") as f:
            encoder = json.load(f)
        bits = _validation.check_bits(encoder["bits"])
    except FileNotFoundError:
        raise ValueError(f"`output` {output!r} holds no {ENCODER_FILE}: not the output of an encoding run.") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"`output` {output!r}: {ENCODER_FILE} is damaged ({_validation.error_summary(err)}).") from err
    shards = _one_run_of(output, SHARD_PREFIX, ".tfrecord")
    if not shards:
        raise ValueError(f"`output` {output!r} holds no {SHARD_PREFIX}-*.tfrecord shards.")
    skipped = []
    for name in _one_run_of(output, "skipped", ".jsonl"):
        with open(name, encoding="utf-8") as f:
            skipped += [json.loads(line) for line in f if line.strip()]
    listed = None
    if os.path.isfile(os.path.join(output, NAMES_FILE)):
        with open(os.path.join(output, NAMES_FILE), encoding="utf-8") as f:
            listed = f.read().split("\n")

    def fill(work):
        row_bytes = 8 + codes_lib.num_bytes(bits)
        runs = _sorted_runs(tf.data.TFRecordDataset(shards), row_bytes, output, work, rows_in_memory)
        count = _merge_runs(runs, row_bytes, work, rows_in_memory, output)
        segment = {"rows": count, "codes": fmt.describe_file(work, _CODES), "ids": fmt.describe_file(work, _IDS)}
        if listed is not None:
            ids = np.fromfile(os.path.join(work, _IDS), "<i8")
            segment["names"] = fmt.write_names(work, 0, fmt.Names.of([listed[i] for i in ids]))
        description = {k: encoder.get(k) for k in ("scheme", "bits", "fingerprint")}
        details = {"source": {"kind": "beam", "shards": output}, "skipped": sorted(skipped, key=lambda s: s["id"])}
        return fmt.new_manifest("numpy", bits, count=count, rows=count, options={}, encoder=description,
                                segments=[segment], details=details)

    return index.load(fmt.write_index(path, overwrite, fill, label="merge"))


_CODES, _IDS = fmt.segment_file("codes", 0), fmt.segment_file("ids", 0)


def _one_run_of(output, prefix, suffix):
    """The files ``prefix-SSSSS-of-NNNNN<suffix>`` in ``output``, sorted: all N of one set, never a mix of the
    sets of two runs (a run with another shard count leaves its files beside the new ones)."""
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+)-of-(\d+){re.escape(suffix)}")
    found = {}
    for name in sorted(os.listdir(output)):
        match = pattern.fullmatch(name)
        if match:
            found.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    if not found:
        return []
    total, numbers = next(iter(found.items()))
    if len(found) > 1 or numbers != set(range(total)):
        sets = "; ".join(f"{len(n)} of {t}" for t, n in sorted(found.items()))
        raise ValueError(f"`output` {output!r} holds {prefix}-*-of-*{suffix} files that are not one complete "
                         f"set ({sets}): shards of more than one encoding run, or a run that did not finish. "
                         "Encode into a new directory.")
    return [os.path.join(output, f"{prefix}-{i:05d}-of-{total:05d}{suffix}") for i in range(total)]


def _sorted_runs(records, row_bytes, output, work, rows_in_memory, batch=1 << 16):
    """Writes the records, ``rows_in_memory`` at a time sorted by id, to run files in ``work``; returns
    ``(path, rows)`` of each run. A record is read into a row of bytes, a batch at a time: a few bytes per
    item rather than a Python object per item."""
    runs, parts, held = [], [], 0

    def write_run():
        rows = np.concatenate(parts)
        rows = rows[np.argsort(_ids(rows), kind="stable")]
        name = os.path.join(work, f"run-{len(runs):06d}")
        with open(name, "wb") as f:
            f.write(rows.tobytes())
        runs.append((name, rows.shape[0]))

    for chunk in records.batch(min(batch, rows_in_memory)).as_numpy_iterator():
        joined = b"".join(chunk)
        if len(joined) != len(chunk) * row_bytes:
            sizes = sorted({len(record) for record in chunk} - {row_bytes})
            raise ValueError(f"`output` {output!r} holds records of {sizes} bytes; expected {row_bytes} "
                             "(an 8-byte id and the packed code): shards of another encoder?")
        rows = np.frombuffer(joined, np.uint8).reshape(-1, row_bytes)
        while rows.shape[0]:
            take = min(rows.shape[0], rows_in_memory - held)
            parts.append(rows[:take])
            held, rows = held + take, rows[take:]
            if held == rows_in_memory:
                write_run()
                parts, held = [], 0
    if held:
        write_run()
    return runs


def _ids(rows):
    return rows[:, :8].copy().view("<i8")[:, 0]


def _merge_runs(runs, row_bytes, work, rows_in_memory, output):
    """Merges the sorted runs into the index's codes and ids files in ``work`` (and removes the runs); returns
    the number of items. Each round reads the next block of every run whose block is used up,
    then writes every held row whose id is at most the smallest last id among runs with rows left to read:
    no row still unread can come before them."""
    block = max(1, rows_in_memory // max(1, len(runs)))
    maps = [np.memmap(name, np.uint8, "r", shape=(rows, row_bytes)) for name, rows in runs]
    read = [0] * len(runs)
    # each run's block in memory and its ids (taken once per block; what is written is sliced off both)
    held = [np.empty((0, row_bytes), np.uint8) for _ in runs]
    held_ids = [np.empty(0, np.int64) for _ in runs]
    count, last_id = 0, None
    with open(os.path.join(work, _CODES), "wb") as codes_file, open(os.path.join(work, _IDS), "wb") as ids_file:
        while True:
            for r, (_, rows) in enumerate(runs):
                if not held[r].shape[0] and read[r] < rows:
                    held[r] = np.array(maps[r][read[r]:read[r] + block])
                    held_ids[r] = _ids(held[r])
                    read[r] += held[r].shape[0]
            waiting = [r for r, (_, rows) in enumerate(runs) if read[r] < rows]
            bound = min((int(held_ids[r][-1]) for r in waiting), default=None)
            ready = []
            for r in range(len(runs)):
                cut = held[r].shape[0] if bound is None else int(np.searchsorted(held_ids[r], bound, side="right"))
                ready.append(held[r][:cut])
                held[r], held_ids[r] = held[r][cut:], held_ids[r][cut:]
            rows = np.concatenate(ready) if ready else np.empty((0, row_bytes), np.uint8)
            if rows.shape[0]:
                rows = rows[np.argsort(_ids(rows), kind="stable")]
                ids = _ids(rows)
                if ids[0] < 0:  # -1 marks an empty result slot in every index
                    raise ValueError(f"`output` {output!r} holds id {int(ids[0])}; ids must be non-negative.")
                repeated = np.flatnonzero(ids[1:] == ids[:-1])
                if repeated.size or (last_id is not None and ids[0] == last_id):
                    twice = ids[repeated[0]] if repeated.size else last_id
                    raise ValueError(duplicate_message([twice], f"`output` {output!r} (shards of two encoding runs of "
                                                                "the same items?)"))
                codes_file.write(rows[:, 8:].tobytes())
                ids_file.write(ids.astype("<i8").tobytes())
                count, last_id = count + rows.shape[0], ids[-1]
            if bound is None:
                break
        for handle in (codes_file, ids_file):
            handle.flush()
            os.fsync(handle.fileno())
    del maps
    for name, _ in runs:
        os.remove(name)
    return count

