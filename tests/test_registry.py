"""Registry: lazy built-ins, did-you-mean, type checks, clashes, entry points, no heavy imports."""

import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from pigbench.evaluator import Evaluator
from pigbench.registry import Registry, RegistryError, _Entry, adapters, evaluators


def test_did_you_mean():
    with pytest.raises(RegistryError, match="did you mean 'toy-brightness'"):
        evaluators.get("toy-brigthness")


def test_lazy_placeholder_imported_on_get():
    reg = Registry("evaluator", "pigbench.evaluator:Evaluator", "pigbench.test-none", catalogue="pigbench")
    reg.register_lazy("toy-lazy", "toy:ToyBrightness")
    assert reg.names() == ["toy-lazy"]
    cls = reg.get("toy-lazy")
    assert issubclass(cls, Evaluator) and cls.name == "toy-brightness"  # keeps its first name


def test_wrong_type_and_bad_target_rejected():
    reg = Registry("evaluator", "pigbench.evaluator:Evaluator", "pigbench.test-none", catalogue="pigbench")
    reg.register_lazy("not-an-evaluator", "pigbench.protocol:Label")
    with pytest.raises(RegistryError, match="not a subclass of Evaluator"):
        reg.get("not-an-evaluator")
    with pytest.raises(ValueError, match="module:attr"):
        reg.register_lazy("x", "no_colon")


def test_name_clash_names_both_sources(monkeypatch):
    reg = Registry("evaluator", "pigbench.evaluator:Evaluator", "pigbench.evaluators", catalogue="pigbench.evaluators")
    reg.register_lazy("random", "pigbench.evaluators.random_choice:RandomChoice")
    fake = EntryPoint(name="random", value="thirdparty.mod:Random", group="pigbench.evaluators")
    monkeypatch.setattr("pigbench.registry.entry_points", lambda group: [fake] if group == "pigbench.evaluators" else [])
    for _ in range(2):  # a second call (a notebook's retry) used to get the built-in silently
        with pytest.raises(RegistryError, match="registered twice: by built-in .* and by entry point"):
            reg.get("random")


def test_entry_point_plugin_is_listed(monkeypatch):
    reg = Registry("evaluator", "pigbench.evaluator:Evaluator", "pigbench.evaluators", catalogue="pigbench")
    ep = EntryPoint(name="third-party", value="toy:ToyBrightness", group="pigbench.evaluators")
    monkeypatch.setattr("pigbench.registry.entry_points", lambda group: [ep])
    assert "third-party" in reg.names()
    assert "entry point" in reg.source("third-party")
    assert reg.get("third-party").description.startswith("mean brightness")


