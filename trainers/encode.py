"""Command line: encode a collection with an export into a saved index, and search it.

    python -m trainers.encode --export=runs/digits/export/hashgan/1 --input=photos/ --index=photos.index
    python -m trainers.encode --index=photos.index --query=query.npy --k=10
    python -m trainers.encode --export=runs/digits/export/hashgan/100 --input=digits --index=runs/digits/index \
        --query_ids=0,1

The first form streams ``--input`` (a folder of images, a .npy / .fvecs / .bvecs file, TFRecord files or
``tfds:NAME[:SPLIT]`` with ``--data_dir``) through the export (SavedModel directory or .tflite file) in
batches into a new index directory, with a progress bar; run it again after an interruption and it
resumes. The second form (or ``--query`` beside the first) loads the index and prints each query's
nearest ids and Hamming distances (``id:distance``). Only a thin layer over ``tfhash.build`` / ``load``.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # keep TensorFlow's C++ start-up notes off the progress output

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("export", None, "The encoder: a SavedModel export directory or a .tflite file.")
flags.DEFINE_string("input", None, "The collection: a folder of images, a .npy / .fvecs / .bvecs file, TFRecord "
                    "files (a path or glob), tfds:NAME[:SPLIT], or digits (scikit-learn's bundled 1,797 images).")
flags.DEFINE_string("index", None, "The index directory to build (with --input) or to search.")
flags.DEFINE_string("data_dir", None, "TFDS data directory for --input=tfds:... (prepared there; nothing is "
                    "downloaded).")
flags.DEFINE_string("image_feature", "image", "The encoded image feature of TFRecord / TFDS examples.")
flags.DEFINE_string("ids", None, "A .npy of integer ids, one per item of --input in its order (default: positions).")
flags.DEFINE_integer("batch_size", 256, "Items encoded at once (memory is bounded by it).")
flags.DEFINE_enum("backend", "numpy", ["numpy", "faiss"], "Index backend (numpy: exact, memory-mapped when loaded).")
flags.DEFINE_enum("kind", "flat", ["flat", "mih", "auto", "ivf", "hnsw"],
                  "Index kind: flat, mih (multi-index hashing tables, exact) or auto for --backend=numpy; flat, ivf "
                  "or hnsw for --backend=faiss.")
flags.DEFINE_boolean("update", False, "Bring --index up to date with the --input folder it was built from: encode "
                     "the files added since and remove the items of files gone.")
flags.DEFINE_boolean("overwrite", False, "Replace a previous index at --index (never any other directory).")
flags.DEFINE_string("query", None, "Items to search for (a .npy file, or an image file or folder), encoded with "
                    "--export; without --export, a .npy of packed uint8 codes.")
flags.DEFINE_list("query_ids", [], "Items of --input (by position) to search for, e.g. 0,1,2.")
flags.DEFINE_integer("k", 10, "Neighbours returned per query.")


def _input():
    """--input as the library takes it: the bundled digits as an array, anything else as given."""
    from tfhash import datasets

    if FLAGS.input == "digits" and not os.path.exists(FLAGS.input):
        return datasets.load_digits()[0]
    return FLAGS.input


def _queries(encoder):
    import numpy as np

    from tfhash import sources

    if FLAGS.query_ids:
        try:
            wanted = [int(i) for i in FLAGS.query_ids]
        except ValueError:
            raise ValueError(f"--query_ids must be item positions (integers), got {FLAGS.query_ids}.") from None
        source = sources.open_source(_input(), encoder.item_shape, data_dir=FLAGS.data_dir,
                                     image_feature=FLAGS.image_feature)
        bad = [i for i in wanted if not 0 <= i < source.count]
        if bad:
            raise ValueError(f"--query_ids must be positions in --input (0 to {source.count - 1}), got {bad}.")
        return np.concatenate([encoder.encode(next(source.batches(i, 1))[1]) for i in wanted])
    if encoder is None:
        return np.load(FLAGS.query, allow_pickle=False)
    if FLAGS.query.lower().endswith(sources.IMAGE_EXTENSIONS) and os.path.isfile(FLAGS.query):
        return encoder.encode(sources.read_image(FLAGS.query, encoder.item_shape))
    source = sources.open_source(FLAGS.query, encoder.item_shape)
    return np.concatenate([encoder.encode(items) for _, items in source.batches(0, FLAGS.batch_size)])


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}; flags look like --name=value.")
    try:
        _run()
    except (ValueError, FileExistsError) as err:
        sys.exit(f"error: {err}")


def _run():
    if not FLAGS.index:
        raise app.UsageError("--index is required: the index directory to build or search.")
    if FLAGS.input and not FLAGS.export:
        raise app.UsageError("--input needs --export: the encoder that turns the items into codes.")
    if not FLAGS.input and not FLAGS.query:
        raise app.UsageError("nothing to do: give --input (with --export) to build, --query to search, or both.")
    if FLAGS.query and not FLAGS.export and not FLAGS.query.lower().endswith(".npy"):
        raise app.UsageError(f"--query={FLAGS.query} needs --export to be encoded; without --export, --query must be "
                             "a .npy of packed uint8 codes.")
    if FLAGS.update and FLAGS.overwrite:
        raise app.UsageError("--update adds to the index at --index and --overwrite replaces it: give one of them.")
    if FLAGS.query_ids and (FLAGS.query or not FLAGS.input or not FLAGS.export):
        raise app.UsageError("--query_ids names items of --input (encoded with --export), instead of --query.")
    import numpy as np

    import tfhash

    encoder = tfhash.load(FLAGS.export) if FLAGS.export else None
    if FLAGS.input:
        options = {"kind": FLAGS.kind} if FLAGS.kind != "flat" else {}
        ids = np.load(FLAGS.ids, mmap_mode="r", allow_pickle=False) if FLAGS.ids else None
        index = tfhash.build(encoder, _input(), FLAGS.index, ids=ids, batch_size=FLAGS.batch_size,
                                   backend=FLAGS.backend, overwrite=FLAGS.overwrite, update=FLAGS.update,
                                   data_dir=FLAGS.data_dir,
                                   image_feature=FLAGS.image_feature, **options)
        skipped = tfhash.index.read_manifest(FLAGS.index)["details"].get("skipped", [])
        print(f"wrote {FLAGS.index}: {len(index)} codes of {index.bits} bits"
              + (f"; skipped {len(skipped)} item(s) that could not be read (listed in its index.json)" if skipped
                 else ""))
    if FLAGS.query or FLAGS.query_ids:
        index = tfhash.index.load(FLAGS.index, encoder=encoder)
        distances, ids = index.search(_queries(encoder), FLAGS.k)
        for row, (d, i) in enumerate(zip(distances, ids)):
            print(f"query {row}: " + " ".join(f"{int(n)}:{int(h)}" for n, h in zip(i, d) if n >= 0))


if __name__ == "__main__":
    app.run(main)
