"""The Colab notebooks: outputs cleared, public API only; the quickstart runs top to bottom in a kernel."""

import importlib.util
import json
import os

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.e2e  # runs a notebook in a kernel

NOTEBOOKS = ("quickstart.ipynb", "hashgan_tfds.ipynb", "export_serving.ipynb", "large_collections.ipynb",
             "your_photos.ipynb")


def _read(name):
    with open(os.path.join(ROOT, "colab", name), encoding="utf-8") as f:
        return json.load(f)


def _code(notebook):
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_are_cleared_install_tfhash_and_use_the_public_api(name):
    notebook = _read(name)
    cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in cells)
    code = "\n".join(_code(notebook))
    assert "pip\", \"install\"" in code and 'find_spec("tfhash")' in code
    assert "tfhash._" not in code and "from tfhash._" not in code  # no private modules


def test_quickstart_notebook_executes_in_a_kernel(tmp_path, monkeypatch):
    import nbclient
    import nbformat

    monkeypatch.setenv("TFHASH_NOTEBOOK_EPOCHS", "3")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend renders figures as PNG
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    notebook = nbformat.read(os.path.join(ROOT, "colab", "quickstart.ipynb"), as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell if any cell fails
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "| hashgan | 32 |" in text and "| itq | 32 |" in text
    assert "exported to" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the neighbours figure


def _exec_notebook(name, tmp_path, monkeypatch, env):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    namespace = {}
    for index, source in enumerate(_code(_read(name))):
        exec(compile(source, f"{name} cell {index}", "exec"), namespace)
    return namespace


def test_hashgan_tfds_notebook_runs_on_mock_tfds_data(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=300):
        namespace = _exec_notebook("hashgan_tfds.ipynb", tmp_path, monkeypatch,
                                   {"TFHASH_NOTEBOOK_EPOCHS": "1", "TFHASH_NOTEBOOK_QUERIES": "5"})
    assert namespace["split"].query_x.shape[1:] == (28, 28, 1)
    assert [r["method"] for r in namespace["rows"]] == ["hashgan", "lsh", "pcah", "itq", "sph", "sh"]
    assert namespace["grid"].shape[0] > 28 * 7
    assert (tmp_path / "runs" / "mnist-hashgan-paper-32" / "tfhash_config.json").is_file()


def test_export_serving_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("SERVING_URL", raising=False)
    namespace = _exec_notebook("export_serving.ipynb", tmp_path, monkeypatch, {"TFHASH_NOTEBOOK_EPOCHS": "1"})
    assert os.path.isfile(os.path.join(namespace["version_dir"], "saved_model.pb"))
    assert namespace["differing_bits"] <= 0.001 * namespace["codes"].size * 8
    assert namespace["out"]["codes"].numpy().dtype.name == "uint8"


def test_large_collections_notebook_builds_searches_and_matches_beam(tmp_path, monkeypatch):
    namespace = _exec_notebook("large_collections.ipynb", tmp_path, monkeypatch,
                               {"TFHASH_NOTEBOOK_EPOCHS": "1", "TFHASH_NOTEBOOK_ITEMS": "20000"})
    assert len(namespace["built"]) == 20000 and len(namespace["exact"]) == 20100
    assert namespace["ids"].shape == (5, 10) and namespace["ids"][0, 0] == 0  # the first item finds itself
    assert 0.5 <= namespace["recall"] <= 1
    if importlib.util.find_spec("apache_beam") is not None:
        assert namespace["same"] is True and len(namespace["merged"]) == 20000


def test_your_photos_notebook_trains_indexes_and_searches_a_folder_of_real_photographs(tmp_path, monkeypatch):
    namespace = _exec_notebook("your_photos.ipynb", tmp_path, monkeypatch,
                               {"TFHASH_NOTEBOOK_EPOCHS": "1", "TFHASH_BACKBONE_WEIGHTS": "none"})
    assert len(namespace["index"]) == 300  # 150 crops of each of scikit-learn's two photographs
    assert namespace["neighbours"][0] == namespace["query_file"]  # a photo finds itself first
    assert len(namespace["neighbours"]) == 9 and namespace["distances"][0, 0] == 0
