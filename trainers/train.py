"""Command line: train a hashing scheme, evaluate it against the shallow baselines, export the encoder.

    python -m trainers.train --scheme=hashgan --dataset=digits --bits=32 --model_dir=runs/digits --export

One run loads the data, trains (progress bar; TensorBoard summaries in ``<model_dir>/logs``; a
checkpoint per epoch in ``<model_dir>``, training time and evaluations so far in
``<model_dir>/run_record.json``), evaluates the codes beside the baselines (a markdown table on
stdout and ``<model_dir>/metrics.json``) and exports the encoder to ``<model_dir>/export/<scheme>/<epochs>``
(TF Serving layout). Rerunning with the same ``--model_dir`` resumes from the last finished epoch.

Settings come from the scheme's presets (``--preset=NAME``, default: the scheme's default preset) or a
JSON file (``--preset=file.json``), exactly as ``tfhash.fit(preset=...)`` applies them; flags override
them. Only a thin layer over ``tfhash``: every step is a library call.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # keep TensorFlow's C++ start-up notes off the progress output

from absl import app, flags, logging

import tfhash
from tfhash import _io, datasets, evaluation, export, schemes, summaries
from trainers import config as run_config

FLAGS = flags.FLAGS
flags.DEFINE_string("scheme", "hashgan", f"Hashing scheme: one of {schemes.names()}.")
flags.DEFINE_string("dataset", "digits", f"Data set: one of {datasets.known_datasets()}, or a path to local files "
                    "(a directory of MNIST IDX files or CIFAR-10 python batches, or an .npz of images and labels).")
flags.DEFINE_string("data_dir", None, "TFDS data directory (data prepared there needs no network).")
flags.DEFINE_integer("bits", 32, "Code length.")
flags.DEFINE_string("model_dir", None, "Checkpoints, TensorBoard logs, metrics.json and the export "
                    "(default: runs/<dataset>-<scheme>-<bits>). Rerunning with the same directory resumes.")
flags.DEFINE_string("preset", None, "A preset of the scheme (e.g. paper; tfhash.schemes.get(scheme).presets) or a "
                    "JSON file with description / epochs / batch_size / hyperparameters / per_bits; default: the "
                    "scheme's default preset.")
flags.DEFINE_integer("epochs", None, "Training epochs (default: from the preset).")
flags.DEFINE_integer("batch_size", None, "Global batch size (default: from the preset).")
flags.DEFINE_float("learning_rate", None, "Initial learning rate (default: from the preset / the paper).")
flags.DEFINE_multi_string("set", [], "Scheme hyperparameter override key=value (repeatable), e.g. "
                          "--set weight_entropy=0.1 --set consistency_transform=adversarial.")
flags.DEFINE_integer("eval_every", None, "Log retrieval mAP to TensorBoard every N epochs (0: only at the end; "
                     f"default {run_config.DEFAULT_EVAL_EVERY}).")
flags.DEFINE_list("baselines", ["lsh", "pcah", "itq", "sph", "sh"], "Shallow baselines evaluated in the same run.")
flags.DEFINE_integer("queries_per_class", None, "Queries per class (default: 100, or 10 for digits).")
flags.DEFINE_integer("labelled_per_class", None, "Semi-supervised training (schemes that train on labels): keep "
                     "the labels of this many random training items per class, drawn with --seed; the rest are "
                     "unlabelled (default: every training label).")
flags.DEFINE_integer("seed", 0, "Seeds the query draw, initialisation, shuffling and training noise.")
flags.DEFINE_enum("strategy", "default", list(run_config.STRATEGIES),
                  "Distribution: default (one device), mirrored (all local GPUs), multi_worker (TF_CONFIG), tpu.")
flags.DEFINE_string("tpu", "", "TPU name or grpc:// address for --strategy=tpu (empty: the local TPU).")
flags.DEFINE_enum("jit_compile", "auto", list(run_config.JIT_COMPILE),
                  "XLA compilation of the training step, passed to Keras (auto: Keras's rule, on with one GPU).")
flags.DEFINE_boolean("export", True, "Export the encoder (SavedModel, TF Serving layout) after training.")
flags.DEFINE_integer("verbose", 1, "Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch.")

RUN_RECORD = "run_record.json"
COLUMNS = ["method", "bits", "mAP", "mAP@1000", "precision@1000", "precision@r2", "empty_balls@r2"]


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}; flags look like --name=value.")
    try:
        config = run_config.resolve(FLAGS.scheme, FLAGS.dataset, preset=FLAGS.preset, epochs=FLAGS.epochs,
                                    batch_size=FLAGS.batch_size, eval_every=FLAGS.eval_every,
                                    learning_rate=FLAGS.learning_rate, overrides=FLAGS.set, bits=FLAGS.bits)
        unknown = sorted(set(FLAGS.baselines) - set(tfhash.baselines.BASELINES))
        if unknown:
            raise ValueError(f"--baselines must be among {sorted(tfhash.baselines.BASELINES)}, got {unknown}.")
        strategy = run_config.make_strategy(FLAGS.strategy, FLAGS.tpu)
    except ValueError as err:
        sys.exit(f"error: {err}")
    is_chief, task_id = run_config.worker_role(strategy)
    name = os.path.basename(os.path.normpath(config["dataset"])).replace(".npz", "")
    model_dir = FLAGS.model_dir or os.path.join("runs", f"{name}-{config['scheme']}-{config['bits']}")
    if os.path.isfile(model_dir):
        sys.exit(f"error: --model_dir must be a directory, got an existing file {model_dir!r}.")
    # Non-chief workers take part in every collective (checkpoints included) but write to a scratch dir.
    checkpoint_dir = model_dir if is_chief else os.path.join(model_dir, f".worker-{task_id}")

    preset = config["preset"]
    print(f"tfhash {tfhash.__version__}: {config['scheme']} ({config['bits']} bits) on {config['dataset']!r}, "
          f"preset {preset.name!r} ({config['epochs']} epochs, batch {config['batch_size']})", flush=True)
    per_class = FLAGS.queries_per_class or (10 if config["dataset"] == "digits" else 100)
    try:
        split = datasets.load(config["dataset"], data_dir=FLAGS.data_dir, queries_per_class=per_class,
                              seed=FLAGS.seed)
    except ValueError as err:
        sys.exit(f"error: {err}")
    print(split, flush=True)
    labels = split.train_y
    if FLAGS.labelled_per_class is not None:
        try:
            labels = split.partial_labels(FLAGS.labelled_per_class, seed=FLAGS.seed)
        except ValueError as err:
            sys.exit(f"error: --labelled_per_class: {err}")
        print(f"{int((labels >= 0).sum())} of {len(labels)} training items keep their labels", flush=True)

    callbacks = []
    log_dir = os.path.join(model_dir, "logs")
    if is_chief:
        logger = summaries.TensorBoardLogger(log_dir, sample_x=split.train_x, split=split,
                                             eval_every=config["eval_every"], seed=FLAGS.seed, log=print)
        try:  # time and evaluations of every part of a resumed run
            record = summaries.RunRecord(os.path.join(model_dir, RUN_RECORD), logger)
        except ValueError as err:
            sys.exit(f"error: {err}")
        callbacks += [logger, record]
    try:
        hasher = tfhash.fit(config["scheme"], split.train_x, labels, bits=config["bits"], preset=preset,
                            epochs=config["epochs"] if config["epochs_given"] else None,
                            batch_size=config["batch_size"], strategy=strategy,
                            callbacks=callbacks, seed=FLAGS.seed, checkpoint_dir=checkpoint_dir,
                            verbose=FLAGS.verbose, jit_compile=run_config.JIT_COMPILE[FLAGS.jit_compile],
                            **config["hyperparameters"])
    except (ValueError, FloatingPointError) as err:
        sys.exit(f"error: {err}")
    if not is_chief:
        return

    print(f"evaluating {config['scheme']} and baselines {FLAGS.baselines} on {len(split.query_x)} queries", flush=True)
    rows = hasher.evaluate(split, baselines=FLAGS.baselines, seed=FLAGS.seed, pr_curve=True, log=print)
    print(evaluation.markdown_table([r for r in rows if "skipped" not in r], COLUMNS))
    curves = {r["method"]: (r["pr_curve"]["precision"], r["pr_curve"]["recall"]) for r in rows if "pr_curve" in r}
    summaries.write_precision_recall_image(log_dir, curves, step=hasher.epoch)

    export_path = None
    if FLAGS.export:
        export_path = export.export_serving(hasher, os.path.join(model_dir, "export"), config["scheme"],
                                            version=hasher.epoch, overwrite=True)
        print(f"exported the encoder to {export_path}")
    metrics_path = os.path.join(model_dir, "metrics.json")
    _io.write_json_atomically(metrics_path, {
        "tfhash_version": tfhash.__version__, "scheme": config["scheme"], "dataset": config["dataset"],
        "bits": config["bits"], "preset": preset.name, "preset_description": preset.description,
        "preset_selected_on": preset.selected_on, "epochs": hasher.epoch,
        "batch_size": config["batch_size"], "seed": FLAGS.seed, "strategy": FLAGS.strategy,
        "replicas": strategy.num_replicas_in_sync, "queries_per_class": per_class,
        "labelled_per_class": FLAGS.labelled_per_class,
        "hyperparameters": hasher.model.get_config(), "train_seconds": record.train_seconds,
        "evaluations": record.evaluations, "rows": rows,
        "export": export_path,
    })
    print(f"wrote {metrics_path}; TensorBoard: tensorboard --logdir {log_dir}")


if __name__ == "__main__":
    app.run(main)
