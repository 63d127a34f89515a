"""Shallow baselines on mnist-10k with the label protocol of the image hashing papers.

    python -m benchmarks.baselines [--bits 16 32 64] [--methods lsh pcah itq sph sh]

What it measures and how: REPRODUCTION.md's appendix, section (a). Ends with one JSON line.
"""

import argparse
import time

from benchmarks import _common
from tfhash import baselines, datasets, evaluation


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--methods", nargs="+", default=list(baselines.BASELINES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    x, y = _common.load_mnist10k()
    split = datasets.make_split(x, y, queries_per_class=100, seed=args.seed, name="mnist10k")
    print(split, flush=True)
    rows = []
    start = time.perf_counter()
    for bits in args.bits:
        rows += evaluation.compare_baselines(split, bits, names=args.methods, seed=args.seed)
    columns = ["method", "bits", "mAP", "mAP@1000", "precision@1000", "precision@r2", "empty_balls@r2", "seconds"]
    print()
    print(evaluation.markdown_table(rows, columns))
    print(evaluation.json_line({"benchmark": "baselines", "data": "mnist10k", "seed": args.seed,
                                "rows": rows, "seconds": time.perf_counter() - start,
                                "machine": _common.machine()}))


if __name__ == "__main__":
    main()
