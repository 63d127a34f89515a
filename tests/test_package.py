import os
import re
import subprocess
import sys

import numpy as np

import tfhash
from tests.conftest import ROOT


def test_public_api_is_pinned():
    assert tfhash.__all__ == ["__version__", "Hasher", "baselines", "codes", "datasets", "evaluation", "export",
                              "fit", "index", "load", "losses", "metrics", "schemes"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", tfhash.__version__)


def _readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_readme_quickstart_has_two_commands_and_ci_runs_the_test_one():
    quickstart = re.search(r"## Quickstart.*?```bash\n(.*?)```", _readme(), re.S).group(1)
    commands = [line for line in quickstart.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = f.read()
    test_command = commands[1].replace("pip install", "python3 -m pip install").replace("python -m pytest", "python3 -m pytest")
    assert test_command in ci


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", _readme(), re.S)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)  # the export block writes relative paths
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert 0.3 < namespace["mAP"] <= 1.0
    assert namespace["ids"].shape == (namespace["query_codes"].shape[0], 10)
    exec(compile(blocks[1], "README.md", "exec"), namespace)
    assert namespace["codes"].shape == (5, 2) and namespace["codes"].dtype.name == "uint8"
    exec(compile(blocks[2], "README.md", "exec"), namespace)
    np.testing.assert_array_equal(namespace["same"], namespace["codes"])
    assert (tmp_path / "serving" / "digits_hash" / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "serving" / "models.config").is_file() and (tmp_path / "digits_hash.tflite").is_file()


def test_main_job_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "trainers.train", "--dataset=digits", "--bits=8,16",
         f"--model_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| itq | 16 |" in result.stdout
    import json

    with open(tmp_path / "metrics.json") as f:
        payload = json.load(f)
    assert {r["method"] for r in payload["rows"]} == {"itq", "lsh", "pcah", "sph", "sh"}
    assert all(0.0 <= r["mAP"] <= 1.0 for r in payload["rows"] if "mAP" in r)


def test_main_job_refuses_bad_flags_before_loading_data(tmp_path):
    for flag, message in [("--bits=0", "`bits` must be a positive integer"),
                          ("--scheme=nope", "one of the baselines"),
                          ("--dataset=nope", "must be one of the known data sets")]:
        result = subprocess.run([sys.executable, "-m", "trainers.train", flag, f"--model_dir={tmp_path}"],
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode != 0 and message in result.stderr, (flag, result.stderr[-500:])
    assert not (tmp_path / "metrics.json").exists()


def test_benchmark_scripts_end_with_a_json_line():
    import json

    result = subprocess.run([sys.executable, "benchmarks/eval_speed.py", "--queries", "20", "--database", "5000"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["max_ap_difference"] < 1e-9 and figures["ours_seconds"] > 0
    assert np.isfinite(figures["speedup"])


def test_quickstart_notebook_code_cells_run(tmp_path, monkeypatch):
    import json

    with open(os.path.join(ROOT, "colab", "quickstart.ipynb"), encoding="utf-8") as f:
        notebook = json.load(f)
    assert all(not c.get("outputs") for c in notebook["cells"] if c["cell_type"] == "code")  # outputs cleared
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "quickstart.ipynb", "exec"), namespace)
    assert namespace["ids"].shape == (3, 5)
    assert [r["method"] for r in namespace["rows"]] == ["hashgan", "lsh", "itq"]
