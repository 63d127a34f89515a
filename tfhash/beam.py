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
export's serving function. :func:`merge_shards` writes the saved index, sorted by id: the same bytes as a
local build of the same items.
"""

from __future__ import annotations

import glob
import json
import os

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from tfhash import index, sources

SHARD_PREFIX = "codes"
ENCODER_FILE = "encoder.json"
SKIPPED_COUNTER = "skipped_items"
NPY_BLOCK = 256  # rows of an array shard per Beam element


class ExportModelHandler(ModelHandler):
    """RunInference's handler for a tfhash export (SavedModel directory or ``.tflite``): a batch of blocks of
    items in, each block's packed codes out."""

    def __init__(self, export, min_batch_size=32, max_batch_size=512):
        super().__init__()
        self.export = os.fspath(export)
        self.min_batch_size, self.max_batch_size = int(min_batch_size), int(max_batch_size)

    def load_model(self):
        from tfhash import serving

        return serving.load(self.export)

    def run_inference(self, batch, model, inference_args=None):
        # Each element is a block of items [n, ...] (one item, or a slice of an array shard); a block's codes
        # come back as one [n, width] array.
        sizes = [len(block) for block in batch]
        codes = model.encode(np.concatenate(batch), batch_size=max(sum(sizes), 1))
        return np.split(codes, np.cumsum(sizes)[:-1])

    def batch_elements_kwargs(self):
        return {"min_batch_size": self.min_batch_size, "max_batch_size": self.max_batch_size}


def _is_ours(name):
    """Whether a file name is one an encoding run writes (shards, skipped lists, the encoder description)."""
    return name == ENCODER_FILE or (name.startswith((f"{SHARD_PREFIX}-", "skipped-")) and
                                    name.endswith((".tfrecord", ".jsonl")))


def _listing(pattern):
    """The files a glob (local or any Beam file system) names, sorted."""
    matches = FileSystems.match([pattern])[0].metadata_list
    return sorted(m.path for m in matches)


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


def _read_npy_blocks(element, block=NPY_BLOCK):
    """``(id of the first row, rows [n, ...])`` blocks of one ``.npy`` shard: one element per block, not per
    row, so Beam's per-element work is paid once for every ``block`` items."""
    first, path = element
    if "://" in path:  # object storage: read the shard whole
        with FileSystems.open(path) as f:
            array = np.load(f, allow_pickle=False)
    else:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    for start in range(0, array.shape[0], block):
        yield first + start, np.array(array[start:start + block])


def _records(element):
    """The shard records of a block's codes: each an id as 8 little-endian bytes, then its code."""
    first, codes = element
    for offset, code in enumerate(codes):
        yield int(first + offset).to_bytes(8, "little", signed=True) + code.tobytes()


