"""Beyond one process: encoding on Beam's DirectRunner with 1 and 2 worker processes against the local
streaming build, and Milvus Lite's exact search against the exact index, on real images and codes.

    python -m benchmarks.distributed [--items 100000] [--bits 64]

What it measures and how: BENCHMARKS.md, section (p). Ends with one JSON line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import _common, report
from benchmarks.collection import _tiled_pixels

QUERIES = 1000


def _timed_command(command):
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=_common.ROOT)
    if result.returncode:
        raise SystemExit(f"{' '.join(command[:3])} failed: {result.stderr[-3000:]}")
    return time.perf_counter() - start


def main(argv=None):
    started = time.perf_counter()
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--work", default=None, help="scratch directory (default: a new temporary one, removed)")
    args = parser.parse_args(argv)

    import tfhash
    from tfhash import index

    work = args.work or tempfile.mkdtemp(prefix="tfhash-distributed-")
    os.makedirs(work, exist_ok=True)
    try:
        x, _ = _common.load_real("fashion70k")
        queries_x, collection_x = x[:QUERIES], x[QUERIES:]
        hasher = tfhash.fit("hashgan", collection_x[:10_000], bits=args.bits, epochs=2, seed=0, verbose=0)
        export = hasher.export(os.path.join(work, "export"))
        items = np.concatenate(list(_tiled_pixels(collection_x, args.items, seed=1)))
        for i, part in enumerate(np.array_split(items, 10)):
            np.save(os.path.join(work, f"shard-{i:02d}.npy"), part)
        np.save(os.path.join(work, "all.npy"), items)

        rows = []
        seconds = _timed_command([sys.executable, "-m", "trainers.encode", f"--export={export}",
                                  f"--input={os.path.join(work, 'all.npy')}", f"--index={os.path.join(work, 'local')}"])
        rows.append({"encoding": "`python -m trainers.encode` (one process)", "seconds": seconds,
                     "items_per_s": args.items / seconds, "identical_to_local": True})
        for workers in (1, 2):
            path = os.path.join(work, f"beam-{workers}")
            seconds = _timed_command([
                sys.executable, "-m", "trainers.encode_beam", f"--export={export}",
                f"--input={os.path.join(work, 'shard-*.npy')}", f"--output={path}-shards", f"--index={path}",
                "--runner=DirectRunner", f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"])
            identical = all(open(os.path.join(path, n), "rb").read()
                            == open(os.path.join(work, "local", n), "rb").read()
                            for n in ("codes-000000.bin", "ids-000000.bin"))
            rows.append({"encoding": f"`python -m trainers.encode_beam`, DirectRunner, {workers} worker "
                                     f"process{'es' * (workers > 1)}", "seconds": seconds,
                         "items_per_s": args.items / seconds, "identical_to_local": identical})
            print(rows[-1], flush=True)
        for row in rows:
            row["over_local"] = rows[0]["seconds"] / row["seconds"]

        exact = index.load(os.path.join(work, "local"))
        codes, ids = exact._stored()
        queries = hasher.encode(queries_x)
        exact.search(queries[:2], 100)
        start = time.perf_counter()
        want_d, want_i = exact.search(queries, 100)
        exact_qps = QUERIES / (time.perf_counter() - start)
        start = time.perf_counter()
        milvus = index.make_index(args.bits, "milvus", uri=os.path.join(work, "codes.db"), collection="codes")
        milvus.add(codes, ids=ids)
        milvus_build = time.perf_counter() - start
        milvus.search(queries[:2], 100)
        start = time.perf_counter()
        got_d, got_i = milvus.search(queries, 100)
        milvus_qps = QUERIES / (time.perf_counter() - start)
        search = [
            {"index": "exact `HammingIndex` (memory-mapped)", "build_s": 0.0, "queries_per_s": exact_qps,
             "recall@100": 1.0, "distances_identical": True},
            {"index": "Milvus Lite `BIN_FLAT`", "build_s": milvus_build, "queries_per_s": milvus_qps,
             "recall@100": float(np.mean([np.isin(g, w).mean() for g, w in zip(got_i, want_i)])),
             "distances_identical": bool(np.array_equal(got_d, want_d))},
        ]
        report.finish({"benchmark": "distributed", "items": args.items, "bits": args.bits, "encoding": rows,
                       "search": search, "machine": _common.machine()}, args.results, started)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
