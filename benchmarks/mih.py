"""Exact search without a scan: multi-index hashing against the flat scan and Faiss, up to 10^8 codes.

    python -m benchmarks.mih [--sizes 1000000 10000000 100000000] [--wide 10000000] [--epochs 3]

Codes of real images: an encoder trained on the 70,000 Fashion-MNIST images (1,000 held out as the queries)
encodes the other 69,000, and the collection grows to each size by copies of randomly chosen real codes with 1 to
3 random bits flipped (near-duplicates, as a large collection of photographs holds); uniformly random codes,
multi-index hashing's worst case, are measured too. What it measures and how: BENCHMARKS.md, section (s).
"""

import os
import tempfile
import time

import numpy as np

from benchmarks import _common, report

K, CHUNK = 10, 10_000_000


def real_codes(bits, epochs):
    """``(queries, codes)``: an encoder's codes of 1,000 held-out Fashion-MNIST images and of the other 69,000."""
    import tfhash

    x, _ = _common.load_real("fashion70k")
    hasher = tfhash.fit("hashgan", x[1000:], bits=bits, epochs=epochs, seed=0, verbose=0)
    return hasher.encode(x[:1000]), hasher.encode(x[1000:])


def grown(base, count, seed):
    """``count`` codes: ``base`` itself, then copies of random rows of it with 1 to 3 random bits flipped."""
    rng, bits = np.random.default_rng(seed), 8 * base.shape[1]
    out = np.empty((count, base.shape[1]), np.uint8)
    out[:len(base)] = base[:count]
    for start in range(len(base), count, CHUNK):
        part = base[rng.integers(0, len(base), min(CHUNK, count - start))]
        flips = rng.integers(1, 4, len(part))
        for flip in range(3):
            rows = np.flatnonzero(flips > flip)
            position = rng.integers(0, bits, len(rows))
            part[rows, position >> 3] ^= (1 << (position & 7)).astype(np.uint8)
        out[start:start + len(part)] = part
    return out


def uniform(count, width, seed):
    rng, out = np.random.default_rng(seed), np.empty((count, width), np.uint8)
    for start in range(0, count, CHUNK):
        out[start:start + CHUNK] = rng.integers(0, 256, (min(CHUNK, count - start), width), dtype=np.uint8)
    return out


def latencies(search, queries, count):
    """p50 / p99 milliseconds and queries per second of ``count`` single-query searches."""
    times = []
    for query in queries[:count]:
        start = time.perf_counter()
        search(query[None])
        times.append(time.perf_counter() - start)
    return {"p50_ms": 1000 * np.percentile(times, 50), "p99_ms": 1000 * np.percentile(times, 99),
            "single_qps": len(times) / sum(times), "single_queries": len(times)}


def measure(name, build, search, queries, truth, single, size_of, batch):
    """One index: build time and memory, single and batch speed, agreement with the flat scan's top-k (over the
    first ``batch`` queries)."""
    before, start = _common.rss_mb(), time.perf_counter()
    index = build()
    search(index, queries[:1])  # tables, compiled kernels: part of the build
    row = {"index": name, "build_s": time.perf_counter() - start, "memory_mb": _common.rss_mb() - before}
    if getattr(index, "_runs", None):
        row["substrings"] = "+".join(str(length) for _, length in index._runs[0].substrings)
    row.update(latencies(lambda q: search(index, q), queries, single))
    start = time.perf_counter()
    distances, ids = search(index, queries[:batch])
    row.update(batch_qps=batch / (time.perf_counter() - start), batch_queries=batch)
    if truth is not None:
        want_d, want_i = truth[0][:batch], truth[1][:batch]
        row["identical"] = bool(np.array_equal(distances, want_d) and np.array_equal(ids, want_i))
        # recall: the share of the k found within the exact k-th distance (any code tied there is a right answer)
        row["recall"] = float(np.mean(distances <= want_d[:, -1:]))
    row["disk_mb"] = size_of(index) / 1e6
    print({key: round(value, 3) if isinstance(value, float) else value for key, value in row.items()}, flush=True)
    return row, (distances, ids)


