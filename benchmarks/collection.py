"""A collection from files to a searchable saved index: encode, build, interrupt and resume, load, search.

    python -m benchmarks.collection [--sizes 100000 1000000] [--work DIR] [--bits 64]

What it measures and how: BENCHMARKS.md, section (o). Ends with one JSON line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import _common, report

QUERIES = 1000


def _child_build(export, source, path, batch_size, kill_at=None):
    """A build in this (fresh) process; prints its figures as JSON. With ``kill_at``, the process records its
    progress after every batch and kills itself (SIGKILL: no cleanup runs) right after the first record of at
    least ``kill_at`` items, so the interruption falls mid-build however fast the machine is."""
    import tfhash

    if kill_at is not None:
        from tfhash import collection

        collection.FLUSH_SECONDS = 0
        record = collection._flush

        def record_then_die(work, state, handles):
            record(work, state, handles)
            if state["written"] >= kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        collection._flush = record_then_die
    encoder = tfhash.load(export)
    before = _common.rss_mb()
    start = time.perf_counter()
    built = tfhash.build(encoder, source, path, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"items": len(built), "seconds": seconds, "rss_before_mb": before,
                      "peak_rss_mb": _common.high_water_mb()}))


def _child_command(export, source, path, batch_size, *extra):
    return [sys.executable, "-m", "benchmarks.collection", "--child", export, str(source), str(path),
            str(batch_size), *map(str, extra)]


def _run_child(export, source, path, batch_size):
    command = _child_command(export, source, path, batch_size)
    result = subprocess.run(command, capture_output=True, text=True, cwd=_common.ROOT)
    if result.returncode:
        raise SystemExit(f"build failed: {result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _interrupted_build(export, source, path, batch_size, count):
    """A build killed once half the items are recorded; returns how many its last record holds."""
    process = subprocess.run(_child_command(export, source, path, batch_size, count // 2), cwd=_common.ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if process.returncode != -signal.SIGKILL:
        raise SystemExit(f"the build to interrupt ended with exit code {process.returncode}, not killed: "
                         f"{process.stderr[-3000:]}")
    work = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.build", "build.json")
    with open(work) as f:
        return json.load(f)["written"]


def _update_one_percent(export, items_path, built, work):
    """Replaces the codes of 1% of a built index's items (re-encoded from pixels with a few changed) in a
    copy of it, and saves it in place; returns the time of the whole change and what it rewrote."""
    import tfhash
    from tfhash import index

    path = os.path.join(work, "index-updated")
    shutil.copytree(built["path"], path)
    first = os.path.join(path, "codes-000000.bin")
    before = (os.stat(first).st_mtime_ns, os.path.getsize(first))
    items = np.load(items_path, mmap_mode="r")
    chosen = np.sort(np.random.default_rng(0).choice(items.shape[0], items.shape[0] // 100, replace=False))
    changed = np.array(items[chosen])
    changed[:, :2] = 255 - changed[:, :2]  # a corner of each image edited
    encoder = tfhash.load(export)
    start = time.perf_counter()
    updated = index.load(path, encoder=encoder)
    updated.update(chosen, encoder.encode(changed, batch_size=1024))
    updated.save()
    seconds = time.perf_counter() - start
    unchanged = before == (os.stat(first).st_mtime_ns, os.path.getsize(first))
    return {"items": int(chosen.shape[0]), "seconds": seconds, "first_segment_unchanged": unchanged,
            "full_build_seconds": built["seconds"]}


def _tiled_pixels(images, count, seed):
    """``count`` uint8 images: the real ones in turn, each copy after the first with pixel noise in [-8, 8]."""
    rng = np.random.default_rng(seed)
    for start in range(0, count, len(images)):
        part = np.round(images[:min(len(images), count - start)] * 255).astype(np.int16)
        if start:
            part = part + rng.integers(-8, 9, part.shape, dtype=np.int16)
        yield np.clip(part, 0, 255).astype(np.uint8)


def _write_npy(path, images, count):
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count,) + images.shape[1:])
    row = 0
    for part in _tiled_pixels(images, count, seed=1):
        array[row:row + len(part)] = part
        row += len(part)
    array.flush()
    del array


def _write_pngs(folder, images, labels, count):
    from PIL import Image

    row = 0
    for part in _tiled_pixels(images, count, seed=1):
        for image in part:
            label = labels[row % len(labels)]
            os.makedirs(os.path.join(folder, str(label)), exist_ok=True)
            Image.fromarray(image[..., 0]).save(os.path.join(folder, str(label), f"{row:07d}.png"))
            row += 1


def _encode_rates(encoders, items, repeats=3):
    """Items/s of each encoder, the best of ``repeats`` rounds that run every encoder in turn (so a busy
    moment of the machine does not fall on one encoder only)."""
    for encoder in encoders.values():
        encoder.encode(items[:256])  # warm up: traces, allocates
    best = {name: float("inf") for name in encoders}
    for _ in range(repeats):
        for name, encoder in encoders.items():
            best[name] = min(best[name], _common.timed(lambda e=encoder: e.encode(items, batch_size=256))[0])
    return {name: len(items) / seconds for name, seconds in best.items()}


def _latency_ms(index, queries):
    times = [1000 * _common.timed(lambda q=q: index.search(q[None], 10))[0] for q in queries[:200]]
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def _directory_bytes(path):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _child_build(argv[1], argv[2], argv[3], int(argv[4]), *(int(a) for a in argv[5:6]))
        return
    started = time.perf_counter()
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--work", default=None, help="scratch directory (default: a new temporary one, removed)")
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes)

    import tfhash
    from tfhash import export, index

    work = args.work or tempfile.mkdtemp(prefix="tfhash-collection-")
    os.makedirs(work, exist_ok=True)
    try:
        x, y = _common.load_real("fashion70k")
        queries_x, collection_x, collection_y = x[:QUERIES], x[QUERIES:], y[QUERIES:]
        hasher = tfhash.fit("hashgan", collection_x[:10_000], bits=args.bits, epochs=args.epochs, seed=0, verbose=0)
        saved = hasher.export(os.path.join(work, "export"))
        tflite = export.export_tflite(hasher, os.path.join(work, "encoder.tflite"))
        print(f"encoder: hashgan, {args.bits} bits, {args.epochs} epochs on 10,000 images; exported", flush=True)

        rates = _encode_rates({"keras (in memory)": hasher, "SavedModel": tfhash.load(saved),
                               "TFLite": tfhash.load(tflite)}, collection_x[:50_000])
        print("encode items/s: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()), flush=True)

        builds = []
        folder = os.path.join(work, "pngs")
        _write_pngs(folder, collection_x, collection_y, sizes[0])
        for label, source, count in [("PNG files (tf.data decode + resize)", folder, sizes[0])] + [
                ("uint8 `.npy`, memory-mapped", os.path.join(work, f"items-{n}.npy"), n) for n in sizes]:
            if source.endswith(".npy"):
                _write_npy(source, collection_x, count)
            path = os.path.join(work, f"index-{len(builds)}")
            figures = _run_child(saved, source, path, args.batch_size)
            figures.update(source=label, count=count, index_mb=_directory_bytes(path) / 1e6, path=path,
                           items_per_s=figures["items"] / figures["seconds"])
            builds.append(figures)
            print(f"build {label}: {figures['items'] / figures['seconds']:.0f} items/s, peak RSS "
                  f"{figures['peak_rss_mb']:.0f} MB (before the build {figures['rss_before_mb']:.0f} MB)", flush=True)

        largest = builds[-1]
        resumed_path = os.path.join(work, "index-resumed")
        killed_at = _interrupted_build(saved, os.path.join(work, f"items-{sizes[-1]}.npy"), resumed_path,
                                       args.batch_size, sizes[-1])
        _run_child(saved, os.path.join(work, f"items-{sizes[-1]}.npy"), resumed_path, args.batch_size)
        identical = all(open(os.path.join(resumed_path, name), "rb").read() ==
                        open(os.path.join(largest["path"], name), "rb").read()
                        for name in ("codes-000000.bin", "ids-000000.bin"))
        print(f"resume: killed with {killed_at:,} of {sizes[-1]:,} items recorded; rerun gives byte-identical codes "
              f"and ids: {identical}", flush=True)

        load_seconds, _ = _common.timed(lambda: index.load(largest["path"]), repeats=3)
        unverified_seconds, _ = _common.timed(lambda: index.load(largest["path"], verify=False), repeats=3)
        update = _update_one_percent(saved, os.path.join(work, f"items-{sizes[-1]}.npy"), largest, work)
        exact = index.load(largest["path"])
        queries = hasher.encode(queries_x)
        exact.search(queries[:2], 100)  # compiles the kernel (or loads it from Numba's cache): not timed
        start = time.perf_counter()
        truth_d, truth = exact.search(queries, 100)
        rows = [{"index": "exact `HammingIndex` (memory-mapped)", "build_s": 0.0, "size_mb": largest["index_mb"],
                 "queries_per_s": QUERIES / (time.perf_counter() - start), "recall@10": 1.0, "recall@100": 1.0,
                 "ids@10": 1.0, "ids@100": 1.0}]
        rows[0]["p50_ms"], rows[0]["p99_ms"] = _latency_ms(exact, queries)
        codes, ids = exact._stored()
        for kind, options in (("ivf", {}), ("hnsw", {}), ("multihash", {"multihash_flips": 1})):
            start = time.perf_counter()
            approximate = index.make_index(args.bits, "faiss", kind=kind, **options).add(codes, ids=ids)
            build = time.perf_counter() - start
            approximate.save(os.path.join(work, f"faiss-{kind}"))
            start = time.perf_counter()
            found_d, found = approximate.search(queries, 100)
            rate = QUERIES / (time.perf_counter() - start)
            # recall@k: the share of the k codes found that are no farther than the exact k-th nearest (any of
            # the codes tied at that distance is a right answer). ids@k: the share of the exact answer's ids
            # found, which ties at the cut make a lower bound (near-copies of an image share their codes).
            recall = {f"recall@{k}": float(np.mean(found_d[:, :k] <= truth_d[:, k - 1:k])) for k in (10, 100)}
            recall.update({f"ids@{k}": float(np.mean([np.isin(f[:k], t[:k]).mean() for f, t in zip(found, truth)]))
                           for k in (10, 100)})
            p50, p99 = _latency_ms(approximate, queries)
            rows.append({"index": {"ivf": "Faiss IVF", "hnsw": "Faiss HNSW"}.get(kind, "Faiss multi-hash (1 flip)"),
                         "build_s": build,
                         "size_mb": _directory_bytes(os.path.join(work, f"faiss-{kind}")) / 1e6, "queries_per_s": rate,
                         **recall, "p50_ms": p50, "p99_ms": p99})
        keras_rate = rates["keras (in memory)"]
        report.finish({
            "benchmark": "collection", "bits": args.bits, "epochs": args.epochs, "batch_size": args.batch_size,
            "encode": [{"encoder": name, "items_per_s": rate, "over_keras": rate / keras_rate}
                       for name, rate in rates.items()],
            "builds": [{k: v for k, v in b.items() if k != "path"} for b in builds],
            "peak_rss_largest_over_smallest_npy": builds[-1]["peak_rss_mb"] / builds[1]["peak_rss_mb"],
            "resume": {"killed_at": killed_at, "identical": identical, "items": sizes[-1]},
            "load_ms": 1000 * load_seconds, "load_ms_unverified": 1000 * unverified_seconds,
            "update_one_percent": {**update, "less": largest["seconds"] / update["seconds"]},
            "search": rows, "machine": _common.machine(),
        }, args.results, started)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
