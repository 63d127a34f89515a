"""tf.distribute: every scheme's code under the default strategy, MirroredStrategy and
MultiWorkerMirroredStrategy (subprocesses: logical devices and clusters are set before TF starts)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT
from tfhash import schemes

pytestmark = pytest.mark.e2e  # two logical devices and two worker processes

HELPER = os.path.join(ROOT, "tests", "distributed_helper.py")


def _run(mode, tmp_path, scheme="-", env=None, timeout=600):
    out = tmp_path / f"{mode}.json"
    result = subprocess.run([sys.executable, HELPER, mode, scheme, str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("scheme", schemes.names())
def test_mirrored_strategy_matches_one_device_for_the_same_global_batch(tmp_path, scheme):
    result = _run("mirrored", tmp_path, scheme)
    one, two = result["default"]["history"], result["mirrored"]["history"]
    assert set(one) == set(two)
    for key in one:
        # Loss scaling per replica, global-batch statistics and per-example noise make the two agree.
        np.testing.assert_allclose(two[key], one[key], rtol=2e-3, atol=2e-4, err_msg=key)
    np.testing.assert_allclose(result["mirrored"]["probabilities"], result["default"]["probabilities"], atol=2e-3)


def test_labels_and_indices_reach_the_replica_that_holds_their_items(tmp_path):
    result = _run("probe", tmp_path)
    assert result["replicas"] == 2
    np.testing.assert_allclose(result["table"], result["expected"], atol=1e-6)


def test_replicas_draw_different_noise_each_the_rows_of_its_share(tmp_path):
    result = _run("replica_noise", tmp_path, schemes.names()[0])
    first, second = result["replica_noise"]
    assert np.asarray(first).shape == (4, 100)
    assert not np.allclose(first, second)
    # Together they are the one-device draw for the global batch of 8.
    np.testing.assert_allclose(np.concatenate([first, second]), result["one_device"], atol=1e-6)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_mirrored_strategy_two_workers_on_loopback(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        out = tmp_path / f"worker{index}.json"
        procs.append((subprocess.Popen([sys.executable, HELPER, "worker", schemes.names()[0], str(out)], cwd=ROOT,
                                       env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), out))
    results = []
    for proc, out in procs:
        try:
            _, stderr = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, stderr[-3000:]
        results.append(json.loads(out.read_text()))
    for result in results:
        assert result["replicas"] == 2
        assert all(np.all(np.isfinite(v)) for v in result["history"].values())
    # Both workers hold the same (synchronised) weights after training.
    np.testing.assert_allclose(results[0]["probabilities"], results[1]["probabilities"], atol=1e-5)
