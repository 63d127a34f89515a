"""BGAN's neighbourhood graph (Alg. 1): build time and peak memory for many items.

    python -m benchmarks.graph [--items 100000] [--dim 784] [--k1 20] [--k2 30] [--backend auto]
    python -m benchmarks.graph --data mnist10k      # real images: also the same-class fraction of the lists

Random data: ``--items`` float32 vectors in [0, 1] (784-d by default, the size of MNIST images), drawn
around 100 random centres so neighbour lists are not arbitrary. Peak memory is the process's maximum
resident set (``ru_maxrss``), measured before and after, with the input array alone noted. Ends with one
JSON line.
"""

import argparse
import time

import numpy as np

from benchmarks import _common
from tfhash import datasets, evaluation, neighbours


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=784)
    parser.add_argument("--data", default=None, choices=["mnist10k", "fashion10k", "cifar6k"])
    parser.add_argument("--k1", type=int, default=20)
    parser.add_argument("--k2", type=int, default=30)
    parser.add_argument("--backend", default="auto", choices=["auto", "faiss", "numpy"])
    args = parser.parse_args()

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
    before = _common.peak_rss_mb()
    start = time.perf_counter()
    graph = neighbours.neighbourhood_graph(x, args.k1, args.k2, backend=args.backend, progress=True)
    seconds = time.perf_counter() - start
    peak = _common.peak_rss_mb()
    row = {"items": x.shape[0], "dim": x.shape[1], "k1": args.k1, "k2": args.k2, "backend": args.backend,
           "seconds": round(seconds, 1), "peak_rss_mb": round(peak, 0), "peak_before_mb": round(before, 0),
           "input_mb": round(x.nbytes / 2**20, 0), "mean_list": round(graph.mean_degree(), 1),
           "graph_mb": round((graph.indices.nbytes + graph.indptr.nbytes) / 2**20, 1)}
    if labels is not None:
        first = graph.first_lists
        row["same_class_k1"] = round(float(np.mean(labels[:, None] == labels[first])), 3)
        row["same_class_expanded"] = round(graph.same_label_fraction(labels), 3)
    print(evaluation.markdown_table([row], list(row)))
    print(evaluation.json_line({"benchmark": "graph", **row, "machine": _common.machine()}))


if __name__ == "__main__":
    main()
