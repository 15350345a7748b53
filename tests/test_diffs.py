"""DiffEvidence from real commits: symbols, tests, asserts, weakening, flags, churn hashes, reverts."""

from __future__ import annotations

import ast
import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.commits import CommitBuilder, backfill
from collectors.diffs import EvidenceExtractor, PythonView, consumed_names, flags_in_line
from collectors.gitlog import LogReader, ObjectReader
from conftest import GitRepo
from monitor.config import Settings, settings_from_dict
from monitor.events import DiffEvidence


def head_evidence(repo: GitRepo, config: Settings | None = None) -> DiffEvidence:
    """The evidence the commit collector extracts for HEAD."""
    config = config or Settings()
    objects = ObjectReader(repo.root)
    try:
        builder = CommitBuilder(config, objects)
        reader = LogReader(repo.root, want_hunks=builder.want_hunks, patch_lines_cap=config.commits.patch_lines_cap)
        (raw,) = list(reader.read([repo.git("rev-parse", "HEAD")]))
        commit, _warnings = builder.build(raw)
        return commit.evidence
    finally:
        objects.close()


ENGINE = textwrap.dedent(
    '''\
    """The engine."""
    import os

    LIMIT = 3


    class Engine:
        """Runs steps.

    Text at column 0 inside a docstring closes nothing.
    """

        scale: float = 1.0

        @property
        def size(self):
            return 1

        def step(self, x):
            def clamp(v):
                return min(v, LIMIT)
            return clamp(x) * self.scale


    def helper(a):
        return a + 1
    '''
)


def test_production_symbols_are_the_enclosing_defs_of_changed_lines(repo: GitRepo) -> None:
    repo.commit("base", {"pkg/engine.py": ENGINE})
    changed = (
        ENGINE.replace("return min(v, LIMIT)", "return max(min(v, LIMIT), 0)")
        .replace("        return 1\n", "        return 2\n")
        .replace("LIMIT = 3", "LIMIT = 4")
        + "\n\ndef added(b):\n    return b * 2\n"
    )
    repo.commit("work", {"pkg/engine.py": changed})
    evidence = head_evidence(repo)
    assert sorted(evidence.symbols_changed) == [
        "pkg/engine.py::Engine.size",
        "pkg/engine.py::Engine.step.clamp",
        "pkg/engine.py::added",
    ]  # LIMIT is module level: no symbol
    assert evidence.ast and evidence.languages == ["python"] and not evidence.truncated


def test_deleted_lines_belong_to_what_enclosed_them(repo: GitRepo) -> None:
    before = "class Engine:\n    def size(self):\n        x = 1\n        return x\n\n    def other(self):\n        return 2\n\n\ndef helper(a):\n    return a\n"
    after = "class Engine:\n    def size(self):\n        x = 1\n\n    def other(self):\n        return 2\n"
    repo.commit("base", {"pkg/engine.py": before})
    repo.commit("delete", {"pkg/engine.py": after})
    assert sorted(head_evidence(repo).symbols_changed) == ["pkg/engine.py::Engine.size", "pkg/engine.py::helper"]


def test_a_docstring_at_column_zero_stays_inside_its_class(repo: GitRepo) -> None:
    repo.commit("base", {"pkg/engine.py": ENGINE})
    repo.commit("doc", {"pkg/engine.py": ENGINE.replace("Text at column 0", "Some text at column 0")})
    assert head_evidence(repo).symbols_changed == ["pkg/engine.py::Engine"]


def test_new_tests_their_asserts_and_what_they_reference(repo: GitRepo) -> None:
    repo.commit("base", {"pkg/engine.py": ENGINE, "tests/test_engine.py": "from pkg.engine import Engine\n"})
    test_file = textwrap.dedent(
        """\
        from pkg.engine import Engine, helper


        class TestEngine:
            def test_step_scales(self):
                engine = Engine()
                assert engine.step(2) == 2
                assert helper(1) == 2
        """
    )
    repo.commit("test", {"tests/test_engine.py": test_file})
    evidence = head_evidence(repo)
    assert evidence.test_functions == ["tests/test_engine.py::TestEngine.test_step_scales"]
    assert evidence.asserts_added == 2 and evidence.asserts_removed == 0 and evidence.test_weakening == 0
    assert {"Engine", "helper", "step", "engine"} <= set(evidence.test_references)
    assert "assert" not in evidence.test_references and "self" not in evidence.test_references
    assert evidence.symbols_changed == []  # test files feed tests, not symbols


