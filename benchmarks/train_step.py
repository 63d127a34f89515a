"""Training-step time of every scheme, plain and compiled by XLA, inside ``Model.fit`` and in a bare loop.

    python -m benchmarks.train_step [--schemes hashgan bgan] [--items 2000] [--batch-size 100] [--steps 60]
        [--repeats 3]

What it measures and how: BENCHMARKS.md, section (n). Ends with one JSON line.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

import tfhash
from benchmarks import _common, report
from tfhash import schemes, training


def _labels(scheme_cls, count, seed=0):
    if not scheme_cls.needs_labels:
        return None
    return np.random.default_rng(seed).integers(0, 10, count)


def _batches(hasher, x, y, batch_size, steps):
    """``steps`` training batches as ``tfhash.fit`` builds them, materialised so input work is not timed."""
    data = training._prepare_data(x, y, type(hasher.model))
    dataset = training._epoch_batches(data, type(hasher.model), batch_size, seed=1, first_epoch=0, epochs=10**6)
    return list(dataset.take(steps))


def _fit_step_ms(model, batches, callbacks, repeats):
    """``Model.fit``'s time per step: one epoch over all ``batches`` minus one over the first ``short``, so the
    fixed cost of a ``fit`` call (iterator, callbacks, any retracing) cancels out; each the fastest of
    ``repeats`` calls (the other processes of a shared machine only ever add time)."""
    dataset = tf.data.Dataset.from_tensor_slices(_stack(batches))  # each element one of the batches, as built

    def seconds(data):
        start = time.perf_counter()
        model.fit(data, epochs=1, verbose=0, callbacks=callbacks, shuffle=False)
        return time.perf_counter() - start

    short = max(1, min(5, len(batches) // 2))
    seconds(dataset)  # warm-up: traces and compiles every shape of call the timed runs make
    fixed_and_short = min(seconds(dataset.take(short)) for _ in range(repeats))
    return 1000 * (min(seconds(dataset) for _ in range(repeats)) - fixed_and_short) / (len(batches) - short)


def _stack(batches):
    return {key: tf.stack([b[key] for b in batches]) for key in batches[0]}


def _bare_step_ms(model, batches, jit_compile, repeats):
    """Wall time of the same steps in a bare ``tf.function`` loop, per step (one wait, at the end; the fastest
    of ``repeats`` loops)."""
    step = tf.function(model.train_step, jit_compile=jit_compile)
    step(batches[0])  # trace and compile

    def seconds():
        start = time.perf_counter()
        for batch in batches:
            logs = step(batch)
        float(next(iter(logs.values())))
        return time.perf_counter() - start

    return 1000 * min(seconds() for _ in range(repeats)) / len(batches)


def main(argv=None):
    started = time.perf_counter()
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--schemes", nargs="+", default=schemes.names(), choices=schemes.names())
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3, help="each time is the fastest of this many runs")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error(f"--steps must be at least 2, got {args.steps}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")

    x = np.random.default_rng(0).random((args.items, 28, 28, 1)).astype(np.float32)
    rows = []
    for name in args.schemes:
        scheme_cls = schemes.get(name)
        y = _labels(scheme_cls, len(x))
        row = {"scheme": name}
        for jit in (False, True):
            hasher = tfhash.fit(name, x, y, bits=32, epochs=1, batch_size=args.batch_size, seed=0, verbose=0,
                                jit_compile=jit)
            model = hasher.model
            mode = "xla" if jit else "plain"
            if jit and not model.jit_compile:
                continue  # the scheme declares it cannot compile; Keras trained it plainly
            batches = _batches(hasher, x, y, args.batch_size, args.steps)
            callbacks = [training._NonFiniteLossGuard(), *model.training_callbacks()]
            fit, bare = _fit_step_ms(model, batches, callbacks, args.repeats), _bare_step_ms(model, batches, jit,
                                                                                            args.repeats)
            # tfhash.fit(steps_per_execution=10): the same compiled model, ten steps per call.
            model.steps_per_execution, model.train_function = 10, None
            row.update({f"{mode}_fit_ms": fit, f"{mode}_bare_ms": bare, f"{mode}_fit_over_bare": fit / bare,
                        f"{mode}_fit10_over_bare": _fit_step_ms(model, batches, callbacks, args.repeats) / bare,
                        f"{mode}_images_per_s": 1000 * args.batch_size / fit})
        if "xla_fit_ms" in row:
            row["xla_speedup"] = row["plain_fit_ms"] / row["xla_fit_ms"]
        rows.append(row)
        print(row, flush=True)
    report.finish({"benchmark": "train_step", "items": args.items, "batch_size": args.batch_size,
                   "steps": args.steps, "repeats": args.repeats, "rows": rows, "machine": _common.machine()},
                  args.results, started)


if __name__ == "__main__":
    main()
