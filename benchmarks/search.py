"""Search speed: 1,000 queries, top-100, over 1,000,000 random 64-bit packed codes.

    python -m benchmarks.search [--queries 1000] [--database 1000000] [--bits 64] [--k 100]

tfhash's exact ``HammingIndex`` against Faiss ``IndexBinaryFlat`` in the same run (both exact, ties by
database index). Reports queries/s (best of --repeats runs), whether the top-k ids are identical, and
the approximate Faiss backends' recall@k against the exact answer. Ends with one JSON line.
"""

import argparse
import time

import numpy as np

from benchmarks import _common
from tfhash import evaluation, index


def timed_search(idx, queries, k, repeats):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = idx.search(queries, k)
        best = min(best, time.perf_counter() - start)
    return best, result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--database", type=int, default=1_000_000)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        import faiss
    except ImportError:
        raise SystemExit('this benchmark needs Faiss: pip install -e ".[faiss]"') from None

    rng = np.random.default_rng(0)
    width = (args.bits + 7) // 8
    database = rng.integers(0, 256, (args.database, width), dtype=np.uint8)
    queries = rng.integers(0, 256, (args.queries, width), dtype=np.uint8)

    ours = index.HammingIndex(args.bits).add(database)
    ours_seconds, (ours_d, ours_i) = timed_search(ours, queries, args.k, args.repeats)

    flat = faiss.IndexBinaryFlat(8 * width)
    flat.add(database)
    faiss_seconds, (faiss_d, faiss_i) = timed_search(flat, queries, args.k, args.repeats)
    identical = bool(np.array_equal(ours_i, faiss_i) and np.array_equal(ours_d, faiss_d))

    rows = [
        {"index": "tfhash HammingIndex (exact)", "queries_per_s": args.queries / ours_seconds,
         "seconds": ours_seconds, "recall@k": 1.0},
        {"index": "faiss IndexBinaryFlat (exact)", "queries_per_s": args.queries / faiss_seconds,
         "seconds": faiss_seconds, "recall@k": float(np.mean([np.isin(a, b).mean() for a, b in zip(faiss_i, ours_i)]))},
    ]
    for kind in ("ivf", "hnsw"):
        start = time.perf_counter()
        approximate = index.FaissIndex(args.bits, kind=kind).add(database)
        build = time.perf_counter() - start
        seconds, (_, ids) = timed_search(approximate, queries, args.k, args.repeats)
        # Recall against the exact top-k set (distance ties at the cut make exact ids one valid answer).
        recall = float(np.mean([np.isin(a, b).mean() for a, b in zip(ids, ours_i)]))
        rows.append({"index": f"tfhash FaissIndex(kind={kind!r}) (approximate)",
                     "queries_per_s": args.queries / seconds, "seconds": seconds, "recall@k": recall,
                     "build_seconds": build})

    ratio = (args.queries / faiss_seconds) / (args.queries / ours_seconds)
    print(evaluation.markdown_table(rows, ["index", "queries_per_s", "seconds", "recall@k", "build_seconds"]))
    print(f"\nFaiss IndexBinaryFlat is {ratio:.2f}x our queries/s; identical top-{args.k} ids and distances: {identical}")
    print(evaluation.json_line({
        "benchmark": "search", "queries": args.queries, "database": args.database, "bits": args.bits,
        "k": args.k, "ours_qps": args.queries / ours_seconds, "faiss_flat_qps": args.queries / faiss_seconds,
        "faiss_over_ours": ratio, "identical_topk": identical, "rows": rows,
        "faiss_threads": faiss.omp_get_max_threads(), "machine": _common.machine(),
    }))


if __name__ == "__main__":
    main()