def test_weakened_tests_are_counted(repo: GitRepo) -> None:
    strict = textwrap.dedent(
        """\
        import numpy as np


        def test_close():
            np.testing.assert_allclose(run(), 1.0, rtol=1e-6)
            assert run() > 0
            assert ok()


        def test_other():
            assert other()
        """
    )
    loose = textwrap.dedent(
        """\
        import numpy as np
        import pytest


        def test_close():
            np.testing.assert_allclose(run(), 1.0, rtol=1e-2)
            assert run() > 0


        @pytest.mark.skip(reason="flaky")
        def test_other():
            assert other()
        """
    )
    repo.commit("strict", {"tests/test_num.py": strict})
    repo.commit("loosen", {"tests/test_num.py": loose})
    evidence = head_evidence(repo)
    # rtol loosened (1), `assert ok()` removed for good (1), a skip added (1).
    assert evidence.test_weakening == 3
    assert evidence.asserts_removed == 2 and evidence.asserts_added == 1
    tightened = loose.replace("rtol=1e-2", "rtol=1e-9")
    repo.commit("tighten", {"tests/test_num.py": tightened})
    assert head_evidence(repo).test_weakening == 0


def test_flags_added_and_whether_they_are_consumed(repo: GitRepo) -> None:
    repo.commit("base", {"scripts/train.py": "import argparse\n\nparser = argparse.ArgumentParser()\n"})
    repo.commit(
        "flags",
        {
            "scripts/train.py": textwrap.dedent(
                """\
                import argparse

                parser = argparse.ArgumentParser()
                parser.add_argument("--backend", choices=["tf", "torch"])
                parser.add_argument("-n", "--num-workers", type=int)
                parser.add_argument("--lr", dest="learning_rate", type=float)
                args = parser.parse_args()
                run(backend=args.backend, lr=args.learning_rate)
                """
            )
        },
    )
    evidence = head_evidence(repo)
    assert evidence.flags_added == ["backend", "num_workers", "learning_rate"]
    assert evidence.flags_consumed == ["backend", "learning_rate"]


def test_config_fields_count_as_flags_and_reads_elsewhere_consume_them(repo: GitRepo) -> None:
    config = textwrap.dedent(
        """\
        from dataclasses import dataclass


        @dataclass
        class TrainingConfig:
            epochs: int = 1
        """
    )
    repo.commit("base", {"ptycho/config/config.py": config, "ptycho/raw_data.py": "def load(cfg):\n    return cfg.epochs\n"})
    repo.commit(
        "oversampling",
        {
            "ptycho/config/config.py": config + "    enable_oversampling: bool = False\n    neighbor_pool_size: int = 4\n",
            "ptycho/raw_data.py": "def load(cfg):\n    if cfg.enable_oversampling:\n        return cfg.epochs\n    return 0\n",
        },
    )
    evidence = head_evidence(repo)
    assert evidence.flags_added == ["enable_oversampling", "neighbor_pool_size"]
    # Reads through config-like names in added lines count whichever commit added the
    # field (`epochs` is older): the scorer joins flags and reads over an iteration.
    assert evidence.flags_consumed == ["enable_oversampling", "epochs"]


def test_a_flag_read_in_an_untouched_part_of_the_file_is_consumed(repo: GitRepo) -> None:
    repo.commit("base", {"cli.py": "import click\n\n\ndef main(lr):\n    train(opts.lr)\n"})
    repo.commit("option", {"cli.py": 'import click\n\n\n@click.option("--lr", type=float)\ndef main(lr):\n    train(opts.lr)\n'})
    evidence = head_evidence(repo)
    assert evidence.flags_added == ["lr"] and evidence.flags_consumed == ["lr"]


def test_a_revert_undoes_the_hashes_of_the_commit_it_reverts(repo: GitRepo) -> None:
    repo.commit("base", {"pkg/m.py": "def f(x):\n    return x\n"})
    repo.commit("change", {"pkg/m.py": "def f(x):\n    y = compute_something(x)\n    return y * 2\n"})
    change = head_evidence(repo)
    original = repo.git("rev-parse", "HEAD")
    repo.git("revert", "--no-edit", "HEAD")
    revert = head_evidence(repo)
    assert revert.revert_of == original
    assert set(revert.removed_hashes) == set(change.added_hashes)
    assert set(revert.added_hashes) == set(change.removed_hashes)
    assert change.added_hashes  # blank and trivial lines are skipped, real code is not


