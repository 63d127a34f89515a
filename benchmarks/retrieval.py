"""Retrieval quality of a scheme against the shallow baselines, with settings chosen on validation queries only.

    python -m benchmarks.retrieval --scheme SCHEME --data mnist10k --bits 32 --presets paper vat --seeds 0 1 2
    python -m benchmarks.retrieval --scheme SCHEME --data fashion10k digits --bits 32 --presets NAME
    python -m benchmarks.retrieval --scheme SCHEME --data mnist10k --bits 32 --grid weight_entropy=0.05,0.1
    python -m benchmarks.retrieval --scheme SCHEME --data mnist10k --bits 32 --ablation --seeds 0
    python -m benchmarks.retrieval --scheme hashgan --data mnist10k --bits 32 "--ablation=-adversarial -feature -L2"
    python -m benchmarks.retrieval --scheme bgan --data mnist10k --bits 32 --compare hashgan --compare-epochs 30
    python -m benchmarks.retrieval --scheme dshgan --data mnist10k --labelled-per-class 50 --ablation --compare hashgan
    python -m benchmarks.retrieval --scheme hashgan --data mnist10k fashion10k digits --bits 16 32 64 --deep-baselines

SCHEME is any key of ``tfhash.schemes.names()``; everything scheme-specific (presets, ablation, the paper's
protocol and baselines) is read from the scheme's class.

**Protocol.** For each data set, code length and seed: the seed draws the test queries (100 per class;
10 for digits; 1,000 random points for gmm100k) and, from the training items, the validation queries
(as many); validation queries are searched among the other training items, test queries in the
database. Every candidate setting (``--presets`` x ``--grid``, plus the ablation) and every baseline is
trained on the same training set in the same run. Candidates are **ranked on validation figures only**;
the chosen one's test figures are reported as mean and spread (sample standard deviation) over the seeds,
beside ITQ's. Test figures of the other candidates are printed too, but never used for the choice.

Data: mnist10k / fashion10k (``../shared/data``: the MNIST / Fashion-MNIST test splits; the other
9,000 images are database and training set), fashion70k (all 70,000 Fashion-MNIST images: 1,000 queries, the
other 69,000 are database and training set, the papers' MNIST protocol), digits (scikit-learn, offline), cifar6k
(``../shared/data/cifar10-6k``), gmm100k (100,000 synthetic 256-d points, ``make_gaussian_mixture``).

Metric (``--protocol``, default: the scheme's ``retrieval_protocol``): **labels** (same class is relevant):
mAP over the whole database; **euclidean** (the true top-N Euclidean neighbours are relevant, N = 1,000,
or a tenth of the database when it holds fewer than 5,000 items): mAP. Each run also records the other test
figures the papers print (``test_details``: labels: mAP@1000, precision@1000 and @100, NMI and accuracy of
k-means on the database codes; euclidean: precision@100). Ends with one JSON line holding every run.

**Resuming** (``--checkpoint DIR``): each finished run is appended to ``DIR/runs.jsonl`` and each deep model
saves a checkpoint after every epoch; the same command with the same DIR after an interruption reads the
finished runs back and resumes the unfinished one from its last epoch. A finished run whose hyperparameters or
batch size differ from what the command now asks for (its preset changed since) is trained again. The record then
says how many runs and epochs came from earlier invocations; DIR is removed once the record is written.
A run's ``train_seconds`` (and the record's wall time) include the epochs that interrupted invocations trained: each
epoch's end writes the run's running total beside its epoch checkpoints.
"""

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import time

import keras
import numpy as np

import tfhash
from benchmarks import _common
from tfhash import _io, baselines, checkpoints, datasets, evaluation, metrics, schemes
from trainers.config import JIT_COMPILE, parse_set_flags

DATA = ("mnist10k", "fashion10k", "fashion70k", "digits", "cifar6k", "gmm100k")


