"""BGAN's neighbourhood graph (Alg. 1): build time and peak memory for many items.

    python -m benchmarks.graph [--items 100000] [--dim 784] [--k1 20] [--k2 30] [--backend auto]
    python -m benchmarks.graph --data mnist10k      # real images: also the same-class fraction of the lists
    python -m benchmarks.graph --data cifar6k --features pca --results benchmarks/results.jsonl

``--features``: what the lists rank on (BGAN's ``graph_features``). Random data: ``--items`` vectors in [0, 1]
drawn around 100 random centres; peak memory is the process's ``ru_maxrss``. On real data it also measures the
same-class share of the lists, which REPRODUCTION.md's BGAN section shows. Ends with one JSON line.
"""

import argparse
import os
import time

import numpy as np

from benchmarks import _common
from tfhash import datasets, evaluation, neighbours
from tfhash.schemes.bgan import GRAPH_FEATURE_KINDS


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=784)
    parser.add_argument("--data", default=None, choices=["mnist10k", "fashion10k", "cifar6k"])
    parser.add_argument("--k1", type=int, default=20)
    parser.add_argument("--k2", type=int, default=30)
    parser.add_argument("--backend", default="auto", choices=["auto", "faiss", "numpy"])
    parser.add_argument("--features", default="pixels", choices=GRAPH_FEATURE_KINDS,
                        help="what the lists rank on: the items themselves or their first 128 principal components")
    parser.add_argument("--results", default=None, help="also append the JSON line to this results file")
    args = parser.parse_args(argv)
    if args.results and not os.path.isdir(os.path.dirname(os.path.abspath(args.results))):
        parser.error(f"--results must be a file in an existing directory, got {args.results!r}")
    started = time.perf_counter()

    labels = None
    if args.data:
        x, y = _common.load_real(args.data)
        split = datasets.make_split(x, y, queries_per_class=100, seed=0)
        x, labels = split.train_x.reshape(len(split.train_x), -1), split.train_y
    else:
        rng = np.random.default_rng(0)
        centres = rng.random((100, args.dim), dtype=np.float32)
        x = np.clip(centres[rng.integers(0, 100, args.items)]
                    + 0.15 * rng.standard_normal((args.items, args.dim), dtype=np.float32), 0, 1)
    if args.features == "pca":
        x = neighbours.pca_features(x, seed=0).astype(np.float32)
    before = _common.peak_rss_mb()
    start = time.perf_counter()
    graph = neighbours.neighbourhood_graph(x, args.k1, args.k2, backend=args.backend, progress=True)
    seconds = time.perf_counter() - start
    peak = _common.peak_rss_mb()
    row = {"data": args.data or "random", "features": args.features, "items": x.shape[0], "dim": x.shape[1],
           "k1": args.k1, "k2": args.k2, "backend": args.backend,
           "seconds": round(seconds, 1), "peak_rss_mb": round(peak, 0), "peak_before_mb": round(before, 0),
           "input_mb": round(x.nbytes / 2**20, 0), "mean_list": round(graph.mean_degree(), 1),
           "graph_mb": round((graph.indices.nbytes + graph.indptr.nbytes) / 2**20, 1)}
    if labels is not None:
        first = graph.first_lists
        row["same_class_k1"] = round(float(np.mean(labels[:, None] == labels[first])), 3)
        row["same_class_expanded"] = round(graph.same_label_fraction(labels), 3)
    print(evaluation.markdown_table([row], list(row)))
    record = {"benchmark": "graph", **row, "machine": _common.machine()}
    if args.results:
        _common.append_result(args.results, record, time.perf_counter() - started)
    print(evaluation.json_line(record))
    return record


if __name__ == "__main__":
    main()
