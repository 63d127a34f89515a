"""Retrieval quality of a scheme against the shallow baselines, with settings chosen on validation queries only.

    python -m benchmarks.retrieval --scheme SCHEME --data mnist10k fashion10k --bits 16 32 --presets paper vat
    python -m benchmarks.retrieval --scheme SCHEME --data mnist10k --grid weight_entropy=0.05,0.1 --ablation
    python -m benchmarks.retrieval --scheme bgan --data mnist10k --compare hashgan --compare-epochs 30

For each data set, code length and seed, every candidate (``--presets`` x ``--grid``, with the ablations) and
every baseline trains on the same training items; candidates are ranked on validation queries drawn from the
training items (``tfhash.evaluation.SplitScorer``), and the test figures of all are reported, mean and sample
standard deviation over the seeds, beside ITQ's. ``--checkpoint DIR`` keeps finished runs and epoch checkpoints
so the same command resumes after an interruption. The protocol and the data sets: docs/benchmarks.md.
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
from tfhash import _io, baselines, checkpoints, datasets, evaluation, schemes
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


def score(scorers, encode, bits):
    """``{"validation": figure, "test": figure, "test_details": {...}}`` for one trained encoder."""
    test, details = scorers["test"](encode, bits=bits)
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


def _summary_rows(results, data_sets, bit_lengths, labels):
    """One console row per method of each cell: validation and test mean ± spread, the choice marked."""
    def summary(values):
        return f"{np.mean(values):.4f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.4f}"

    rows = []
    for data, bits in itertools.product(data_sets, bit_lengths):
        cell = [r for r in results if r["data"] == data and r["bits"] == bits]
        by_method = {}
        for run in cell:
            by_method.setdefault(run["method"], []).append(run)
        chosen = max(labels, key=lambda m: np.mean([r["validation"] for r in by_method[m]]))
        itq = np.mean([r["test"] for r in by_method["itq"]])
        for method, mine in by_method.items():
            marked = method + " (chosen on validation)" * (method == chosen and len(labels) > 1)
            rows.append({"data": data, "bits": bits, "method": marked,
                         "validation": summary([r["validation"] for r in mine]),
                         "test": summary([r["test"] for r in mine]),
                         "x ITQ (test)": f"{np.mean([r['test'] for r in mine]) / itq:.2f}",
                         "train s": f"{np.mean([r['train_seconds'] for r in mine]):.1f}"})
    return rows


def _forget_changed_runs(log, scheme_cls, runs, batch_size):
    for key, run in list(log.finished.items() if log else ()):
        differing = changed_settings(scheme_cls, runs, batch_size, key, run)
        if differing:
            log.forget(key)
            details = ", ".join(f"{name}: logged {a!r}, asked {b!r}" for name, (a, b) in sorted(differing.items()))
            print(f"  {key[0]} {key[1]} bits seed {key[2]} {key[3]}: finished earlier with other settings "
                  f"({details}); trained again", flush=True)


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
    runs = candidates(scheme_cls, preset_names, parse_grid(args.grid, scheme_cls),
                      parse_set_flags(args.set, scheme_cls), args.ablation)
    protocol = args.protocol or scheme_cls.spec.retrieval_protocol
    baseline_names = list(dict.fromkeys(["itq"] + list(args.baselines or scheme_cls.spec.paper_baselines)))
    print(f"{args.scheme}: {len(runs)} candidate(s) x seeds {args.seeds} on {args.data}, bits {args.bits}; "
          f"protocol {protocol}; selection on validation queries", flush=True)
    log = None if args.checkpoint is None else RunLog(args.checkpoint, arguments,
                                                      {key: parser.get_default(key) for key in arguments})
    _forget_changed_runs(log, scheme_cls, runs, args.batch_size)
    run_names = baseline_names + [f"compare {other}" for other in args.compare] + [label for label, _, _ in runs]
    results = []  # one dict per (data, bits, seed, method)

    def timed_fit(key, scheme, *arguments, **options):
        """``tfhash.fit`` resuming from the run's epoch checkpoints; the hasher and the run's timing fields (the
        seconds of epochs trained by interrupted invocations too, and ``untimed_epochs`` when there are some)."""
        clock = TrainingClock(log.clock_path(key) if log else None)
        hasher = tfhash.fit(scheme, *arguments, verbose=0, jit_compile=JIT_COMPILE[args.jit_compile],
                            callbacks=[clock], checkpoint_dir=log.training_directory(key) if log else None, **options)
        seconds = clock.seconds(hasher.epoch)
        if log:
            log.resumed_training_seconds += clock.earlier
            log.resumed_epochs += clock.resumed_epochs
        return hasher, {"train_seconds": seconds,
                        **({"untimed_epochs": clock.untimed_epochs} if clock.untimed_epochs else {})}

    def train(key, split, labels, scorers):
        """The run ``key`` = (data, bits, seed, method name): trained, scored and described."""
        data, bits, seed, name = key
        cell = {"data": data, "bits": bits, "seed": seed}
        if name in baseline_names:
            start = time.perf_counter()
            method = baselines.get(name)(bits=bits, seed=seed).fit(split.train_x)
            return {**cell, "method": name, "baseline": True, **score(scorers, method.encode, bits),
                    "train_seconds": time.perf_counter() - start}
        if name.startswith("compare "):
            other = name[len("compare "):]
            hasher, timing = timed_fit(key, other, *training_data(split, other, labels), bits=bits,
                                       epochs=args.compare_epochs, seed=seed)
            return {**cell, "method": compare_label(other, hasher), "scheme": other, "preset": hasher.preset,
                    "baseline": True, "compared": True, **score(scorers, hasher.encode, bits), **timing}
        preset, values = next((p, v) for label, p, v in runs if label == name)
        hasher, timing = timed_fit(key, args.scheme, *training_data(split, args.scheme, labels), bits=bits,
                                   preset=preset, epochs=args.epochs, batch_size=args.batch_size, seed=seed, **values)
        return {**cell, "method": name, "baseline": False, "preset": preset, "overrides": values,
                "epochs": hasher.epoch, "hyperparameters": resolved_hyperparameters(hasher),
                "batch_size": hasher.training["batch_size"], **score(scorers, hasher.encode, bits),
                **code_shape(hasher, split.database_x), **timing}

    for data, seed in itertools.product(args.data, args.seeds):
        keys = [(data, bits, seed, name) for bits in args.bits for name in run_names]
        if log and all(log.get(key) is not None for key in keys):
            results += [log.get(key) for key in keys]
            print(f"{data} seed {seed}: every run finished by an earlier invocation", flush=True)
            continue
        split = load_split(data, seed, args.train_size)
        print(split, flush=True)
        scorers = {"validation": evaluation.SplitScorer(split.validation(), protocol),
                   "test": evaluation.SplitScorer(split, protocol)}
        labels = None if args.labelled_per_class is None else split.partial_labels(args.labelled_per_class, seed)
        for key in keys:
            run = log.get(key) if log else None
            if run is None:
                run = train(key, split, labels, scorers)
                if log:
                    log.add(key, run)
            shape = (f"; binary outputs {run['saturation']:.4f}, bit frequencies [{run['bit_freq_min']:.2f}, "
                     f"{run['bit_freq_max']:.2f}]" if "saturation" in run else "")
            print(f"  {data} {key[1]} bits seed {seed} {run['method']}: validation {run['validation']:.4f}, test "
                  f"{run['test']:.4f} ({run['train_seconds']:.0f} s){shape}", flush=True)
            results.append(run)

    print(f"\n{protocol} mAP, mean ± sample std over seeds {args.seeds}; settings ranked on validation queries only")
    rows = _summary_rows(results, args.data, args.bits, [label for label, _, _ in runs])
    print(evaluation.markdown_table(rows, list(rows[0])))
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
