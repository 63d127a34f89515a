"""Command line: export a trained hasher (a checkpoint directory of tfhash.fit) for serving.

    python -m export.export_model --checkpoint_dir=runs/x --format=serving --output=serving_models
    python -m export.export_model --checkpoint_dir=runs/x --format=saved_model --output=exports/encoder
    python -m export.export_model --checkpoint_dir=runs/x --format=tflite --quantization=float16 --output=enc.tflite

A thin layer over ``tfhash.export``.
"""

import sys

from absl import app, flags

import tfhash
from tfhash import export

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_dir", None, "Checkpoint directory written by tfhash.fit(checkpoint_dir=...).")
flags.DEFINE_enum("format", "serving", ["serving", "saved_model", "tflite"], "What to write.")
flags.DEFINE_string("output", None, "Base directory (serving), export directory (saved_model) or file (tflite).")
flags.DEFINE_string("model_name", "tfhash", "Model name in the TF Serving layout.")
flags.DEFINE_integer("version", None, "Version number in the TF Serving layout (default: next free).")
flags.DEFINE_enum("quantization", None, ["float16", "dynamic"], "TFLite quantisation.")
flags.DEFINE_bool("overwrite", False, "Replace an existing export.")
flags.mark_flags_as_required(["checkpoint_dir", "output"])


def main(argv):
    del argv
    try:
        hasher = tfhash.Hasher.load(FLAGS.checkpoint_dir)
        if FLAGS.format == "serving":
            path = export.export_serving(hasher, FLAGS.output, FLAGS.model_name, version=FLAGS.version,
                                         overwrite=FLAGS.overwrite)
        elif FLAGS.format == "saved_model":
            path = export.export_saved_model(hasher, FLAGS.output, overwrite=FLAGS.overwrite)
        else:
            path = export.export_tflite(hasher, FLAGS.output, quantization=FLAGS.quantization,
                                        overwrite=FLAGS.overwrite)
    except (ValueError, OSError) as err:
        sys.exit(f"error: {err}")
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
