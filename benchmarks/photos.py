"""Photos: each image scheme's network at 64x64 and 224x224 pixels, with its default network and a named backbone;
then training from folders of JPEGs, memory against the decoded images'.

    python -m benchmarks.photos [--schemes hashgan bgan dshgan cibhash greedyhash] [--backbone mobilenet_v3_small]
        [--folders 2000 6000]

What it measures and how: BENCHMARKS.md, section (r). Ends with one JSON line.
"""

import json
import os
import subprocess
import sys
import tempfile
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


def _write_folder(folder, count, seed=0):
    """``count`` 224x224 JPEGs in four sub-folders: smooth random images (blocks of colour), as photos compress."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(count):
        blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        os.makedirs(os.path.join(folder, f"class{i % 4}"), exist_ok=True)
        Image.fromarray(np.repeat(np.repeat(blocks, 28, 0), 28, 1)).save(os.path.join(folder, f"class{i % 4}",
                                                                                      f"{i:06d}.jpg"))


def _child_fit(folder, work):
    """In a fresh process: GreedyHash fitted on the folder, its export, and an index of the folder built with it."""
    before, start = _common.rss_mb(), time.perf_counter()
    hasher = tfhash.fit("greedyhash", folder, bits=32, epochs=1, seed=0, verbose=0)
    seconds, peak = time.perf_counter() - start, _common.high_water_mb()
    built = tfhash.build(tfhash.load(hasher.export(os.path.join(work, "export"))), folder,
                         os.path.join(work, "index"), progress=False)
    names = sorted(os.path.relpath(os.path.join(root, f), folder) for root, _, files in os.walk(folder) for f in files)
    print(json.dumps({"rss_before_mb": before, "peak_rss_mb": peak, "fit_seconds": seconds,
                      "names_round_trip": sorted(built.names(np.arange(len(built)))) == names}))


def _folder_rows(sizes):
    rows = []
    for count in sizes:
        with tempfile.TemporaryDirectory() as work:
            folder = os.path.join(work, "photos")
            _write_folder(folder, count)
            result = subprocess.run([sys.executable, "-m", "benchmarks.photos", "--child-fit", folder, work],
                                    capture_output=True, text=True, cwd=_common.ROOT)
            if result.returncode:
                raise SystemExit(f"the folder fit failed: {result.stderr[-3000:]}")
            figures = json.loads(result.stdout.strip().splitlines()[-1])
        decoded = count * 224 * 224 * 3 / 2**20
        rows.append({"items": count, "decoded_uint8_mb": decoded, "decoded_float32_mb": 4 * decoded, **figures,
                     "growth_mb": figures["peak_rss_mb"] - figures["rss_before_mb"]})
        print(rows[-1], flush=True)
    return rows


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child-fit"]:
        return _child_fit(argv[1], argv[2])
    started = time.perf_counter()
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--schemes", nargs="*", default=list(IMAGE_SCHEMES), choices=IMAGE_SCHEMES)
    parser.add_argument("--backbone", default="mobilenet_v3_small")
    parser.add_argument("--items", type=int, default=128, help="random 224x224 photos trained on, two epochs")
    parser.add_argument("--folders", type=int, nargs="*", default=[2000, 6000], help="JPEG folders to fit on")
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
    report.finish({"benchmark": "photos", "items": args.items, "rows": rows, "folders": _folder_rows(args.folders),
                   "machine": _common.machine()}, args.results, started)


if __name__ == "__main__":
    main()
