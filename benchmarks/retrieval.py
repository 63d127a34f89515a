"""Retrieval quality of a scheme against shallow baselines, in one run.

    python benchmarks/retrieval.py --scheme hashgan --data mnist10k --bits 16 32 64
    python benchmarks/retrieval.py --scheme hashgan --data mnist10k --bits 32 --ablation
    python benchmarks/retrieval.py --scheme hashgan --data mnist10k --bits 32 --preset vat
    python benchmarks/retrieval.py --scheme sigah --data mnist10k --bits 32 64 --ablation
    python benchmarks/retrieval.py --scheme sigah --data gmm100k --bits 32 64 --ablation

Data: mnist10k (../shared/data/mnist-10k; 100 queries per class, seed 0, training on the 9,000-image
database), digits (10 queries per class), or gmm100k (100,000 synthetic 256-d points from a Gaussian
mixture, ``tfhash.datasets.make_gaussian_mixture``; 1,000 random queries, the rest is database and
training set).

Protocols (``--protocol``, default: labels for image schemes, both for sigah on mnist10k, euclidean on
gmm100k): **labels** (HashGAN: same class is relevant): mAP, mAP@1000, precision@1000, k-means ACC/NMI;
**euclidean** (SiGAH Sec. 5: the top-1,000 database items by Euclidean distance are relevant): mAP,
precision@100, and recall@{1,10,100,1000} of the true nearest neighbour. Also min/max bit frequency on the database and training seconds.
Baselines (``--baselines``, default ITQ; LSH, ITQ and SpH for sigah) are fitted on the same training
set. ``--ablation`` also trains with terms removed (HashGAN Fig. 5; SiGAH Table 4: no discriminator).
``--set key=value`` overrides a scheme hyperparameter. Ends with one JSON line.
"""

import argparse
import os
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _common  # noqa: E402
import tfhash  # noqa: E402
from tfhash import baselines, codes, datasets, evaluation, metrics, schemes  # noqa: E402
from trainers.config import parse_set_flags  # noqa: E402

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
    # SiGAH Table 4: the discriminator deleted (an auto-encoder model).
    "sigah": {"-discriminator": {"weight_adversarial": 0.0}},
}
DEFAULT_BATCH = {"sigah": 500}  # SiGAH Sec. 4: N_B = 500
DEFAULT_EPOCHS = {"sigah": 10}


def code_row(name, bits, split, query_codes, database_codes, seconds, protocol, ground_truth):
    row = {"method": name, "bits": bits}
    if protocol in ("labels", "both"):
        row.update(evaluation.evaluate_codes(query_codes, database_codes, split.query_y, split.database_y, bits=bits))
        row.update({f"kmeans_{k}": v for k, v in
                    metrics.kmeans_scores(database_codes, split.database_y, bits=bits).items()})
    if protocol in ("euclidean", "both"):
        row["ann_mAP"] = metrics.ann_mean_average_precision(query_codes, database_codes, ground_truth)
        row["ann_precision@100"] = metrics.ann_precision_at_k(query_codes, database_codes, ground_truth, 100)
        # Recall@R as in the ANN literature: the fraction of queries whose true nearest neighbour is
        # among the first R items of the Hamming ranking.
        for k in (1, 10, 100, 1000):
            row[f"nn_recall@{k}"] = metrics.ann_recall_at_k(query_codes, database_codes, ground_truth[:, :1], k)
    frequencies = codes.unpack(database_codes, bits).mean(axis=0)
    row.update({"bit_freq_min": float(frequencies.min()), "bit_freq_max": float(frequencies.max()),
                "train_seconds": seconds})
    return row


