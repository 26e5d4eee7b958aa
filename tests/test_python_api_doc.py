"""docs/python_api.md runs as written: its fenced python blocks, in order, in one namespace."""

import re
from pathlib import Path

from pigbench.registry import evaluators

DOC = Path(__file__).resolve().parent.parent / "docs" / "python_api.md"


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fences of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_python_blocks_are_found():
    assert python_blocks("a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\n```\n") == ["x = 1\n", "y = 2\n"]


def test_the_python_api_doc_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIGBENCH_CACHE", str(tmp_path / "cache"))
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 5
    namespace: dict = {"__name__": "python_api_doc"}
    for i, block in enumerate(blocks, 1):
        exec(compile(block, f"{DOC.name} block {i}", "exec"), namespace)
    # what the doc says the examples leave behind
    assert (tmp_path / "results" / "demo" / "my-judge__opt-users10.json").is_file()
    assert sorted(p.name for p in (tmp_path / "cache" / "runs").iterdir() if p.suffix == ".sqlite")
    assert set(namespace["history"]) == {1, 2}
    assert "my-reward" in evaluators.names() and "my-judge" in evaluators.names()
    printed = capsys.readouterr().out
    assert "acc w/ tie" in printed and "results/demo/my-judge__opt-users10.json" in printed


def test_the_doc_is_linked_from_the_readme_and_the_architecture():
    root = DOC.parent.parent
    assert "docs/python_api.md" in (root / "README.md").read_text()
    assert "python_api.md" in (root / "docs" / "architecture.md").read_text()
