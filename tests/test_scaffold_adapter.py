"""The adapter scaffold (``pigbench new-adapter``): names, refusals, the generated adapter conforms on its
sample and counts bad lines, and the package installs with pip, registers through its entry point,
passes its own tests, check-dataset and a runner run."""

import ast
import importlib
import json
import shutil

import pytest

from pigbench.adapter import DatasetError
from pigbench.cli import main as pigbench
from pigbench.dataset_conformance import run_dataset_checks
from pigbench.results import validate_results
from pigbench.scaffold import PluginNames, ScaffoldError
from pigbench.scaffold_adapter import SAMPLE_IMAGES, SAMPLE_RANKINGS, SAMPLE_USERS, plugin_files, write_plugin
from plugin_install import install_for_subprocesses


def test_bad_and_taken_names_and_used_directory_are_refused(tmp_path, capsys):
    with pytest.raises(ScaffoldError, match="dataset name 'My_Data' must be lower-case letters.*e.g. my-dataset"):
        write_plugin("My_Data", out=tmp_path / "p")
    assert pigbench(["new-adapter", "pickapic", "--out", str(tmp_path / "a")]) == 2
    assert "dataset name 'pickapic' is taken (built-in)" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("x")
    with pytest.raises(ScaffoldError, match="already exists"):
        write_plugin("fresh-data", out=tmp_path / "b")


def test_the_package_is_written_to_pigbench_name_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert pigbench(["new-adapter", "my-data"]) == 0
    assert (tmp_path / "pigbench-my-data" / "pigbench_my_data" / "adapter.py").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["pigbench-my-data"]


def test_generated_files_are_complete():
    files = plugin_files(PluginNames.of("my-data", plugin="dataset"))
    code = {k for k in files if not k.startswith("pigbench_my_data/sample/")}
    assert code == {"pyproject.toml", "README.md", "pigbench_my_data/__init__.py", "pigbench_my_data/adapter.py",
                    "tests/test_pigbench_my_data.py"}
    assert '[project.entry-points."pigbench.adapters"]\nmy-data = "pigbench_my_data.adapter:MyData"' in files["pyproject.toml"]
    assert 'pigbench_my_data = ["sample/*.jsonl", "sample/images/*.png"]' in files["pyproject.toml"]
    # the sample folders are packages to setuptools: found, not listed (a listed-packages build warned they were absent)
    assert '[tool.setuptools.packages.find]\ninclude = ["pigbench_my_data*"]' in files["pyproject.toml"]
    module = files["pigbench_my_data/adapter.py"]
    assert "TODO" in module and "class MyData(DatasetAdapter)" in module and "${" not in module
    ast.parse(module)
    lines = [json.loads(x) for x in files["pigbench_my_data/sample/rankings.jsonl"].splitlines()]
    assert len(lines) == SAMPLE_USERS * SAMPLE_RANKINGS
    images = [v for k, v in files.items() if k.startswith("pigbench_my_data/sample/images/")]
    assert len(images) == len(set(images)) == SAMPLE_USERS * SAMPLE_RANKINGS * SAMPLE_IMAGES  # distinct bytes


def _load_generated(tmp_path, monkeypatch, name="scaffold-data"):
    root, _ = write_plugin(name, tmp_path / name)
    monkeypatch.syspath_prepend(str(root))
    names = PluginNames.of(name, plugin="dataset")
    return root, getattr(importlib.import_module(f"{names.package}.adapter"), names.class_name)


def test_generated_adapter_conforms_on_its_sample_with_every_gold(tmp_path, monkeypatch):
    _, cls = _load_generated(tmp_path, monkeypatch)
    report = run_dataset_checks(cls)
    assert report.ok, report.table()
    assert all(f"{g} 0" not in report.detail("gold-labels") for g in ("A", "B", "TIE")), report.detail("gold-labels")
    assert report.users == SAMPLE_USERS and report.reference_size == 2


def test_generated_adapter_counts_bad_lines_and_refuses_unknown_options(tmp_path, monkeypatch):
    root, cls = _load_generated(tmp_path, monkeypatch, name="scaffold-data-bad")
    data = tmp_path / "copy"
    shutil.copytree(root / "pigbench_scaffold_data_bad" / "sample", data)
    good = json.loads((data / "rankings.jsonl").read_text().splitlines()[0])
    bad = ["{not json", json.dumps({**good, "ranks": [1]}), json.dumps({**good, "images": ["../x.png", "images/y.png"]}),
           json.dumps({**good, "images": ["images/gone.png", *good["images"][1:]]}),
           json.dumps({k: v for k, v in good.items() if k != "prompt"})]
    with (data / "rankings.jsonl").open("a") as fh:
        fh.write("\n".join(bad) + "\n")
    report = run_dataset_checks(cls, str(data), {"file": "rankings.jsonl"})
    assert report.ok, report.table()
    skips = report.detail("skips")
    assert "5 record(s) or pair(s) skipped" in skips, skips
    split = cls(str(data)).split(seed=0, reference_size=None)
    assert split.skipped_records["not a JSON line"] == 1
    assert split.skipped_records["needs 2+ images and one rank >= 1 per image"] == 1
    assert split.skipped_records["image file missing"] == 1
    assert split.skip_examples["image file missing"] == ["rankings.jsonl:000034: images/gone.png"]
    assert split.skip_examples["missing field, wrong type or image path outside the folder"] == [
        "rankings.jsonl:000033: image path '../x.png' must be relative to the dataset folder",
        "rankings.jsonl:000035: missing field 'prompt'; found fields: user_id, images, ranks"]
    with pytest.raises(DatasetError, match="unknown option.s. fil "):
        cls(str(data), {"fil": "x"}).split(seed=0, reference_size=None)


@pytest.mark.slow
def test_scaffold_installs_registers_checks_and_runs(tmp_path):
    root, _ = write_plugin("tiny-data", tmp_path / "pkg")
    site = tmp_path / "site"
    call = install_for_subprocesses(root, site)
    assert (next(site.glob("pigbench_tiny_data-*.dist-info")) / "entry_points.txt").exists()
    assert (site / "pigbench_tiny_data" / "sample" / "rankings.jsonl").exists()  # the sample is package data

    listing = call("-m", "pigbench.cli", "list", "datasets", "--verbose")
    assert "\ntiny-data " in listing and "TODO: one line on the dataset" in listing
    table = call("-m", "pigbench.cli", "check-dataset", "tiny-data")
    assert "tiny-data: conforms (8 pass)" in table
    tests = call("-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests"), cwd=root)
    assert "2 passed" in tests
    call("-m", "pigbench.run", "--evaluator", "color-reference", "--dataset", "tiny-data", "--no-progress",
         "--output", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"))
    (results,) = (tmp_path / "results" / "tiny-data").glob("color-reference*.json")
    assert validate_results(results) == []
    assert json.loads(results.read_text())["split"]["users"] == SAMPLE_USERS
