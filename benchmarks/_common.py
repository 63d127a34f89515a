"""Helpers shared by the benchmark scripts (not part of the library)."""

import os
import platform

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


REAL_DATA = {"mnist10k": "mnist-10k", "fashion10k": "fashion-mnist-10k", "cifar6k": "cifar10-6k",
             "fashion70k": "fashion-mnist-train-60k"}


def load_real(name):
    """A real data set of ../shared/data by benchmark name: float32 images in [0, 1], int labels."""
    from tfhash import datasets

    folder = os.path.join(SHARED_DATA, REAL_DATA[name])
    if not os.path.isdir(folder):
        raise SystemExit(f"benchmark data not found: {folder} (expected beside the project root)")
    if name == "cifar6k":
        return datasets.load_local(os.path.join(folder, "cifar10_6k.npz"))
    if name == "fashion70k":  # the whole Fashion-MNIST set: the 10k test split, then the 60k training split
        test_x, test_y = load_real("fashion10k")
        train_x, train_y = datasets.load_mnist_idx(os.path.join(folder, "train-images-idx3-ubyte.gz"),
                                                   os.path.join(folder, "train-labels-idx1-ubyte.gz"))
        return np.concatenate([test_x, train_x]), np.concatenate([test_y, train_y])
    return datasets.load_mnist_idx(os.path.join(folder, "t10k-images-idx3-ubyte.gz"),
                                   os.path.join(folder, "t10k-labels-idx1-ubyte.gz"))


def load_mnist10k():
    """The real MNIST test split from ../shared/data/mnist-10k: float32 images in [0, 1], labels."""
    return load_real("mnist10k")


def timed(call, repeats=1):
    """The fastest of ``repeats`` calls of ``call()``, in seconds, and the last call's result."""
    import time

    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - start)
    return best, result


# The vector extensions TensorFlow's CPU kernels choose between: the same seed and commit train to different
# figures where they differ, so a figure's record says which ran it.
VECTOR_EXTENSIONS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "asimd", "sve")


def cpu(cpuinfo="/proc/cpuinfo"):
    """The processor's model name and vector extensions, e.g. ``"AMD EPYC (avx2 fma)"``."""
    fields = {}
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:  # the first processor's fields; "Features" on ARM
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    name = fields.get("model name") or platform.processor() or platform.machine()
    return f"{name} ({' '.join(x for x in VECTOR_EXTENSIONS if x in flags)})"


def onednn():
    """Whether TensorFlow runs its oneDNN kernels in this process; None when TensorFlow is not imported (or cannot
    say). Its figures differ in rounding with them, and convolutions run at another speed."""
    import sys

    if "tensorflow" not in sys.modules:
        return None
    try:  # TensorFlow's own answer: its default depends on the processor, TF_ENABLE_ONEDNN_OPTS overrides it
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def machine():
    return {"cpus": os.cpu_count(), "cpu": cpu(), "onednn": onednn(), "python": platform.python_version(),
            "numpy": np.__version__}


def rss_mb():
    """This process's resident memory now, MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def high_water_mb():
    """This process's peak resident memory, MB: ``VmHWM``, the high-water mark of its own address space.
    (``getrusage``'s ``ru_maxrss`` is carried across ``exec`` from the parent that forked it, so a child
    started by a large parent would report the parent's size.)"""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def peak_rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def commit():
    """The checked-out commit of the project, or None outside a git checkout."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def append_result(path, record, wall_seconds):
    """Appends ``record`` as one JSON line to ``path``, with the command that made it, the commit and the wall
    time, so a figure taken from the file can always be traced and rerun."""
    import json
    import shlex
    import sys

    # quoted as a shell would need it, so an argument holding spaces reads back as one (shlex.split)
    command = f"python -m benchmarks.{os.path.basename(sys.argv[0])[:-3]} {shlex.join(sys.argv[1:])}".rstrip()
    entry = {"command": command,
             "commit": commit(), "wall_seconds": round(wall_seconds, 1), **record}
    with open(path, "a", encoding="utf-8") as f:  # one line per run, appended whole
        f.write(json.dumps(entry, sort_keys=True, default=float) + "\n")


def argument_parser(doc):
    """A benchmark's command line: described by its docstring's first paragraph, with ``--results``."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--results", default=None, metavar="FILE.jsonl",
                        help="also append the record to this results file (benchmarks/results.jsonl feeds the docs)")
    return parser