def test_other_languages_use_git_function_context(repo: GitRepo) -> None:
    go = "package main\n\nfunc Compute(x int) int {\n\ty := x\n\treturn y\n}\n"
    js_test = "describe('calc', () => {\n});\n"
    repo.commit("base", {"calc/calc.go": go, "web/calc.test.js": js_test})
    repo.commit(
        "work",
        {
            "calc/calc.go": go.replace("\treturn y\n", "\ty += 1\n\treturn y\n"),
            "web/calc.test.js": "describe('calc', () => {\n  it('adds one', () => {\n    expect(add(1)).toBe(2);\n  });\n});\n",
        },
    )
    evidence = head_evidence(repo)
    assert evidence.symbols_changed == ["calc/calc.go::Compute"]
    assert evidence.test_functions == ["web/calc.test.js::adds one"]
    assert evidence.asserts_added == 1
    assert evidence.languages == ["go", "javascript"] and not evidence.ast


def test_only_production_and_test_files_feed_the_evidence(repo: GitRepo) -> None:
    repo.commit(
        "bookkeeping",
        {
            "plans/active/X-1/reports/2025-01-01T000000Z/check.py": "def probe():\n    assert True\n",
            "docs/fix_plan.md": "- [X-1] item\n",
            "sync/state.json": '{"iteration": 3}\n',
        },
    )
    assert head_evidence(repo) == DiffEvidence()


def test_big_files_and_long_diffs_are_marked_truncated(repo: GitRepo) -> None:
    big = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(2000))
    repo.commit("base", {"pkg/big.py": big})
    repo.commit("edit", {"pkg/big.py": big.replace("return x + 1999", "return x - 1999")})
    small_cap = settings_from_dict({"commits": {"ast_max_bytes": 1000}})
    capped = head_evidence(repo, small_cap)
    assert capped.truncated and not capped.ast
    full = head_evidence(repo)
    assert full.symbols_changed == ["pkg/big.py::f1999"] and not full.truncated
    line_cap = settings_from_dict({"commits": {"patch_lines_cap": 0}})
    assert head_evidence(repo, line_cap).truncated


def test_undecodable_bytes_in_a_python_file_do_not_stop_the_evidence(repo: GitRepo) -> None:
    repo.commit("base", {"pkg/latin.py": b"def f():\n    return '\xe9'\n"})
    repo.commit("edit", {"pkg/latin.py": b"def f():\n    return '\xe9\xe8'\n"})
    assert head_evidence(repo).symbols_changed == ["pkg/latin.py::f"]


def test_flag_lines_and_reads() -> None:
    assert flags_in_line('    p.add_argument("--accumulate-grad-batches", type=int)') == ["accumulate_grad_batches"]
    assert flags_in_line("parser.add_argument('input')") == ["input"]
    assert flags_in_line('@click.option("-v", "--verbose", is_flag=True)') == ["verbose"]
    assert flags_in_line("x = add(1)") == []
    text = 'if getattr(ns, "mode"):\n    cfg["depth"]\n    self.width = 3\n'
    assert consumed_names(text, ["mode", "depth", "width", "absent"]) == {"mode", "depth"}


# --------------------------------------------------------------------------- the outline against ast


@st.composite
def python_blocks(draw: st.DrawFn, depth: int = 0, counter: list[int] | None = None) -> list[str]:
    """Random but valid Python: defs, classes, ifs, decorators, docstrings at column 0."""
    counter = counter if counter is not None else [0]
    lines: list[str] = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        counter[0] += 1
        kind = draw(st.sampled_from(["stmt", "def", "class", "if", "string"] if depth < 3 else ["stmt", "string"]))
        name = f"n{counter[0]}"
        if kind == "stmt":
            lines.append(f"{name} = ({counter[0]},\n    {counter[0]})" if draw(st.booleans()) else f"{name} = 1")
        elif kind == "string":
            lines.append(f'{name} = """\ntext at col 0 def fake():\n"""')
        else:
            header = {"def": f"def {name}(a,\n        b):", "class": f"class {name}:", "if": f"if {name}:"}[kind]
            if kind != "if" and draw(st.booleans()):
                header = f"@decorate\n{header}"
            body = draw(python_blocks(depth + 1, counter))
            lines.append(header)
            lines.extend("    " + line if line and not line.startswith(("text at", '"""')) else line for line in "\n".join(body).split("\n"))
            if draw(st.booleans()):
                lines.append("")
    return lines