class EncodeToShards(beam.PTransform):
    """Reads ``input`` (an image-file glob, ``.npy`` shards by glob, or TFRecord files by glob), encodes every
    item with ``export`` in RunInference and writes ``(id, code)`` records to ``output/codes-*.tfrecord``.

    The listing happens when the pipeline is built, here, so ids do not depend on the workers.
    """

    def __init__(self, export, input, output, *, image_feature="image", min_batch_size=32, max_batch_size=512):
        super().__init__()
        from tfhash import serving

        encoder = serving.load(export)  # checked once here; workers load their own copy
        self.export, self.input, self.output = os.fspath(export), str(input), str(output)
        self.item_shape, self.image_feature = tuple(encoder.item_shape), image_feature
        files = _listing(self.input)
        if not files:
            raise ValueError(f"`input` {self.input!r} matches no files.")
        self.files = files
        lower = files[0].lower()
        self.kind = ("npy" if lower.endswith(".npy") else
                     "tfrecord" if ".tfrecord" in lower else "images")
        if self.kind == "npy":  # elements are blocks of NPY_BLOCK rows already
            min_batch_size, max_batch_size = 1, max(1, max_batch_size // NPY_BLOCK)
        self.handler = ExportModelHandler(export, min_batch_size, max_batch_size)
        if FileSystems.exists(self.output):
            held = [m.path for m in FileSystems.match([FileSystems.join(self.output, "*")])[0].metadata_list]
            foreign = sorted(os.path.basename(p) for p in held if not _is_ours(os.path.basename(p)))
            if foreign:  # shards and encoder.json are written by name: never over someone else's files
                raise ValueError(f"`output` {self.output!r} holds files an encoding run does not write "
                                 f"({', '.join(foreign[:5])}); choose a new or empty directory.")
        else:
            FileSystems.mkdirs(self.output)
        with FileSystems.create(FileSystems.join(self.output, ENCODER_FILE)) as f:
            f.write(json.dumps({"export": self.export, **index.encoder_description(encoder)}).encode())

    def _numbered(self, counts):
        """``(first id, file)`` of each file, ids numbered on across files of ``counts`` items."""
        firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
        return [(int(first), path) for first, path in zip(firsts, self.files)]

    def expand(self, pipeline):
        if self.kind == "images":
            listed = pipeline | "List" >> beam.Create(list(enumerate(self.files)))
            read = listed | "Decode" >> beam.ParDo(_ReadImages(self.item_shape)).with_outputs("skipped", main="items")
        elif self.kind == "tfrecord":
            import tensorflow as tf

            counts = [int(tf.data.TFRecordDataset([p]).reduce(np.int64(0), lambda n, _: n + 1)) for p in self.files]
            listed = pipeline | "List" >> beam.Create(self._numbered(counts))
            read = listed | "Decode" >> beam.ParDo(_ReadRecords(self.item_shape, self.image_feature)).with_outputs(
                "skipped", main="items")
        else:
            counts = []
            for path in self.files:
                with FileSystems.open(path) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                                   np.lib.format.read_array_header_2_0)
                    counts.append(read_header(f)[0][0])
            listed = pipeline | "List" >> beam.Create(self._numbered(counts))
            read = {"items": listed | "Blocks" >> beam.FlatMap(_read_npy_blocks),
                    "skipped": pipeline | "NoneSkipped" >> beam.Create([])}
        items, skipped = read["items"], read["skipped"]
        codes = (items | "Reshuffle" >> beam.Reshuffle()
                 | "Encode" >> RunInference(KeyedModelHandler(self.handler)))
        _ = (skipped | "SkippedJson" >> beam.Map(json.dumps)
             | "WriteSkipped" >> beam.io.WriteToText(FileSystems.join(self.output, "skipped"), file_name_suffix=".jsonl"))
        return (codes | "Records" >> beam.FlatMap(_records)
                | "Write" >> beam.io.WriteToTFRecord(FileSystems.join(self.output, SHARD_PREFIX),
                                                     file_name_suffix=".tfrecord"))


def merge_shards(output, path, *, overwrite=False):
    """Writes the saved index (exact, numpy backend) of the shards in ``output``, sorted by id; returns it
    (opened with :func:`tfhash.index.load`). Skipped items are listed in its manifest."""
    import tensorflow as tf

    output = os.fspath(output)
    with open(os.path.join(output, ENCODER_FILE), encoding="utf-8") as f:
        encoder = json.load(f)
    width = (int(encoder["bits"]) + 7) // 8
    shards = sorted(glob.glob(os.path.join(output, f"{SHARD_PREFIX}-*.tfrecord")))
    if not shards:
        raise ValueError(f"`output` {output!r} holds no {SHARD_PREFIX}-*.tfrecord shards.")
    rows = _read_rows(tf.data.TFRecordDataset(shards), 8 + width, output)
    ids = rows[:, :8].copy().view("<i8")[:, 0].astype(np.int64)
    order = np.argsort(ids, kind="stable")
    skipped = []
    for name in sorted(glob.glob(os.path.join(output, "skipped-*.jsonl"))):
        with open(name, encoding="utf-8") as f:
            skipped += [json.loads(line) for line in f if line.strip()]
    built = index.HammingIndex(int(encoder["bits"])).add(np.ascontiguousarray(rows[order, 8:]), ids=ids[order])
    description = {k: encoder[k] for k in ("scheme", "bits", "fingerprint")}
    built.save(path, encoder=_Described(description), overwrite=overwrite,
               details={"source": {"kind": "beam", "shards": output},
                        "skipped": sorted(skipped, key=lambda s: s["id"])})
    return index.load(path)


def _read_rows(records, row_bytes, output, batch=1 << 16):
    """Every record as one row of an ``(n, row_bytes)`` uint8 array, joined a batch at a time: a few bytes per
    item rather than a Python object per item."""
    parts = []
    for chunk in records.batch(batch).as_numpy_iterator():
        joined = b"".join(chunk)
        if len(joined) != len(chunk) * row_bytes:
            sizes = sorted({len(record) for record in chunk} - {row_bytes})
            raise ValueError(f"`output` {output!r} holds records of {sizes} bytes; expected {row_bytes} "
                             "(an 8-byte id and the packed code): shards of another encoder?")
        parts.append(np.frombuffer(joined, np.uint8).reshape(-1, row_bytes))
    return np.concatenate(parts) if parts else np.empty((0, row_bytes), np.uint8)


class _Described:
    """An encoder known by its description only (scheme, bits, fingerprint), for a manifest."""

    def __init__(self, description):
        self.scheme, self.bits, self.fingerprint = description["scheme"], description["bits"], description["fingerprint"]
