"""Command line: load a data set, hash it, evaluate against the shallow baselines, write metrics.json.

    python -m trainers.train --dataset=digits --bits=32 --model_dir=runs/digits

Only a thin layer over ``tfhash``: every step is a library call.
"""

import os
import sys
import time

from absl import app, flags

import tfhash
from tfhash import _io, baselines, datasets, evaluation

FLAGS = flags.FLAGS
flags.DEFINE_string("scheme", "itq", f"Hashing method: one of {sorted(baselines.BASELINES)}.")
flags.DEFINE_string("dataset", "digits", f"Data set: one of {datasets.known_datasets()}.")
flags.DEFINE_string("data_dir", None, "TFDS data directory (for data prepared offline).")
flags.DEFINE_list("bits", ["32"], "Code lengths, comma separated.")
flags.DEFINE_integer("queries_per_class", None, "Queries per class (default: 100, or 10 for digits).")
flags.DEFINE_integer("seed", 0, "Seed of the query draw and of the methods.")
flags.DEFINE_string("model_dir", None, "Where metrics.json is written (default: runs/<dataset>-<scheme>).")


def main(argv):
    del argv
    try:
        scheme = baselines.get(FLAGS.scheme)
        bits = [int(b) for b in FLAGS.bits]
        for b in bits:
            scheme(bits=b)  # validates bits before any data is loaded
    except ValueError as err:
        sys.exit(f"error: {err}")
    except TypeError:
        sys.exit(f"error: --bits must be integers, got {FLAGS.bits}")

    # digits has 174-183 images per class: 10 queries per class keeps a database of ~1,700.
    per_class = FLAGS.queries_per_class or (10 if FLAGS.dataset == "digits" else 100)
    print(f"tfhash {tfhash.__version__}: loading {FLAGS.dataset!r}", flush=True)
    try:
        split = datasets.load(FLAGS.dataset, data_dir=FLAGS.data_dir, queries_per_class=per_class,
                              seed=FLAGS.seed)
    except ValueError as err:
        sys.exit(f"error: {err}")
    print(split, flush=True)

    names = [FLAGS.scheme.lower()] + [n for n in baselines.BASELINES if n != FLAGS.scheme.lower()]
    rows = []
    start = time.perf_counter()
    for b in bits:
        print(f"{b} bits:", flush=True)
        rows += evaluation.compare_baselines(split, b, names=names, seed=FLAGS.seed)
    columns = ["method", "bits", "mAP", "mAP@1000", "precision@1000", "precision@r2", "empty_balls@r2"]
    print(evaluation.markdown_table([r for r in rows if "skipped" not in r], columns))

    model_dir = FLAGS.model_dir or os.path.join("runs", f"{FLAGS.dataset}-{FLAGS.scheme.lower()}")
    _io.write_json_atomically(os.path.join(model_dir, "metrics.json"), {
        "tfhash_version": tfhash.__version__, "scheme": FLAGS.scheme.lower(), "dataset": FLAGS.dataset,
        "queries_per_class": per_class, "seed": FLAGS.seed, "rows": rows,
        "seconds": time.perf_counter() - start,
    })
    print(f"wrote {os.path.join(model_dir, 'metrics.json')}")


if __name__ == "__main__":
    app.run(main)
