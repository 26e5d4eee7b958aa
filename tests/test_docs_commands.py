"""Every ``pigbench`` command shown in README.md, CONTRIBUTING.md and docs/*.md (fenced blocks and
inline code: ``pigbench SUB ...``, ``python -m pigbench SUB ...``, ``python -m pigbench.run ...``,
``torchrun ... -m pigbench.run ...``) names a subcommand that exists, and each of its flags is one
that subcommand's parser (or the nested parser it reaches: ``build annotate invite``, ``leaderboard
build``, ``data info``) accepts at that position, and each ``--option KEY=V`` / ``--dataset-option
KEY=V`` key is one the named built-in evaluator or dataset knows, so a renamed or removed flag or
option cannot stay in the docs."""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Iterator

import pytest

from pigbench.cli import COMMANDS, add_subcommand

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
# `pigbench SUB`, `python -m pigbench SUB`, `-m pigbench.MODULE` (python, torchrun, accelerate launch)
INVOCATION = re.compile(r"(?<![\w./-])(?:-m\s+pigbench(?:\.(?P<module>[\w.]+))?|pigbench)(?=\s|$)")
SUBCOMMAND_OF_MODULE = {module: name for name, (module, _) in COMMANDS.items()}
SHELL_END = {"|", "||", "&&", ";", ">", ">>", "2>", "<"}


@dataclass(frozen=True)
class Mention:
    """One command line shown in a doc: ``words`` are what follows ``pigbench`` (the subcommand first)."""

    doc: str
    line: int
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: pigbench {' '.join(self.words)}"


def split_words(text: str) -> list[str]:
    """Shell words of ``text`` up to a comment, pipe or redirection (plain whitespace split where the
    quoting is not the shell's, as in prose)."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        words = text.split("#", 1)[0].split()
    for i, word in enumerate(words):
        if word in SHELL_END:
            return words[:i]
    return words


def mentions_in(text: str, doc: str, first_line: int) -> Iterator[Mention]:
    """The ``pigbench`` command lines of one fenced block or inline code span."""
    text = text.replace("\\\n", " \r")  # a continued line is one command; \r keeps the line count
    line_end = 0
    for found in INVOCATION.finditer(text):
        if found.start() < line_end:
            continue  # a word of the command before (`--dataset pigbench`)
        line_end = text.find("\n", found.end())
        line_end = len(text) if line_end < 0 else line_end
        module = found.group("module")
        rest = split_words(text[found.end():line_end])
        if module is not None:
            if f"pigbench.{module}" not in SUBCOMMAND_OF_MODULE:
                continue  # -m pigbench.clip_tower and the like: not a command
            rest = [SUBCOMMAND_OF_MODULE[f"pigbench.{module}"], *rest]
        if rest:
            before = text[:found.start()]
            yield Mention(doc, first_line + before.count("\n") + before.count("\r"), tuple(rest))


def text_mentions(text: str, doc: str) -> list[Mention]:
    """The ``pigbench`` command lines of a Markdown text: its fenced blocks, then its inline code."""
    found = [m for block in FENCE.finditer(text)
             for m in mentions_in(block.group(1), doc, text[:block.start(1)].count("\n") + 1)]
    prose = FENCE.sub(lambda block: "\n" * block.group(0).count("\n"), text)
    for span in INLINE.finditer(prose):
        found.extend(mentions_in(span.group(1), doc, prose[:span.start()].count("\n") + 1))
    return found


def doc_mentions(path: Path) -> list[Mention]:
    return text_mentions(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))


@cache
def subcommand_parser(name: str) -> argparse.ArgumentParser:
    """``pigbench NAME``'s parser, built as ``pigbench`` builds it."""
    return add_subcommand(argparse.ArgumentParser(prog="pigbench").add_subparsers(), name)