def test_listing_imports_no_model_library():
    code = (
        "import sys; from pigbench.list import cli; cli([]);"
        "heavy = [m for m in ('torch', 'transformers', 'open_clip') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "NAME" in out.stdout and "KIND" in out.stdout


@pytest.mark.parametrize("registry, what, builtin", [(evaluators, "evaluators", "random"), (adapters, "datasets", "demo")])
def test_list_shows_a_plugin_that_cannot_be_loaded_in_its_row_and_the_others(registry, what, builtin, monkeypatch, capsys):
    from pigbench.list import cli

    registry.names()  # built-ins and entry points registered
    monkeypatch.setitem(registry._entries, "broken-plugin",
                        _Entry("pigbench.no_such_module:X", "entry point of package 'pigbench-broken'"))
    assert cli([what]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines.keys() == set(registry.names())
    assert f"cannot load: {registry.kind} 'broken-plugin' (pigbench.no_such_module:X, from entry point of package " \
           "'pigbench-broken') cannot be loaded: ModuleNotFoundError" in lines["broken-plugin"]
    assert "cannot load" not in lines[builtin]


@pytest.mark.parametrize("target, message", [("pigbench.no_such_module:X", "ModuleNotFoundError: No module named 'pigbench.no_such_module'"),
                                             ("pigbench.protocol:NoSuchClass", "AttributeError: module 'pigbench.protocol' has no attribute")])
def test_a_target_that_cannot_be_imported_is_a_one_line_registry_error(target, message):
    reg = Registry("evaluator", "pigbench.evaluator:Evaluator", "pigbench.test-none", catalogue="pigbench")
    reg.register_lazy("broken", target)
    with pytest.raises(RegistryError, match=f"evaluator 'broken' \\({target}, from built-in\\) cannot be loaded: {message}"):
        reg.get("broken")


def test_a_plugin_module_that_raises_on_import_is_a_one_line_registry_error(tmp_path, monkeypatch):
    (tmp_path / "unfrozen_plugin.py").write_text(
        "from dataclasses import dataclass\nfrom pigbench.evaluator import ScalarConfig\n\n"
        "@dataclass  # frozen=True forgotten\nclass Config(ScalarConfig):\n    model_path: str = ''\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("evaluator", "pigbench.evaluator:Evaluator", "pigbench.test-none", catalogue="pigbench")
    reg.register_lazy("unfrozen", "unfrozen_plugin:Plugin", source="entry point of package 'pigbench-unfrozen'")
    with pytest.raises(RegistryError, match="^evaluator 'unfrozen' \\(unfrozen_plugin:Plugin, from entry point of package "
                                            "'pigbench-unfrozen'\\) cannot be loaded: TypeError: cannot inherit non-frozen"):
        reg.get("unfrozen")


def test_a_plugin_class_that_leaves_an_abstract_method_unimplemented_is_a_one_line_registry_error():
    from pigbench.evaluator import ScalarEvaluator

    class NoScore(ScalarEvaluator):  # score() forgotten
        pass

    reg = Registry("evaluator", "pigbench.evaluator:Evaluator", "pigbench.test-none", catalogue="pigbench")
    with pytest.raises(RegistryError, match="^evaluator 'no-score': .*NoScore does not implement score$"):
        reg.register("no-score")(NoScore)


def test_a_plugin_declared_under_another_pigbench_entry_point_group_is_named(monkeypatch):
    reg = Registry("evaluator", "pigbench.evaluator:Evaluator", "pigbench.evaluators", catalogue="pigbench")
    declared = [EntryPoint(name="my-reward", value="toy:ToyBrightness", group="pigbench.evaluator"),  # the 's' missing
                EntryPoint(name="black", value="black:main", group="console_scripts")]
    monkeypatch.setattr("pigbench.registry.entry_points", lambda group=None, name=None: [
        ep for ep in declared if group in (None, ep.group) and name in (None, ep.name)])
    with pytest.raises(RegistryError, match="^unknown evaluator 'my-reward'; package '.*' declares it in the entry-point "
                                            "group 'pigbench.evaluator', not 'pigbench.evaluators': fix its pyproject"):
        reg.get("my-reward")
    with pytest.raises(RegistryError, match="^unknown evaluator 'black' \\(known: "):  # not a pigbench group: no hint
        reg.get("black")


def test_an_entry_point_without_a_class_fails_alone(monkeypatch):
    reg = Registry("evaluator", "pigbench.evaluator:Evaluator", "pigbench.evaluators", catalogue="pigbench")
    declared = [EntryPoint(name="module-only", value="toy", group="pigbench.evaluators"),  # ':ToyBrightness' missing
                EntryPoint(name="third-party", value="toy:ToyBrightness", group="pigbench.evaluators")]
    monkeypatch.setattr("pigbench.registry.entry_points", lambda group: declared)
    assert {"module-only", "third-party"} <= set(reg.names())
    assert reg.get("third-party").description.startswith("mean brightness")
    with pytest.raises(RegistryError, match="^evaluator 'module-only' \\(toy, from entry point of package '.*'\\) cannot "
                                            "be loaded: its entry point must name the class, as 'module:Class'$"):
        reg.get("module-only")


def test_a_class_defined_again_replaces_itself_but_another_class_still_clashes():
    """A notebook cell with ``@evaluators.register("mine")`` run a second time defines the class
    anew; that raised 'registered twice' (by the cell's module and by the same module)."""
    from pigbench.evaluator import ScalarEvaluator

    reg = Registry("evaluator", "pigbench.evaluator:Evaluator", "pigbench.test-none", catalogue="pigbench")

    def define(scale):
        class Mine(ScalarEvaluator):
            def score(self, requests):
                return [scale] * len(requests)
        return Mine

    first, again = define(1.0), define(2.0)
    reg.register("mine")(first)
    reg.register("mine")(again)
    assert reg.get("mine") is again

    class Other(ScalarEvaluator):
        def score(self, requests):
            return [0.0] * len(requests)

    with pytest.raises(RegistryError, match="registered twice"):
        reg.register("mine")(Other)
