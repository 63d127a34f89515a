"""Evaluation speed: mAP for 1,000 queries against 1,000,000 random 64-bit packed codes.

    python -m benchmarks.eval_speed [--queries 1000] [--database 1000000] [--bits 64] [--naive-queries N]

What it measures and how: BENCHMARKS.md, section (b). Ends with one JSON line.
"""

import time
import tracemalloc

import numpy as np

from benchmarks import _common, report
from tfhash import codes, metrics


def naive_average_precisions(query_codes, database_codes, query_labels, database_labels):
    """The textbook loop: full distance row, stable argsort, cumulative precision at relevant ranks."""
    database_bits = codes.as_words(database_codes)
    query_bits = codes.as_words(query_codes)
    aps = np.zeros(query_codes.shape[0])
    for i in range(query_codes.shape[0]):
        distances = np.bitwise_count(database_bits ^ query_bits[i]).sum(axis=1).astype(np.int64)
        order = np.argsort(distances, kind="stable")
        relevant = database_labels[order] == query_labels[i]
        hits = np.cumsum(relevant)
        ranks = np.arange(1, relevant.shape[0] + 1)
        if hits[-1]:
            aps[i] = np.sum((hits / ranks)[relevant]) / hits[-1]
    return aps


def main():
    started = time.perf_counter()
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--database", type=int, default=1_000_000)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--naive-queries", type=int, default=None,
                        help="queries given to the naive implementation (default: all)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    width = (args.bits + 7) // 8
    database = rng.integers(0, 256, (args.database, width), dtype=np.uint8)
    queries = rng.integers(0, 256, (args.queries, width), dtype=np.uint8)
    database_labels = rng.integers(0, args.classes, args.database)
    query_labels = rng.integers(0, args.classes, args.queries)

    tracemalloc.start()
    start = time.perf_counter()
    ours = metrics.average_precision(queries, database, query_labels, database_labels)
    ours_seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"tfhash mAP {ours.mean():.12f} in {ours_seconds:.2f} s, peak extra memory {peak / 2**20:.1f} MiB",
          flush=True)

    naive_n = args.naive_queries or args.queries
    start = time.perf_counter()
    naive = naive_average_precisions(queries[:naive_n], database, query_labels[:naive_n], database_labels)
    naive_seconds = time.perf_counter() - start
    naive_full = naive_seconds * args.queries / naive_n
    difference = float(np.max(np.abs(naive - ours[:naive_n])))
    map_difference = abs(float(naive.mean()) - float(ours[:naive_n].mean()))
    print(f"naive mAP over {naive_n} queries {naive.mean():.12f} in {naive_seconds:.2f} s", flush=True)

    rows = [
        {"implementation": "`tfhash.metrics.mean_average_precision`", "queries": args.queries,
         "seconds": ours_seconds, "mAP": float(ours.mean()), "peak_extra_MiB": peak / 2**20},
        {"implementation": "naive per-query `np.argsort`", "queries": naive_n, "seconds": naive_seconds,
         "mAP": float(naive.mean())},
    ]
    report.finish({
        "benchmark": "eval_speed", "queries": args.queries, "database": args.database, "bits": args.bits,
        "ours_seconds": ours_seconds, "ours_map": float(ours.mean()), "ours_peak_extra_mib": peak / 2**20,
        "naive_queries": naive_n, "naive_seconds": naive_seconds, "naive_map": float(naive.mean()),
        "speedup": naive_full / ours_seconds, "max_ap_difference": difference,
        "map_difference": map_difference, "rows": rows, "machine": _common.machine(),
    }, args.results, started)


if __name__ == "__main__":
    main()
