"""Retrieval quality of a scheme against ITQ, in one run, with the HashGAN protocol.

    python benchmarks/retrieval.py --scheme hashgan --data mnist10k --bits 32
    python benchmarks/retrieval.py --scheme hashgan --data mnist10k --bits 16 32 64
    python benchmarks/retrieval.py --scheme hashgan --data mnist10k --bits 32 --ablation
    python benchmarks/retrieval.py --scheme hashgan --data mnist10k --bits 32 --preset vat

Data: mnist10k (../shared/data/mnist-10k; 100 queries per class, seed 0, training on the 9,000-image
database) or digits (10 queries per class). Per code length: mAP, mAP@1000, precision@1000, k-means
ACC/NMI on database codes, min/max bit frequency on the database, training seconds; ITQ on the same
split. ``--ablation`` also trains with one loss term removed at a time (HashGAN Fig. 5).
``--set key=value`` overrides a scheme hyperparameter. Ends with one JSON line.
"""

import argparse
import ast
import os
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _common  # noqa: E402
import tfhash  # noqa: E402
from tfhash import baselines, codes, datasets, evaluation, metrics  # noqa: E402

# HashGAN Fig. 5: one term removed at a time; the adversarial loss goes with feature matching and L2.
ABLATIONS = {
    "hashgan": {
        "-independence": {"weight_independence": 0.0},
        "-collaborative (L2)": {"weight_collaborative": 0.0},
        "-consistency": {"weight_consistency": 0.0},
        "-uniform frequency": {"weight_frequency": 0.0},
        "-entropy": {"weight_entropy": 0.0},
        "-adversarial -feature -L2": {"weight_adversarial": 0.0, "weight_feature_matching": 0.0,
                                      "weight_collaborative": 0.0},
    },
}


def parse_sets(pairs):
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def code_row(name, bits, split, query_codes, database_codes, seconds):
    row = {"method": name, "bits": bits}
    row.update(evaluation.evaluate_codes(query_codes, database_codes, split.query_y, split.database_y, bits=bits))
    row.update({f"kmeans_{k}": v for k, v in metrics.kmeans_scores(database_codes, split.database_y, bits=bits).items()})
    frequencies = codes.unpack(database_codes, bits).mean(axis=0)
    row.update({"bit_freq_min": float(frequencies.min()), "bit_freq_max": float(frequencies.max()),
                "train_seconds": seconds})
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheme", default="hashgan")
    parser.add_argument("--data", default="mnist10k", choices=["mnist10k", "digits"])
    parser.add_argument("--bits", type=int, nargs="+", default=[32])
    parser.add_argument("--epochs", type=int, default=None, help="default: 30")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--preset", default=None, help="a named hyperparameter set of the scheme (e.g. vat)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = {}
    if args.preset:
        import importlib

        presets = getattr(importlib.import_module(f"tfhash.schemes.{args.scheme}"), "PRESETS", {})
        if args.preset not in presets:
            raise SystemExit(f"--preset must be one of {sorted(presets)} for {args.scheme}, got {args.preset!r}")
        overrides.update(presets[args.preset])
    overrides.update(parse_sets(args.set))

    if args.data == "mnist10k":
        x, y = _common.load_mnist10k()
        split = datasets.make_split(x, y, queries_per_class=100, seed=args.seed, name="mnist10k")
    else:
        split = datasets.load("digits", queries_per_class=10, seed=args.seed)
    epochs = args.epochs or 30
    print(split, flush=True)

    rows = []
    runs = [("", {})]
    if args.ablation:
        runs += list(ABLATIONS.get(args.scheme, {}).items())
    for bits in args.bits:
        start = time.perf_counter()
        itq = baselines.ITQ(bits=bits, seed=args.seed).fit(split.train_x)
        itq_row = code_row("itq", bits, split, itq.encode(split.query_x), itq.encode(split.database_x),
                           time.perf_counter() - start)
        rows.append(itq_row)
        print(f"itq {bits} bits: mAP {itq_row['mAP']:.4f}", flush=True)
        for label, ablation in runs:
            start = time.perf_counter()
            hasher = tfhash.fit(args.scheme, split, bits=bits, epochs=epochs, batch_size=args.batch_size,
                                seed=args.seed, verbose=2, **{**overrides, **ablation})
            seconds = time.perf_counter() - start
            rows.append(code_row(args.scheme + label, bits, split, hasher.encode(split.query_x),
                                 hasher.encode(split.database_x), seconds))
            print(f"{args.scheme}{label} {bits} bits: mAP {rows[-1]['mAP']:.4f} "
                  f"(ITQ x{rows[-1]['mAP'] / itq_row['mAP']:.2f}), "
                  f"{seconds:.0f} s", flush=True)

    columns = ["method", "bits", "mAP", "mAP@1000", "precision@1000", "kmeans_acc", "kmeans_nmi",
               "bit_freq_min", "bit_freq_max", "train_seconds"]
    print()
    print(evaluation.markdown_table(rows, columns))
    print(evaluation.json_line({"benchmark": "retrieval", "scheme": args.scheme, "data": args.data,
                                "epochs": epochs, "batch_size": args.batch_size, "seed": args.seed,
                                "preset": args.preset,
                                "overrides": overrides, "rows": rows, "machine": _common.machine()}))


if __name__ == "__main__":
    main()
