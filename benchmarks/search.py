"""Search speed: 1,000 queries, top-100, over 1,000,000 random 64-bit packed codes.

    python -m benchmarks.search [--queries 1000] [--database 1000000] [--bits 64] [--k 100]

What it measures and how: BENCHMARKS.md, section (c). Ends with one JSON line.
"""

import concurrent.futures
import os
import time

import numpy as np
from numba import njit

from benchmarks import _common, report
from tfhash import _kernels, codes, index


@njit(nogil=True, boundscheck=False)
def _scan_only(queries, database, start, stop):
    """The distance computation of ``_kernels.knn`` alone: every distance, summed, nothing selected."""
    count, words = database.shape
    block = _kernels.DATABASE_BLOCK
    distances = np.empty(block, np.int64)
    columns = np.empty((words, block), database.dtype)
    total = 0
    for first in range(start, stop, _kernels.QUERY_BLOCK):
        rows = min(first + _kernels.QUERY_BLOCK, stop) - first
        for offset in range(0, count, block):
            size = min(block, count - offset)
            _kernels.transpose_block(database, offset, size, columns)
            for r in range(rows):
                _kernels.block_distances(queries, first + r, columns, size, distances)
                for j in range(size):
                    total += distances[j]
    return total


class _ScanLimit:
    """Times every distance of every query on all cores, as ``HammingIndex`` splits queries over threads."""

    def __init__(self, database):
        self.database = codes.as_words(database)

    def search(self, queries, k):
        words, threads = codes.as_words(queries), os.cpu_count() or 1
        bounds = np.linspace(0, len(queries), threads + 1).astype(int)
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            return sum(pool.map(lambda b: _scan_only(words, self.database, b[0], b[1]), zip(bounds[:-1], bounds[1:])))


def timed_search(idx, queries, k, repeats):
    return _common.timed(lambda: idx.search(queries, k), repeats)


def main():
    started = time.perf_counter()
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--database", type=int, default=1_000_000)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--radius", type=int, default=20,
                        help="range search radius (20 of 64 bits: about a thousand random codes per query per million)")
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
    ours.search(queries[:2], args.k)  # compiles the kernel (or loads it from Numba's cache): not timed
    ours_seconds, (ours_d, ours_i) = timed_search(ours, queries, args.k, args.repeats)
    limit = _ScanLimit(database)
    limit.search(queries[:2], args.k)
    limit_seconds, _ = timed_search(limit, queries, args.k, args.repeats)

    flat = faiss.IndexBinaryFlat(8 * width)
    flat.add(database)
    faiss_seconds, (faiss_d, faiss_i) = timed_search(flat, queries, args.k, args.repeats)
    identical = bool(np.array_equal(ours_i, faiss_i) and np.array_equal(ours_d, faiss_d))

    rows = [
        {"index": "every distance, nothing selected (the limit of an exact scan)",
         "queries_per_s": args.queries / limit_seconds, "seconds": limit_seconds},
        {"index": "tfhash `HammingIndex` (exact; the default)", "queries_per_s": args.queries / ours_seconds,
         "seconds": ours_seconds, "recall": 1.0, "of_limit": limit_seconds / ours_seconds,
         "over_faiss": faiss_seconds / ours_seconds},
        {"index": "Faiss `IndexBinaryFlat` (exact)", "queries_per_s": args.queries / faiss_seconds,
         "seconds": faiss_seconds, "recall": float(np.mean([np.isin(a, b).mean() for a, b in zip(faiss_i, ours_i)])),
         "of_limit": limit_seconds / faiss_seconds},
    ]
    for kind in ("ivf", "hnsw"):
        start = time.perf_counter()
        approximate = index.FaissIndex(args.bits, kind=kind).add(database)
        build = time.perf_counter() - start
        seconds, (_, ids) = timed_search(approximate, queries, args.k, args.repeats)
        # Recall against the exact top-k set (distance ties at the cut make exact ids one valid answer).
        recall = float(np.mean([np.isin(a, b).mean() for a, b in zip(ids, ours_i)]))
        rows.append({"index": f"tfhash `FaissIndex(kind={kind!r})` (approximate)",
                     "queries_per_s": args.queries / seconds, "seconds": seconds, "recall": recall,
                     "build_seconds": build})

    ours_range = index.HammingIndex(args.bits).add(database)
    ours_range.range_search(queries[:2], args.radius)  # compiles the kernel (or loads it): not timed
    flat_range = index.FaissIndex(args.bits, kind="flat").add(database)
    range_seconds, range_answers = {}, {}
    for name, idx in (("ours", ours_range), ("faiss", flat_range)):
        range_seconds[name], range_answers[name] = _common.timed(
            lambda i=idx: i.range_search(queries, args.radius), args.repeats)
    range_identical = all(np.array_equal(a, b) for a, b in zip(range_answers["ours"], range_answers["faiss"]))
    hits = int(range_answers["ours"][0][-1])
    range_ratio = range_seconds["faiss"] / range_seconds["ours"]

    range_rows = [{"index": name, "queries_per_s": args.queries / range_seconds[key],
                   "hits_per_query": hits / args.queries, "identical": range_identical,
                   "over_faiss": range_seconds["faiss"] / range_seconds[key]}
                  for key, name in (("ours", "tfhash `HammingIndex`"), ("faiss", "Faiss `IndexBinaryFlat`"))]
    report.finish({
        "benchmark": "search", "queries": args.queries, "database": args.database, "bits": args.bits,
        "k": args.k, "ours_qps": args.queries / ours_seconds, "faiss_flat_qps": args.queries / faiss_seconds,
        "limit_qps": args.queries / limit_seconds, "ours_over_faiss": faiss_seconds / ours_seconds,
        "identical_topk": identical, "rows": rows, "radius": args.radius, "range": range_rows,
        "range_hits_per_query": hits / args.queries, "range_ours_qps": args.queries / range_seconds["ours"],
        "range_faiss_qps": args.queries / range_seconds["faiss"], "range_ours_over_faiss": range_ratio,
        "range_identical": range_identical, "faiss_threads": faiss.omp_get_max_threads(),
        "machine": _common.machine(),
    }, args.results, started)


if __name__ == "__main__":
    main()
