"""Photos: each image scheme's network at 64x64 and 224x224 pixels, with its default network and a named backbone.

    python -m benchmarks.photos [--schemes hashgan bgan dshgan cibhash greedyhash] [--backbone mobilenet_v3_small]

What it measures and how: BENCHMARKS.md, section (r). Ends with one JSON line.
"""

import time

import keras
import numpy as np

import tfhash
from benchmarks import _common, report
from tfhash import schemes

IMAGE_SCHEMES = ("hashgan", "bgan", "dshgan", "cibhash", "greedyhash")


def _parameters(scheme_cls, side, options):
    model = scheme_cls(bits=32, input_shape=(side, side, 3), **options)
    return model.count_params()


def main(argv=None):
    started = time.perf_counter()
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--schemes", nargs="+", default=list(IMAGE_SCHEMES), choices=IMAGE_SCHEMES)
    parser.add_argument("--backbone", default="mobilenet_v3_small")
    parser.add_argument("--items", type=int, default=128, help="random 224x224 photos trained on, two epochs")
    args = parser.parse_args(argv)
    photos = np.random.default_rng(0).integers(0, 256, (args.items, 224, 224, 3), dtype=np.uint8)
    rows = []
    for name in args.schemes:
        scheme_cls = schemes.get(name)
        labels = np.arange(args.items) % 4 if scheme_cls.needs_labels else None
        for network in ("default", args.backbone):
            options = {} if network == "default" else {"backbone": network}
            built = {**options, **({"num_classes": 4, "use_generator": False} if labels is not None else {})}
            epochs = []
            def stamp(*_, epochs=epochs):
                epochs.append(time.perf_counter())

            timer = keras.callbacks.LambdaCallback(on_epoch_begin=stamp, on_epoch_end=stamp)
            start = time.perf_counter()
            tfhash.fit(name, photos, labels, bits=32, epochs=2, batch_size=32, seed=0, verbose=0,
                       callbacks=[timer], **options)
            at_64, at_224 = _parameters(scheme_cls, 64, built), _parameters(scheme_cls, 224, built)
            rows.append({"scheme": name, "network": network, "parameters_64": at_64, "parameters_224": at_224,
                         "ratio": at_224 / at_64, "fit_seconds": time.perf_counter() - start,
                         "step_ms": 1000 * (epochs[3] - epochs[2]) / (args.items // 32)})
            print(rows[-1], flush=True)
    report.finish({"benchmark": "photos", "items": args.items, "rows": rows, "machine": _common.machine()},
                  args.results, started)


if __name__ == "__main__":
    main()
