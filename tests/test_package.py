import inspect
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import tfhash
from tests.helpers import ROOT


def test_public_api_is_pinned():
    assert tfhash.__all__ == ["__version__", "Hasher", "build", "baselines", "codes", "collection", "datasets",
                              "evaluation",
                              "export", "fit", "hasher", "index", "load", "losses", "metrics", "neighbours", "schemes",
                              "serving", "sources", "summaries", "training"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", tfhash.__version__)


def _readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_readme_quickstart_has_three_commands_and_ci_runs_the_test_one():
    quickstart = re.search(r"## Quickstart.*?```bash\n(.*?)```", _readme(), re.S).group(1)
    commands = [line for line in quickstart.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 3
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = f.read()
    test_command = (commands[1].replace("pip install", "python3 -m pip install")
                    .replace("python -m pytest", "python3 -m pytest"))
    assert test_command.replace("python3 -m pytest", "tier python3 -m pytest") in ci
    tiers = re.search(r"two tiers, and the Milvus and Beam tests beside them; CI runs all four:\n\n```bash\n(.*?)```",
                      _readme(), re.S).group(1)
    for line in tiers.splitlines():  # each tier's command, as the README shows it, is run by CI
        assert "tier " + line.split("#")[0].strip().replace("python -m", "python3 -m") in ci, line


def _anchors(text):
    """The targets a Markdown page offers: explicit ``<a id>``s and GitHub's slugs of its headings."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # a "# " line in a code block is a comment
    slugs = {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
             for heading in re.findall(r"^#+ (.*)$", prose, re.M)}
    return slugs | set(re.findall(r'<a id="([^"]+)"', text))


def _documents():
    """Every Markdown page of the project: the top-level ones and docs/, by path relative to the root."""
    names = [name for name in sorted(os.listdir(ROOT)) if name.endswith(".md")]
    names += [f"docs/{name}" for name in sorted(os.listdir(os.path.join(ROOT, "docs"))) if name.endswith(".md")]
    pages = {}
    for name in names:
        with open(os.path.join(ROOT, name), encoding="utf-8") as f:
            pages[name] = f.read()
    return pages


def test_links_between_the_documents_reach_their_anchors():
    pages = _documents()
    links = []
    for name, text in pages.items():
        for target, anchor in re.findall(r"\]\(([\w./-]*\.md)?(?:#([\w-]+))?\)", text):
            page = os.path.normpath(os.path.join(os.path.dirname(name), target)) if target else name
            links.append((name, page, anchor))
    anchors = {name: _anchors(text) for name, text in pages.items()}
    assert len(links) > 20
    assert [link for link in links if link[1] not in pages] == []  # every linked page exists
    assert [link for link in links if link[2] and link[2] not in anchors[link[1]]] == []


def test_the_readme_is_a_front_page():
    readme = _readme()
    assert len(readme.splitlines()) <= 250
    for page in ("training", "schemes", "collections", "export", "conventions", "guarantees", "benchmarks"):
        assert f"(docs/{page}.md)" in readme


def _python_blocks():
    """The Python examples, in reading order: the README's, then the scheme and export pages' (but the photos
    block, which downloads pretrained weights: tests/test_image_folder.py runs it without them)."""
    pages = _documents()
    return [block for name in ("README.md", "docs/schemes.md", "docs/export.md")
            for block in re.findall(r"```python\n(.*?)```", pages[name], re.S) if '"imagenet"' not in block]


@pytest.mark.e2e
def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = _python_blocks()
    assert len(blocks) == 6
    monkeypatch.chdir(tmp_path)  # the blocks write relative paths
    namespace = {}
    exec(compile(blocks[0], "README.md block 1", "exec"), namespace)
    assert [r["method"] for r in namespace["rows"]] == ["hashgan", "lsh", "pcah", "itq", "sph", "sh"]
    assert namespace["codes"].shape == (100, 4) and namespace["codes"].dtype.name == "uint8"
    assert namespace["ids"].shape == (100, 10)
    np.testing.assert_array_equal(namespace["served"].encode(namespace["split"].query_x), namespace["codes"])
    assert (tmp_path / "runs" / "api" / "tfhash_config.json").is_file()
    exec(compile(blocks[1], "README.md block 2", "exec"), namespace)
    assert 0.3 < namespace["mAP"] <= 1.0 and 0.0 <= namespace["ball"].precision <= 1.0
    exec(compile(blocks[2], "README.md block 3", "exec"), namespace)
    assert namespace["graph_hasher"].scheme == "bgan" and 0.5 < namespace["purity"] <= 1.0
    exec(compile(blocks[3], "README.md block 4", "exec"), namespace)
    assert namespace["semi"].history.history["stage"] == [1.0, 1.0, 2.0, 2.0]
    assert (namespace["few"] >= 0).sum() == 200 and set(namespace["no_gan"].model.players()) == {"shared"}
    exec(compile(blocks[4], "README.md block 5", "exec"), namespace)
    assert 0.0 < namespace["ann_map"] <= 1.0 and namespace["feature_hasher"].scheme == "sigah"
    exec(compile(blocks[5], "README.md block 6", "exec"), namespace)
    np.testing.assert_array_equal(namespace["same"], namespace["codes"][:5])
    assert (tmp_path / "serving" / "digits_hash" / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "serving" / "models.config").is_file() and (tmp_path / "digits_hash.tflite").is_file()
    assert namespace["on_device"].bits == 32


@pytest.mark.e2e
def test_benchmark_scripts_end_with_a_json_line():
    import json

    result = subprocess.run([sys.executable, "-m", "benchmarks.eval_speed", "--queries", "20", "--database", "5000"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["max_ap_difference"] < 1e-9 and figures["ours_seconds"] > 0
    assert np.isfinite(figures["speedup"])


def test_every_guarantee_names_a_test_that_exists():
    section = _documents()["docs/guarantees.md"]
    named, module = [], None
    for match in re.finditer(r"`((tests/\w+\.py))?::(\w+)`", section):
        module = match.group(2) or module  # "::name" continues the module named before it
        named.append((module, match.group(3)))
    assert len(named) >= 20
    for module, name in named:
        with open(os.path.join(ROOT, module), encoding="utf-8") as f:
            assert f"def {name}(" in f.read(), f"{module}::{name}"


def test_the_one_private_keras_method_overridden_is_still_called_by_keras():
    # HashingScheme._maybe_symbolic_build replaces Keras's; a rename upstream would silently bypass it.
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    assert list(inspect.signature(TensorFlowTrainer._maybe_symbolic_build).parameters) == [
        "self", "iterator", "data_batch"]
    assert "_maybe_symbolic_build(" in inspect.getsource(TensorFlowTrainer.fit)
    private = re.compile(r"_maybe_symbolic_build|_in_multi_worker_mode|object\.__setattr__")
    found = {os.path.relpath(os.path.join(folder, name), ROOT)
             for folder, _, names in os.walk(os.path.join(ROOT, "tfhash")) for name in names
             if name.endswith(".py") and private.search(open(os.path.join(folder, name), encoding="utf-8").read())}
    assert found == {os.path.join("tfhash", "schemes", "base.py")}


def _library_modules():
    """``{module name: parsed source}`` of every module of ``tfhash/``."""
    import ast
    import pathlib

    root = pathlib.Path(ROOT)
    modules = {}
    for path in sorted((root / "tfhash").rglob("*.py")):
        name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = ast.parse(path.read_text())
    return modules


def test_a_scheme_author_meets_at_most_twenty_public_methods():
    from tfhash.schemes.base import HashingScheme

    public = [name for name, value in vars(HashingScheme).items()
              if not name.startswith("_") and (callable(value) or isinstance(value, (property, classmethod)))]
    assert len(public) <= 20, public


def test_no_import_circle_among_library_modules():
    import ast

    modules = _library_modules()
    graph = {name: set() for name in modules}
    for name, tree in modules.items():
        for node in ast.walk(tree):  # imports inside functions count too
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfhash"):
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                           for alias in node.names]
            else:
                continue
            graph[name].update(target for target in targets if target in modules and target != name)

    def circle_from(start, path):
        for target in sorted(graph[path[-1]]):
            if target == start:
                return path
            if target not in path and target > start:  # each circle is found from its smallest module
                found = circle_from(start, path + [target])
                if found:
                    return found
        return None

    circles = [found for found in (circle_from(name, [name]) for name in sorted(graph)) if found]
    assert circles == []


def test_no_library_function_is_longer_than_sixty_lines():
    import ast

    long = [f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
            for module, tree in _library_modules().items() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60]
    assert long == []


def test_every_presets_provenance_link_reaches_its_section():
    with open(os.path.join(ROOT, "REPRODUCTION.md"), encoding="utf-8") as f:
        reproduction = f.read()
    for name in tfhash.schemes.names():
        for preset in tfhash.schemes.get(name).presets.values():
            if not preset.selected_on.startswith("paper"):
                anchor = re.fullmatch(r"validation queries: REPRODUCTION\.md#([a-z0-9-]+)", preset.selected_on)
                assert anchor and f'<a id="{anchor.group(1)}"></a>' in reproduction, (name, preset.name)


def test_every_public_function_of_the_library_has_type_hints():
    import ast

    unhinted = []
    for module, tree in _library_modules().items():
        if any(part.startswith("_") for part in module.split(".")[1:]):
            continue  # private modules
        functions = [(node, "") for node in tree.body if isinstance(node, ast.FunctionDef)]
        functions += [(item, f"{node.name}.") for node in tree.body if isinstance(node, ast.ClassDef)
                      and not node.name.startswith("_") for item in node.body if isinstance(item, ast.FunctionDef)]
        for function, owner in functions:
            if function.name.startswith("_"):
                continue
            arguments = function.args.posonlyargs + function.args.args + function.args.kwonlyargs
            arguments += [a for a in (function.args.vararg, function.args.kwarg) if a]
            if function.returns is None or any(a.annotation is None for a in arguments if a.arg not in ("self", "cls")):
                unhinted.append(f"{module}.{owner}{function.name}")
    assert unhinted == []