def ast_scopes(source: str) -> dict[int, str]:
    """Innermost def/class qualname of every line, according to ast."""
    owner: dict[int, str] = {}

    def visit(nodes: list, prefix: str) -> None:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                qual = prefix + node.name
                start = min([d.lineno for d in node.decorator_list] + [node.lineno])
                for line in range(start, (node.end_lineno or node.lineno) + 1):
                    owner[line] = qual
                visit(node.body, qual + ".")
            elif isinstance(node, ast.If):
                visit(node.body, prefix)

    visit(ast.parse(source).body, "")
    return owner


@settings(max_examples=150, deadline=None)
@given(python_blocks(), st.integers(min_value=1, max_value=200))
def test_the_outline_agrees_with_ast_on_every_code_line(lines: list[str], cut: int) -> None:
    source = "\n".join(lines) + "\n"
    expected = ast_scopes(source)
    view = PythonView(source)
    partial = PythonView(source, upto=cut)  # reads only what line `cut` needs
    for number, text in enumerate(source.split("\n"), start=1):
        if not text.strip():
            continue
        chain = view.chain(number)
        got = chain[-1].qualname if chain else None
        assert got == expected.get(number), (number, text, source)
        if number <= cut:
            chain = partial.chain(number)
            assert (chain[-1].qualname if chain else None) == got


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.integers(min_value=-3, max_value=400))
def test_the_outline_takes_any_text(source: str, line: int) -> None:
    view = PythonView(source)
    view.chain(line)
    view.chains_in(line, line + 5)


@settings(max_examples=150, deadline=None)
@given(python_blocks(), python_blocks(), st.data())
def test_an_outline_carried_over_from_the_previous_version_matches_a_fresh_one(
    before: list[str], inserted: list[str], data: st.DataObject
) -> None:
    old_lines = "\n".join(before).split("\n")
    at = data.draw(st.integers(min_value=0, max_value=len(old_lines)))
    removed = data.draw(st.integers(min_value=0, max_value=len(old_lines) - at))
    new_lines = old_lines[:at] + "\n".join(inserted).split("\n") + old_lines[at + removed :]
    old_source, new_source = "\n".join(old_lines) + "\n", "\n".join(new_lines) + "\n"
    upto = data.draw(st.one_of(st.none(), st.integers(min_value=at, max_value=at + 40)))
    base = PythonView(old_source, upto=data.draw(st.one_of(st.none(), st.integers(min_value=at, max_value=at + 40))))
    carried = PythonView(new_source, upto=upto, base=base, same_before=at + 1)
    fresh = PythonView(new_source, upto=upto)
    shape = lambda view: [(s.line, s.start, s.indent, s.kind, s.name) for s in view.scopes]  # noqa: E731
    assert shape(carried) == shape(fresh)
    for number in range(1, (upto or len(new_lines)) + 1):
        assert [s.qualname for s in carried.chain(number)] == [s.qualname for s in fresh.chain(number)]


def test_the_evidence_is_the_same_with_and_without_carried_outlines(repo: GitRepo, monkeypatch) -> None:
    body = ENGINE
    for i in range(6):
        body = body.replace("    def step(self, x):", f"    def step_{i}(self):\n        return {i}\n\n    def step(self, x):")
        body += f"\n\ndef extra_{i}():\n    return {i}\n"
        repo.commit(f"c{i}", {"pkg/engine.py": body})

    def symbols(kept: int) -> list[list[str]]:
        monkeypatch.setattr(EvidenceExtractor, "OUTLINES_KEPT", kept)
        events: list[list[str]] = []
        backfill(repo.root, Settings(), lambda payload, _time: events.append(payload.evidence.symbols_changed))
        return events

    carried, fresh = symbols(256), symbols(0)
    assert carried == fresh
    assert carried[-1] == ["pkg/engine.py::Engine.step_5", "pkg/engine.py::extra_5"]
