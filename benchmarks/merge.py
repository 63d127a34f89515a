"""Merging Beam's (id, code) shards into a saved index: time and memory by ``rows_in_memory``.

    python -m benchmarks.merge [--items 10000000] [--bits 64] [--rows-in-memory 262144 4194304]

What it measures and how: BENCHMARKS.md, section (p). Ends with one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from benchmarks import _common, report

SHARDS = 4


def _anonymous_rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) / 1024


def _write_shards(output, items, bits, seed=0):
    import tensorflow as tf

    os.makedirs(output)
    with open(os.path.join(output, "encoder.json"), "w") as f:
        json.dump({"scheme": "greedyhash", "bits": bits, "fingerprint": "benchmark"}, f)
    rng = np.random.default_rng(seed)
    ids = rng.permutation(items).astype("<i8")
    codes = rng.integers(0, 256, (items, (bits + 7) // 8), dtype=np.uint8)
    rows = np.concatenate([ids.view(np.uint8).reshape(items, 8), codes], axis=1)
    for shard, part in enumerate(np.array_split(rows, SHARDS)):
        with tf.io.TFRecordWriter(os.path.join(output, f"codes-{shard:05d}-of-{SHARDS:05d}.tfrecord")) as writer:
            for row in part:
                writer.write(row.tobytes())


def _child_merge(output, path, rows_in_memory):
    """One merge in this (fresh) process; prints its figures as JSON."""
    import tensorflow as tf

    import tfhash.beam

    # TensorFlow's first dataset allocates its runtime: do it before the baseline is read
    list(tf.data.Dataset.range(1).as_numpy_iterator())
    before, peak, done = _anonymous_rss_mb(), [0.0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _anonymous_rss_mb())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.perf_counter()
    merged = tfhash.beam.merge_shards(output, path, rows_in_memory=rows_in_memory)
    seconds = time.perf_counter() - start
    done.set()
    watcher.join()
    print(json.dumps({"items": len(merged), "seconds": seconds, "memory_growth_mb": max(peak[0], before) - before}))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _child_merge(argv[1], argv[2], int(argv[3]))
        return
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--rows-in-memory", type=int, nargs="+", default=[262_144, 4_194_304])
    args = parser.parse_args(argv)
    started = time.perf_counter()
    settings = sorted(set(args.rows_in_memory) | {args.items})
    with tempfile.TemporaryDirectory() as work:
        output = os.path.join(work, "shards")
        _write_shards(output, args.items, args.bits)
        print(f"{args.items:,} records of {args.bits} bits in {SHARDS} shards", flush=True)
        figures, contents = {}, set()
        for rows in settings:
            path = os.path.join(work, f"index-{rows}")
            command = [sys.executable, "-m", "benchmarks.merge", "--child", output, path, str(rows)]
            result = subprocess.run(command, capture_output=True, text=True, cwd=_common.ROOT)
            if result.returncode:
                raise SystemExit(f"merge failed: {result.stderr[-3000:]}")
            figures[rows] = json.loads(result.stdout.strip().splitlines()[-1])
            with open(os.path.join(path, "codes-000000.bin"), "rb") as codes, \
                    open(os.path.join(path, "ids-000000.bin"), "rb") as ids:
                contents.add((codes.read(), ids.read()))
            label = "all in one run" if rows == args.items else f"runs of {rows:,}"
            print(f"  {label}: {figures[rows]['seconds']:.1f} s, "
                  f"memory growth {figures[rows]['memory_growth_mb']:.0f} MB",
                  flush=True)
    rows = [{"rows_in_memory": rows, "runs": -(-args.items // rows), "everything": rows == args.items,
             **figures[rows]} for rows in settings]
    report.finish({"benchmark": "merge", "items": args.items, "bits": args.bits, "identical": len(contents) == 1,
                   "rows": rows, "machine": _common.machine()}, args.results, started)


if __name__ == "__main__":
    main()
