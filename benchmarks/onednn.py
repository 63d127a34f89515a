"""Training speed with and without TensorFlow's oneDNN kernels, measured side by side.

    python -m benchmarks.onednn [--schemes bgan hashgan dshgan] [--preset paper] [--shapes 28x28x1 32x32x3]
                                [--items 512] [--repeats 2]

What it measures and how: BENCHMARKS.md, section (q). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from benchmarks import _common, report

SETTINGS = ("0", "1")


def _epoch_seconds(scheme, preset, shape, items):
    """Seconds of the second of two epochs of ``scheme``'s ``preset`` on random items of ``shape``."""
    import keras

    import tfhash
    from benchmarks.train_step import _labels
    from tfhash import schemes

    scheme_cls = schemes.get(scheme)
    if scheme_cls.input_kind == "features":
        shape = (int(np.prod(shape)),)
    x = np.random.default_rng(0).random((items, *shape), dtype=np.float32)
    epochs = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epochs.append(time.perf_counter() - self.start)

    tfhash.fit(scheme, x, _labels(scheme_cls, items), preset=None if preset == "default" else preset,
               epochs=2, verbose=0, callbacks=[EpochTimer()])
    return epochs[-1]


def _child(args):
    figures = {f"{scheme} {'x'.join(map(str, shape))}": _epoch_seconds(scheme, args.preset, shape, args.items)
               for scheme in args.schemes for shape in args.shapes}
    print(json.dumps({"onednn": _common.onednn(), "seconds": figures}))


def _shape(text):
    try:
        return tuple(int(side) for side in text.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape such as 32x32x3, got {text!r}") from None


def main(argv=None):
    started = time.perf_counter()
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--schemes", nargs="+", default=["bgan", "hashgan", "dshgan"])
    parser.add_argument("--preset", default="paper",
                        help="the preset every scheme trains with; \"default\": each scheme's default preset")
    parser.add_argument("--shapes", nargs="+", type=_shape, default=[(28, 28, 1), (32, 32, 3)],
                        help="item shapes, e.g. 28x28x1 (MNIST) and 32x32x3 (CIFAR-10)")
    parser.add_argument("--items", type=int, default=512, help="items per epoch")
    parser.add_argument("--repeats", type=int, default=2, help="child processes per setting")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.items < 1 or args.repeats < 1:
        parser.error(f"--items and --repeats must be at least 1, got {args.items} and {args.repeats}")
    if args.child:
        return _child(args)

    best, states = {}, {}
    child = [sys.executable, "-m", "benchmarks.onednn", "--child", *(sys.argv[1:] if argv is None else argv)]
    for repeat in range(args.repeats):
        for setting in SETTINGS:
            result = subprocess.run(child, capture_output=True, text=True, cwd=_common.ROOT,
                                    env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS=setting))
            if result.returncode:
                raise SystemExit(f"the child with TF_ENABLE_ONEDNN_OPTS={setting} failed:\n{result.stderr[-3000:]}")
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            states[setting] = figures["onednn"]
            for name, seconds in figures["seconds"].items():
                best[name, setting] = min(seconds, best.get((name, setting), float("inf")))
            print(f"repeat {repeat + 1}/{args.repeats}, TF_ENABLE_ONEDNN_OPTS={setting}: "
                  + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in figures["seconds"].items()), flush=True)

    # The parent never loads TensorFlow, so its machine record claims no oneDNN state: the children's is kept.
    rows = [{"setting": name, "off_seconds": best[name, "0"], "on_seconds": best[name, "1"],
             "speedup": best[name, "0"] / best[name, "1"]} for name in dict.fromkeys(name for name, _ in best)]
    print(f"oneDNN reported on: off {states['0']}, on {states['1']}")
    report.finish({"benchmark": "onednn", "preset": args.preset, "items": args.items, "repeats": args.repeats,
                   "onednn_reported": states, "rows": rows, "machine": _common.machine()}, args.results, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