def load_split(data, seed):
    if data == "mnist10k":
        x, y = _common.load_mnist10k()
        return datasets.make_split(x, y, queries_per_class=100, seed=seed, name="mnist10k")
    if data == "gmm100k":
        x, y = datasets.make_gaussian_mixture(100_000, 256, seed=seed)
        return datasets.make_split(x, y, num_queries=1000, seed=seed, name="gmm100k")
    return datasets.load("digits", queries_per_class=10, seed=seed)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheme", default="hashgan")
    parser.add_argument("--data", default="mnist10k", choices=["mnist10k", "digits", "gmm100k"])
    parser.add_argument("--protocol", default=None, choices=["labels", "euclidean", "both"])
    parser.add_argument("--baselines", nargs="+", default=None)
    parser.add_argument("--bits", type=int, nargs="+", default=[32])
    parser.add_argument("--epochs", type=int, default=None, help="default: 30")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 100 (sigah: 500)")
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
    overrides.update(parse_set_flags(args.set, schemes.get(args.scheme)))

    protocol = args.protocol or ("labels" if args.scheme != "sigah" else
                                 "euclidean" if args.data == "gmm100k" else "both")
    names = args.baselines or (["lsh", "itq", "sph"] if args.scheme == "sigah" else ["itq"])
    batch_size = args.batch_size or DEFAULT_BATCH.get(args.scheme, 100)
    split = load_split(args.data, args.seed)
    epochs = args.epochs or DEFAULT_EPOCHS.get(args.scheme, 30)
    print(split, flush=True)
    ground_truth = None
    if protocol in ("euclidean", "both"):
        start = time.perf_counter()
        ground_truth = metrics.euclidean_ground_truth(split.query_x.reshape(len(split.query_x), -1),
                                                      split.database_x.reshape(len(split.database_x), -1), 1000)
        print(f"Euclidean ground truth (top 1,000): {time.perf_counter() - start:.1f} s", flush=True)
    key = "ann_mAP" if protocol == "euclidean" else "mAP"

    rows = []
    runs = [("", {})]
    if args.ablation:
        runs += list(ABLATIONS.get(args.scheme, {}).items())
    for bits in args.bits:
        reference = None
        for name in names:
            start = time.perf_counter()
            method = baselines.get(name)(bits=bits, seed=args.seed).fit(split.train_x)
            rows.append(code_row(name, bits, split, method.encode(split.query_x), method.encode(split.database_x),
                                 time.perf_counter() - start, protocol, ground_truth))
            print(f"{name} {bits} bits: {key} {rows[-1][key]:.4f}", flush=True)
            if name == "itq":
                reference = rows[-1]
        for label, ablation in runs:
            start = time.perf_counter()
            hasher = tfhash.fit(args.scheme, split, bits=bits, epochs=epochs, batch_size=batch_size,
                                seed=args.seed, verbose=2, **{**overrides, **ablation})
            seconds = time.perf_counter() - start
            rows.append(code_row(args.scheme + label, bits, split, hasher.encode(split.query_x),
                                 hasher.encode(split.database_x), seconds, protocol, ground_truth))
            versus = f" (ITQ x{rows[-1][key] / reference[key]:.3f})" if reference else ""
            print(f"{args.scheme}{label} {bits} bits: {key} {rows[-1][key]:.4f}{versus}, {seconds:.0f} s", flush=True)

    columns = ["method", "bits"]
    if protocol in ("euclidean", "both"):
        columns += ["ann_mAP", "ann_precision@100", "nn_recall@1", "nn_recall@10", "nn_recall@100",
                    "nn_recall@1000"]
    if protocol in ("labels", "both"):
        columns += ["mAP", "mAP@1000", "precision@1000", "kmeans_acc", "kmeans_nmi"]
    columns += ["bit_freq_min", "bit_freq_max", "train_seconds"]
    print()
    print(evaluation.markdown_table(rows, columns))
    print(evaluation.json_line({"benchmark": "retrieval", "scheme": args.scheme, "data": args.data,
                                "epochs": epochs, "batch_size": batch_size, "seed": args.seed, "protocol": protocol,
                                "preset": args.preset,
                                "overrides": overrides, "rows": rows, "machine": _common.machine()}))


if __name__ == "__main__":
    main()