def warm_up(bits):
    """Compiles (or loads from Numba's cache) every kernel the measured indexes run, so no build time holds it."""
    from tfhash import index as tfhash_index

    codes = uniform(5_000, bits // 8, seed=4)
    for kind in ("flat", "mih"):
        index = tfhash_index.make_index(bits, kind=kind).add(codes)
        index.search(codes[:3], K)
        index.range_search(codes[:3], 2)


def collection_rows(label, codes, queries, bits, scan_queries, work):
    import faiss

    from tfhash import index as tfhash_index
    from tfhash.index import mih

    def saved_size(index):
        path = index.save(tempfile.mkdtemp(dir=work, prefix="index-") + "/index")
        return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))

    def faiss_size(index):
        path = os.path.join(work, "faiss.index")
        faiss.write_index_binary(index, path)
        return os.path.getsize(path)

    def faiss_search(index, q):
        return index.search(q, K)

    nhash = len(mih.plans(bits, len(codes))[-1])  # the paper's m, for Faiss's tables
    everything = len(queries)
    # At 10^8 codes, as many queries as the scans for the indexes that read most codes there too: Faiss's multi-hash
    # (whole buckets of near-duplicates), and the tables on uniform codes (which they scan)
    multihash = min(scan_queries, everything)
    tables = multihash if label == "uniform" else everything
    rows, truth = [], None
    for name, build, search, single, size, batch in (
            ("tfhash flat scan", lambda: tfhash_index.make_index(bits).add(codes),
             lambda i, q: i.search(q, K), scan_queries, saved_size, everything),
            ("tfhash MIH (exact)", lambda: tfhash_index.make_index(bits, kind="mih").add(codes),
             lambda i, q: i.search(q, K), tables, saved_size, tables),
            ("Faiss IndexBinaryFlat", lambda: _faiss(faiss.IndexBinaryFlat(bits), codes), faiss_search,
             scan_queries, faiss_size, everything),
            (f"Faiss IndexBinaryMultiHash ({nhash} x {bits // nhash} bits, nflip 1)",
             lambda: _faiss(faiss.IndexBinaryMultiHash(bits, nhash, bits // nhash), codes, nflip=1), faiss_search,
             multihash, faiss_size, multihash)):
        row, found = measure(name, build, search, queries, truth, single, size, batch)
        truth = truth or found
        rows.append({"collection": label, "codes": len(codes), "bits": bits, **row,
                     "memory_over_codes": row["memory_mb"] * 2**20 / codes.nbytes})
        for entry in os.listdir(work):
            _remove(os.path.join(work, entry))
    return rows, truth


def _faiss(index, codes, nflip=None):
    if nflip is not None:
        index.nflip = nflip
    index.add(codes)
    return index


def _remove(path):
    import shutil

    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def crossover_rows(base, queries, sizes, batches):
    """Queries per second of the flat scan and of the tables by collection, its size and the batch size, with the
    reads per query the tables' sample counted (what ``kind="auto"`` weighs). Each batch size is timed over the
    same queries (at least 64 of them, in batches)."""
    from tfhash import index as tfhash_index

    rows = []
    for count in sizes:
        for label, codes, asked in (("real, grown", grown(base, count, seed=1), queries),
                                    ("uniform", uniform(count, 8, seed=2), uniform(len(queries), 8, seed=3))):
            indexes = {"flat": tfhash_index.make_index(64).add(codes),
                       "mih": tfhash_index.make_index(64, kind="mih").add(codes)}
            for index in indexes.values():
                index.search(asked[:1], K)
            tables = indexes["mih"]._runs[0]
            work = tables.sample_work(codes)
            for batch in batches:
                row = {"collection": label, "codes": count, "batch": batch, "reads_per_query": work}
                for name, index in indexes.items():
                    batches_timed = max(1, 64 // batch)
                    start = time.perf_counter()
                    for first in range(0, batches_timed * batch, batch):
                        index.search(asked[first:first + batch], K)
                    seconds = (time.perf_counter() - start) / (batches_timed * batch)
                    row[f"{name}_qps"], row[f"{name}_ns_per_read"] = 1 / seconds, 1e9 * seconds / (
                        count if name == "flat" else work)
                row["mih_over_flat"] = row["mih_qps"] / row["flat_qps"]
                print(row, flush=True)
                rows.append(row)
            del codes, indexes
    return rows


def distance_shares(distances):
    """The share of the queries' k nearest at each distance (0 to 8, then beyond)."""
    counts = np.bincount(np.minimum(distances.ravel(), 9), minlength=10) / distances.size
    return {("d9_more" if d == 9 else f"d{d}"): float(share) for d, share in enumerate(counts)}


def main(argv=None):
    started = time.perf_counter()
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000, 100_000_000])
    parser.add_argument("--wide", type=int, nargs="*", default=[10_000_000], help="sizes also measured at 128 bits")
    parser.add_argument("--epochs", type=int, default=3, help="the encoder's training epochs")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--scan-queries", type=int, default=100, help="single queries of the scans at 10^8 codes")
    parser.add_argument("--crossover", action="store_true",
                        help="instead: the flat scan against the tables by batch size, on real codes of --sizes")
    args = parser.parse_args(argv)
    if args.crossover:
        queries, base = real_codes(64, args.epochs)
        warm_up(64)
        rows = crossover_rows(base, queries, args.sizes, (1, 4, 32, 1000))
        return report.finish({"benchmark": "mih_crossover", "k": K, "epochs": args.epochs, "rows": rows,
                              "machine": _common.machine()}, args.results, started)

    rows, spread = [], {}
    with tempfile.TemporaryDirectory() as work:
        for bits, sizes in ((64, args.sizes), (128, args.wide)):
            if not sizes:
                continue
            queries, base = real_codes(bits, args.epochs)
            queries = queries[:args.queries]
            print(f"{bits}-bit encoder trained; {len(base):,} real codes", flush=True)
            warm_up(bits)
            from tfhash import index as tfhash_index

            spread[f"real 69k, {bits} bits"] = distance_shares(
                tfhash_index.make_index(bits).add(base).search(queries, K)[0])
            for count in sizes:
                scans = args.queries if count < 100_000_000 else args.scan_queries
                for label, codes, asked in (
                        ("real, grown", grown(base, count, seed=1), queries),
                        ("uniform", uniform(count, bits // 8, seed=2), uniform(len(queries), bits // 8, seed=3))):
                    print(f"{label}: {count:,} codes of {bits} bits", flush=True)
                    found, truth = collection_rows(label, codes, asked, bits, scans, work)
                    rows += found
                    if label.startswith("real"):
                        spread[f"real grown to {count:,}, {bits} bits"] = distance_shares(truth[0])
                    del codes
    report.finish({"benchmark": "mih", "k": K, "queries": args.queries, "epochs": args.epochs, "rows": rows,
                   "nearest_distances": [{"collection": name, **shares} for name, shares in spread.items()],
                   "machine": _common.machine()}, args.results, started)


if __name__ == "__main__":
    main()