def load_split(data, seed, train_size=None):
    """The data set's split for ``seed``, with validation queries drawn from the training items.

    ``train_size``: train on that many random database items (the database and queries stay the same).
    """
    if data == "gmm100k":
        x, y = datasets.make_gaussian_mixture(100_000, 256, seed=seed)
        return datasets.make_split(x, y, num_queries=1000, num_validation=1000, seed=seed, name=data)
    if data == "digits":
        return datasets.load("digits", queries_per_class=10, validation_per_class=10, seed=seed)
    x, y = _common.load_real(data)
    return datasets.make_split(x, y, queries_per_class=100, validation_per_class=100, train_size=train_size,
                               seed=seed, name=data)


class Scorer:
    """The protocol's figure for codes of one split (labels: mAP; euclidean: mAP against true neighbours).

    ``bits`` (the code length) asks for the other figures the papers print: labels: mAP@1000, precision@1000
    and @100, and k-means
    (k = classes) on the database codes scored by NMI and accuracy (HashGAN Table 3); euclidean: precision@100.
    """

    def __init__(self, split, protocol):
        self.split, self.protocol = split, protocol
        self.truth = None
        if protocol == "euclidean":
            database = split.database_x.reshape(len(split.database_x), -1)
            n = 1000 if len(database) >= 5000 else max(1, len(database) // 10)
            self.truth = metrics.euclidean_ground_truth(split.query_x.reshape(len(split.query_x), -1), database, n)

    def __call__(self, encode, bits=None):
        query, database = encode(self.split.query_x), encode(self.split.database_x)
        if self.protocol == "euclidean":
            figure = metrics.ann_mean_average_precision(query, database, self.truth)
            extra = {} if bits is None else {
                "precision@100": metrics.ann_precision_at_k(query, database, self.truth, 100)}
        else:
            labelled = (query, database, self.split.query_y, self.split.database_y)
            figure = metrics.mean_average_precision(*labelled)
            extra = {}
            if bits is not None:
                extra = {"mAP@1000": metrics.mean_average_precision(*labelled, top_k=1000),
                         "precision@1000": metrics.precision_at_k(*labelled, 1000),
                         "precision@100": metrics.precision_at_k(*labelled, 100)}
                if np.ndim(self.split.database_y) == 1:
                    clusters = metrics.kmeans_scores(database, self.split.database_y, bits=bits, seed=0)
                    extra.update({"kmeans_nmi": clusters["nmi"], "kmeans_acc": clusters["acc"]})
        return figure if bits is None else (figure, extra)


def score(scorers, encode, bits):
    """``{"validation": figure, "test": figure, "test_details": {...}}`` for one trained encoder."""
    test, details = scorers["test"](encode, bits)
    return {"validation": scorers["validation"](encode), "test": test, "test_details": details}


class TrainingClock(keras.callbacks.Callback):
    """A run's training seconds across the invocations that trained it.

    Made just before ``tfhash.fit``; each epoch's end writes ``{epochs done: running total}`` to ``path`` (beside
    the run's epoch checkpoints), so a run resumed from them adds the time of the epochs trained before the
    interruption. Epochs whose time is not known (checkpointed just before an interruption could write their
    total) are counted in ``untimed_epochs`` instead. ``path=None``: no file.
    """

    def __init__(self, path=None):
        super().__init__()
        self.path, self.started = path, time.perf_counter()
        self.totals = {}
        if path is not None and os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                self.totals = {int(done): total for done, total in json.load(f).items()}
        self.earlier, self.untimed_epochs, self.resumed_epochs, self._resumed = 0.0, 0, 0, False

    def _resume(self, epochs_done):
        if not self._resumed:  # once, at the epoch this invocation starts from
            self._resumed, self.resumed_epochs = True, epochs_done
            known = max([done for done in self.totals if done <= epochs_done], default=0)
            if known:
                self.earlier, self.untimed_epochs = self.totals[known]["seconds"], self.totals[known]["untimed_epochs"]
            self.untimed_epochs += epochs_done - known

    def on_epoch_begin(self, epoch, logs=None):
        self._resume(epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.totals[epoch + 1] = {"seconds": round(self.seconds(), 1), "untimed_epochs": self.untimed_epochs}
        if self.path is not None:
            _io.write_json_atomically(self.path, {str(done): total for done, total in sorted(self.totals.items())})

    def seconds(self, epochs_done=None):
        """The run's training seconds so far; ``epochs_done``: the fit's epochs, for a fit that trained none here
        (its last checkpoint was already its last epoch)."""
        if epochs_done is not None:
            self._resume(epochs_done)
        return self.earlier + time.perf_counter() - self.started


class RunLog:
    """The runs a command has finished, kept in ``directory`` so an interrupted command can resume.

    ``directory`` is created here, with a ``command.json`` naming the command, and removed with everything in it
    once the command's record is written. An existing directory without that file (even an empty one), another
    command's directory, or one a running command holds is refused rather than reused, overwritten or removed.
    """

    MARKER = "command.json"

    def __init__(self, directory, arguments, defaults=None):
        """``defaults``: the default of each argument; an option added since the directory was made counts as
        the same command when it is left at its default (a new option's default keeps the old behaviour)."""
        self.directory = directory
        self.session = f"{os.getpid()}-{time.time():.0f}"
        self.started = time.perf_counter()
        marker = os.path.join(directory, self.MARKER)
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise SystemExit(f"--checkpoint must be a directory, got the file {directory!r}")
        try:
            os.makedirs(directory)
            _io.write_json_atomically(marker, arguments)
        except FileExistsError:  # made before: this command's, interrupted, or not ours at all
            if not os.path.isfile(marker):
                raise SystemExit(f"--checkpoint {directory!r} is a directory this benchmark did not make "
                                 f"(no {self.MARKER}); give a path that does not exist yet") from None
            with open(marker, encoding="utf-8") as f:
                saved = json.load(f)
            added_since = {key: value for key, value in (defaults or {}).items() if key not in saved}
            if {**added_since, **saved} != arguments:
                raise SystemExit(f"--checkpoint {directory!r} holds the runs of another command ({saved}); "
                                 "give another directory") from None
        # Held until the record is written or the process ends: a second invocation on the directory is refused.
        self._lock = contextlib.ExitStack()
        try:
            self._lock.enter_context(_io.exclusive_lock(os.path.join(directory, "lock"), "command on it"))
        except FileExistsError as error:
            raise SystemExit(f"--checkpoint {directory!r} is in use: {error}") from None
        # of unfinished runs' epochs that earlier invocations trained: their seconds and count
        self.resumed_training_seconds, self.resumed_epochs = 0.0, 0
        self.finished = {}
        self.earlier = {}  # session -> (seconds it ran until its last finished run, peak MB)
        path = os.path.join(directory, "runs.jsonl")
        if os.path.exists(path):
            with open(path, "rb+") as f:  # a last line cut short by the interruption is dropped
                f.truncate(f.read().rfind(b"\n") + 1)
            with open(path, encoding="utf-8") as f:
                for line in f:
                    entry = json.loads(line)
                    self.finished[tuple(entry["key"])] = entry["run"]
                    seconds, memory = self.earlier.get(entry["session"], (0.0, 0.0))
                    self.earlier[entry["session"]] = (max(seconds, entry["elapsed"]), max(memory, entry["peak_rss_mb"]))

    def get(self, key):
        return self.finished.get(key)

    def forget(self, key):
        """Trains ``key`` again: its logged run no longer counts (its line stays; a newer line for it wins)."""
        del self.finished[key]

    def training_directory(self, key):
        """Where the run ``key`` keeps its epoch checkpoints (``tfhash.fit``'s ``checkpoint_dir``)."""
        digest = hashlib.sha1(json.dumps(list(key)).encode()).hexdigest()[:12]
        return os.path.join(self.directory, f"{key[0]}-{key[1]}-{key[2]}-{digest}")

    def add(self, key, run):
        # elapsed: this invocation's wall time so far, with the epochs of its runs that earlier ones trained
        elapsed = time.perf_counter() - self.started + self.resumed_training_seconds
        entry = {"key": list(key), "run": run, "session": self.session,
                 "elapsed": round(elapsed, 1), "peak_rss_mb": round(_common.peak_rss_mb(), 1)}
        with open(os.path.join(self.directory, "runs.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True, default=float) + "\n")
            f.flush()
            os.fsync(f.fileno())
        shutil.rmtree(self.training_directory(key), ignore_errors=True)  # made by tfhash.fit for this run
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.clock_path(key))

    def clock_path(self, key):
        """Where the run ``key``'s :class:`TrainingClock` keeps its running total."""
        return self.training_directory(key) + ".seconds.json"

    def earlier_seconds(self):
        """Wall time of earlier invocations: until each one's last finished run, and the epochs of unfinished runs
        they trained that this one resumed."""
        return sum(seconds for seconds, _ in self.earlier.values()) + self.resumed_training_seconds

    def summary(self):
        """The record's fields on resumption: ``{}`` when every run and epoch was trained by this invocation."""
        if not self.finished and not self.resumed_epochs:
            return {}
        return {"resumed_runs": len(self.finished),
                **({"resumed_epochs": self.resumed_epochs} if self.resumed_epochs else {})}

    def peak_rss_mb(self):
        return max([memory for _, memory in self.earlier.values()] + [_common.peak_rss_mb()])

    def remove(self):
        shutil.rmtree(self.directory)
        self._lock.close()


def parse_grid(items, scheme_cls):
    """``["key=v1,v2", ...]`` -> list of override dicts (the cartesian product)."""
    axes = []
    for item in items:
        key, _, values = item.partition("=")
        parsed = [parse_set_flags([f"{key}={v}"], scheme_cls)[key] for v in values.split(",") if v != ""]
        if not parsed:
            raise SystemExit(f"--grid must be key=value1,value2,..., got {item!r}")
        axes.append([(key, v) for v in parsed])
    return [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]


def candidates(scheme_cls, preset_names, grid, overrides, ablation):
    """``[(label, preset name, hyperparameter overrides)]``; ``ablation``: None, or the names of the scheme's
    ablations to add to every candidate (empty: all of them)."""
    ablations = scheme_cls.spec.ablations
    if ablation:
        unknown = [name for name in ablation if name not in ablations]
        if unknown:
            raise SystemExit(f"--ablation names must be among {sorted(ablations)}, got {unknown}")
        ablations = {name: ablations[name] for name in ablation}
    out = []
    for name in preset_names:
        for point in grid:
            values = {**overrides, **point}
            label = name + "".join(f" {k}={v}" for k, v in point.items())
            out.append((label, name, values))
            if ablation is not None:
                out += [(f"{label} {term}", name, {**values, **removed}) for term, removed in ablations.items()]
    return out


def changed_settings(scheme_cls, runs, batch_size, key, run):
    """``{setting: (logged, asked)}`` where a logged run of this command was trained with other settings than the
    command asks for now (a preset changed since): its hyperparameters and batch size. Empty for baselines and
    runs logged before they recorded their hyperparameters."""
    asked = {label: (preset, values) for label, preset, values in runs}
    if key[3] not in asked or "hyperparameters" not in run:
        return {}
    preset, values = asked[key[3]]
    settings = scheme_cls.presets[preset].settings(key[1])
    differing = checkpoints.differing_settings(scheme_cls, run["hyperparameters"],
                                            {**settings["hyperparameters"], **values})
    batch_size = batch_size or settings["batch_size"]
    if run.get("batch_size", batch_size) != batch_size:
        differing["batch_size"] = (run["batch_size"], batch_size)
    return differing


def code_shape(hasher, database_x):
    """How binary the trained outputs are (fraction within 1% of a code value: |p - t| >= 0.99 (1 - t) for
    threshold t) and the range of bit frequencies over the database."""
    threshold = hasher.model.threshold
    probabilities = hasher.predict_probabilities(database_x)
    frequencies = (probabilities >= threshold).mean(axis=0)
    return {"saturation": float(np.mean(np.abs(probabilities - threshold) >= 0.99 * (1.0 - threshold))),
            "bit_freq_min": float(frequencies.min()), "bit_freq_max": float(frequencies.max())}


def resolved_hyperparameters(hasher):
    """Every hyperparameter the run trained with (the preset's, the overrides and the constructor's), so a
    record still says what it measured after a preset changes."""
    config = hasher.model.get_config()
    return {name: value for name, value in config.items() if name not in ("bits", "input_shape", "seed")}


def training_data(split, scheme, labels):
    """``tfhash.fit``'s data arguments: the split, or its training items with ``labels`` for a scheme that trains on
    labels when only some are given."""
    if labels is None or not schemes.get(scheme).needs_labels:
        return (split,)
    return split.train_x, labels


def compare_label(name, hasher):
    return f"{name} (default preset {hasher.preset!r}, {hasher.epoch} epochs)"


def summary(values):
    values = np.asarray(values, dtype=float)
    spread = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), spread


def build_parser():
    """The command line (also used by ``benchmarks.reproduce`` to read the commands stored with results)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheme", required=True, choices=schemes.names())
    parser.add_argument("--data", nargs="+", default=["mnist10k"], choices=DATA)
    parser.add_argument("--bits", type=int, nargs="+", default=[32])
    parser.add_argument("--presets", nargs="+", default=None, help="candidate presets (default: the scheme's default)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="candidate values of a hyperparameter, crossed with --presets (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="applied to every candidate")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: each preset's")
    parser.add_argument("--jit-compile", choices=tuple(JIT_COMPILE), default="auto",
                        help="tfhash.fit's jit_compile for every scheme trained (true: XLA, as Keras on one GPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: each preset's")
    parser.add_argument("--protocol", default=None, choices=["labels", "euclidean"])
    parser.add_argument("--baselines", nargs="+", default=None, help="default: the paper's baselines (ITQ always)")
    parser.add_argument("--ablation", nargs="*", action="extend", default=None, metavar="NAME",
                        help="also train each candidate without the terms of the scheme's ablations: all of them, or "
                        "those named (a name beginning with '-' as --ablation=NAME; repeatable)")
    parser.add_argument("--compare", nargs="+", default=[], choices=schemes.names(),
                        help="other schemes trained in the same run with their default preset (reported, never chosen)")
    parser.add_argument("--compare-epochs", type=int, default=None, help="epochs of the --compare schemes "
                        "(default: their preset's)")
    parser.add_argument("--deep-baselines", action="store_true",
                        help="also train every deep non-adversarial baseline scheme (" + ", ".join(
                            n for n in schemes.names() if schemes.get(n).spec.deep_baseline)
                        + ") with its default preset, like --compare")
    parser.add_argument("--labelled-per-class", type=int, default=None, metavar="N",
                        help="semi-supervised runs: schemes that train on labels see the labels of N random training "
                        "items per class, drawn per seed, never validation queries (default: every training label)")
    parser.add_argument("--results", default=None, metavar="FILE.jsonl",
                        help="also append the closing JSON line, with the command, commit and wall time, to this file")
    parser.add_argument("--checkpoint", default=None, metavar="DIR",
                        help="keep finished runs and epoch checkpoints in DIR; the same command with the same DIR "
                        "resumes after an interruption (DIR is removed when the command ends)")
    parser.add_argument("--train-size", type=int, default=None, metavar="N",
                        help="real image data: train on N random database items (queries and database unchanged)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    started = time.perf_counter()
    arguments = {key: value for key, value in vars(args).items() if key not in ("results", "checkpoint")}

    scheme_cls = schemes.get(args.scheme)
    if args.deep_baselines:
        deep = [n for n in schemes.names() if schemes.get(n).spec.deep_baseline and n != args.scheme]
        args.compare = list(dict.fromkeys(args.compare + deep))
    preset_names = args.presets or [scheme_cls.default_preset]
    unknown = sorted(set(preset_names) - set(scheme_cls.presets))
    if unknown:
        raise SystemExit(f"--presets must be among {sorted(scheme_cls.presets)}, got {unknown}")
    overrides = parse_set_flags(args.set, scheme_cls)
    runs = candidates(scheme_cls, preset_names, parse_grid(args.grid, scheme_cls), overrides, args.ablation)
    protocol = args.protocol or scheme_cls.spec.retrieval_protocol
    baseline_names = list(dict.fromkeys(["itq"] + list(args.baselines or scheme_cls.spec.paper_baselines)))
    labelled = ("" if args.labelled_per_class is None else
                f"; {args.labelled_per_class} labelled training items per class for schemes that train on labels")
    print(f"{args.scheme}: {len(runs)} candidate(s) x seeds {args.seeds} on {args.data}, bits {args.bits}; "
          f"protocol {protocol}; selection on validation queries{labelled}", flush=True)

    jit_compile = JIT_COMPILE[args.jit_compile]
    log = None if args.checkpoint is None else RunLog(args.checkpoint, arguments,
                                                      {key: parser.get_default(key) for key in arguments})
    for key, run in list(log.finished.items() if log else ()):
        differing = changed_settings(scheme_cls, runs, args.batch_size, key, run)
        if differing:
            log.forget(key)
            details = ", ".join(f"{name}: logged {a!r}, asked {b!r}" for name, (a, b) in sorted(differing.items()))
            print(f"  {key[0]} {key[1]} bits seed {key[2]} {key[3]}: finished earlier with other settings "
                  f"({details}); trained again", flush=True)
    run_names = baseline_names + [f"compare {other}" for other in args.compare] + [label for label, _, _ in runs]
    results = []  # one dict per (data, bits, seed, method)

    def finished(key):
        run = log.get(key) if log else None
        if run is not None:
            results.append(run)
            print(f"  {key[0]} {key[1]} bits seed {key[2]} {key[3]}: test {run['test']:.4f} (finished earlier)",
                  flush=True)
        return run is not None

    def keep(key, run, message):
        results.append(run)
        if log:
            log.add(key, run)
        print(f"  {key[0]} {key[1]} bits seed {key[2]} {message}", flush=True)

    def timed_fit(key, scheme, *arguments, **options):
        """``tfhash.fit`` resuming from the run's epoch checkpoints; the hasher, its training seconds (those of
        epochs trained by interrupted invocations too) and the run's ``untimed_epochs`` field when there are some."""
        clock = TrainingClock(log.clock_path(key) if log else None)
        hasher = tfhash.fit(scheme, *arguments, verbose=0, jit_compile=jit_compile, callbacks=[clock],
                            checkpoint_dir=log.training_directory(key) if log else None, **options)
        seconds = clock.seconds(hasher.epoch)
        if log:
            log.resumed_training_seconds += clock.earlier
            log.resumed_epochs += clock.resumed_epochs
        return hasher, seconds, ({"untimed_epochs": clock.untimed_epochs} if clock.untimed_epochs else {})

    for data in args.data:
        for seed in args.seeds:
            keys = [(data, bits, seed, name) for bits in args.bits for name in run_names]
            if log and all(log.get(key) is not None for key in keys):
                results += [log.get(key) for key in keys]
                print(f"{data} seed {seed}: every run finished by an earlier invocation", flush=True)
                continue
            split = load_split(data, seed, args.train_size)
            print(split, flush=True)
            scorers = {"validation": Scorer(split.validation(), protocol), "test": Scorer(split, protocol)}
            labels = None if args.labelled_per_class is None else split.partial_labels(args.labelled_per_class, seed)
            for bits in args.bits:
                for name in baseline_names:
                    key = (data, bits, seed, name)
                    if finished(key):
                        continue
                    start = time.perf_counter()
                    method = baselines.get(name)(bits=bits, seed=seed).fit(split.train_x)
                    scores = score(scorers, method.encode, bits)
                    keep(key, {"data": data, "bits": bits, "seed": seed, "method": name, "baseline": True,
                               **scores, "train_seconds": time.perf_counter() - start},
                         f"{name}: validation {scores['validation']:.4f}, test {scores['test']:.4f}")
                for other in args.compare:
                    key = (data, bits, seed, f"compare {other}")
                    if finished(key):
                        continue
                    hasher, seconds, untimed = timed_fit(key, other, *training_data(split, other, labels), bits=bits,
                                                         epochs=args.compare_epochs, seed=seed)
                    scores = score(scorers, hasher.encode, bits)
                    keep(key, {"data": data, "bits": bits, "seed": seed, "method": compare_label(other, hasher),
                               "scheme": other, "preset": hasher.preset, "baseline": True, "compared": True,
                               **scores, "train_seconds": seconds, **untimed},
                         f"{compare_label(other, hasher)}: validation {scores['validation']:.4f}, "
                         f"test {scores['test']:.4f} ({seconds:.0f} s)")
                for label, preset, values in runs:
                    key = (data, bits, seed, label)
                    if finished(key):
                        continue
                    hasher, seconds, untimed = timed_fit(key, args.scheme, *training_data(split, args.scheme, labels),
                                                         bits=bits, preset=preset, epochs=args.epochs,
                                                         batch_size=args.batch_size, seed=seed, **values)
                    scores = score(scorers, hasher.encode, bits)
                    shape = code_shape(hasher, split.database_x)
                    keep(key, {"data": data, "bits": bits, "seed": seed, "method": label, "baseline": False,
                               "preset": preset, "overrides": values, "epochs": hasher.epoch,
                               "hyperparameters": resolved_hyperparameters(hasher),
                               "batch_size": hasher.training["batch_size"], **scores, **shape,
                               "train_seconds": seconds, **untimed},
                         f"{label}: validation {scores['validation']:.4f}, test {scores['test']:.4f} "
                         f"({seconds:.0f} s); "
                         f"binary outputs {shape['saturation']:.4f}, bit frequencies "
                         f"[{shape['bit_freq_min']:.2f}, {shape['bit_freq_max']:.2f}]")

    rows = []
    for data in args.data:
        for bits in args.bits:
            cell = [r for r in results if r["data"] == data and r["bits"] == bits]
            itq_test = summary([r["test"] for r in cell if r["method"] == "itq"])
            labels = [label for label, _, _ in runs]
            chosen = max(labels, key=lambda m: summary([r["validation"] for r in cell if r["method"] == m])[0])
            compared = list(dict.fromkeys(r["method"] for r in cell if r.get("compared")))
            for method in baseline_names + compared + labels:
                mine = [r for r in cell if r["method"] == method]
                validation, test = summary([r["validation"] for r in mine]), summary([r["test"] for r in mine])
                rows.append({
                    "data": data, "bits": bits, "method": method + (" (chosen on validation)" if method == chosen
                                                                     and len(labels) > 1 else ""),
                    "validation": f"{validation[0]:.4f} ± {validation[1]:.4f}",
                    "test": f"{test[0]:.4f} ± {test[1]:.4f}", "x ITQ (test)": f"{test[0] / itq_test[0]:.2f}",
                    "train s": f"{np.mean([r['train_seconds'] for r in mine]):.1f}",
                    "binary outputs": (f"{np.mean([r['saturation'] for r in mine]):.4f}" if "saturation" in mine[0]
                                       else ""),
                    "bit freq": (f"[{min(r['bit_freq_min'] for r in mine):.2f}, "
                                 f"{max(r['bit_freq_max'] for r in mine):.2f}]"
                                 if "saturation" in mine[0] else ""),
                })
    print()
    print(f"{protocol} mAP, mean ± sample std over seeds {args.seeds}; settings ranked on validation queries only")
    print(evaluation.markdown_table(rows, ["data", "bits", "method", "validation", "test", "x ITQ (test)", "train s",
                                           "binary outputs", "bit freq"]))
    record = {"benchmark": "retrieval", "scheme": args.scheme, "data": args.data, "protocol": protocol,
              "seeds": args.seeds, "selection": "validation", "labelled_per_class": args.labelled_per_class,
              "train_size": args.train_size, "epochs": args.epochs, "batch_size": args.batch_size,
              "compare_epochs": args.compare_epochs, "jit_compile": args.jit_compile,
              "candidates": [{"label": label, "preset": p, "overrides": v} for label, p, v in runs],
              "runs": results, "machine": _common.machine(),
              "peak_rss_mb": round(log.peak_rss_mb() if log else _common.peak_rss_mb(), 1),
              **(log.summary() if log else {})}
    print(evaluation.json_line(record))
    if args.results:
        _common.append_result(args.results, record,
                              time.perf_counter() - started + (log.earlier_seconds() if log else 0))
    if log:
        log.remove()


if __name__ == "__main__":
    main()