def nested(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {name: child for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name, child in action.choices.items()}


def problems(mention: Mention) -> list[str]:
    """What is wrong with a command line: a subcommand that does not exist, or a flag that the parser
    in effect where it stands does not define (a positional word naming a nested command, ``build
    annotate``, moves on to that command's parser). ``pigbench X`` (a placeholder) is not checked."""
    first = mention.words[0]
    if first.startswith("-"):  # `pigbench --help`
        return [f"{w} (not an option of pigbench)" for w in mention.words if w not in ("-h", "--help")]
    if first not in COMMANDS:
        return [f"no subcommand {first!r}"] if re.fullmatch(r"[a-z][a-z-]*", first) else []
    parser = subcommand_parser(first)
    found = []
    for word in mention.words[1:]:
        word = word.strip("[]")  # `[--out DIR]` in a usage line
        if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", word):
            flag = word.split("=", 1)[0]
            if flag not in parser._option_string_actions:
                found.append(f"{flag} (not an option of {parser.prog})")
        elif word in nested(parser):
            parser = nested(parser)[word]
    return found + unknown_option_keys(mention.words)


def flag_values(words: tuple[str, ...], flag: str) -> list[str]:
    return [value for name, value in zip(words, words[1:]) if name == flag]


def unknown_option_keys(words: tuple[str, ...]) -> list[str]:
    """``--option KEY=V`` keys that are no config field of the built-in evaluator named (``--evaluator
    NAME``, ``check-evaluator NAME``), and ``--dataset-option KEY=V`` keys that the dataset named
    (``--dataset NAME``, ``check-dataset NAME``, ``data info NAME``) does not declare in its
    ``OPTIONS``; names that are not registered (``my-reward``) are not checked."""
    from pigbench.registry import adapters, evaluators

    found = []
    checks = (  # flag naming it, commands naming it by their next word, its option flag, registry, known keys
        ("--evaluator", [("check-evaluator",)], "--option", evaluators,
         lambda cls: {f.name for f in dataclasses.fields(cls.Config)}),
        ("--dataset", [("check-dataset",), ("data", "info")], "--dataset-option", adapters,
         lambda cls: getattr(cls, "OPTIONS", None)),
    )
    for name_flag, commands, option_flag, registry, known_of in checks:
        names = flag_values(words, name_flag) + [words[len(c)] for c in commands
                                                 if words[:len(c)] == c and len(words) > len(c)]
        for name in filter(lambda n: n in registry.names(), names):
            known = known_of(registry.get(name))
            for key in (value.split("=", 1)[0] for value in flag_values(words, option_flag)):
                if known is not None and key not in known:
                    found.append(f"{option_flag} {key}=...: {name} has no option {key!r}")
    return found


ALL_MENTIONS = [m for doc in DOCS for m in doc_mentions(doc)]


def test_the_docs_show_commands_of_every_kind():
    """The extraction itself: block and inline mentions, continuation lines, module and torchrun forms."""
    shown = {" ".join(m.words) for m in ALL_MENTIONS}
    assert "validate results/demo/color-reference.json" in shown  # inline, README
    assert "build annotate invite --count 75 --out invites.csv" in shown  # fenced, trailing comment dropped
    assert any(w.startswith("run --evaluator pickscore --model-path /models/PickScore_v1") and "--dataset-path" in w
               for w in shown)  # a continued line, `python -m pigbench.run`
    assert any(w.startswith("run --evaluator qwen2-vl-judge --dataset pip --device cuda") for w in shown)  # torchrun -m
    assert len(ALL_MENTIONS) > 50


def test_a_renamed_flag_or_subcommand_is_reported_where_it_stands():
    text = ("Run `pigbench run --evaluator x --refs 4` or\n\n```bash\npigbench build annotate invite --count 3 \\\n"
            "    --csv out.csv   # a comment --not-a-flag\npython -m pigbench.run --out r | head --lines 3\n"
            "torchrun --nproc-per-node 2 -m pigbench.validate --strict\npigbench data-info demo\n"
            "pigbench run --evaluator random --dataset demo --option seed=1 --option sed=1 --dataset-option userz=3\n"
            "pigbench data info demo --dataset-option seed=2 --dataset-option sed=2\n```\n")
    mentions = text_mentions(text, "doc.md")
    assert [problems(m) for m in mentions] == [
        ["--csv (not an option of pigbench build annotate invite)"],
        [],
        ["--strict (not an option of pigbench validate)"],
        ["no subcommand 'data-info'"],
        ["--option sed=...: random has no option 'sed'", "--dataset-option userz=...: demo has no option 'userz'"],
        ["--dataset-option sed=...: demo has no option 'sed'"],
        ["--refs (not an option of pigbench run)"],
    ]
    assert [(m.line, m.words[0]) for m in mentions] == [
        (4, "build"), (6, "run"), (7, "validate"), (8, "data-info"), (9, "run"), (10, "data"), (1, "run")]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_in_the_docs_exists_with_the_flags_shown(doc):
    wrong = [f"{mention}: {problem}" for mention in doc_mentions(doc) for problem in problems(mention)]
    assert not wrong, "\n".join(wrong)
