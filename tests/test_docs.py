"""The documentation: the methods table comes from the registry and lists every method, the
datasets page covers every problem, docstring references and missing docstrings are caught,
and ``mkdocs build --strict`` passes (when mkdocs is installed: the ``docs`` extra)."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import smto
from smto.problems import PROBLEMS

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ROOT / "docs" / "hooks"
NO_DOCS = "the docs extra is not installed (pip install -e '.[docs]', part of dev)"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hook():
    return _load("smto_docs_hook", HOOKS / "smto_docs.py")


def test_the_methods_table_lists_every_registered_method(hook):
    rows = hook.method_rows()
    assert [row["name"] for row in rows] == smto.available()
    table = hook.methods_table().splitlines()
    assert len(table) == 2 + len(smto.available())
    for name, line in zip(smto.available(), table[2:]):
        spec = smto.spec(name)
        assert line.startswith(f"| [`{name}`][{spec.cls.__module__}.{spec.cls.__qualname__}] ")
        assert f" {spec.display_name} " in line
        for hyperparameter in spec.hyperparameters.values():
            assert f"`{hyperparameter.name}={hyperparameter.default!r}`" in line


def test_every_method_has_a_paper_reference(hook):
    for row in hook.method_rows():
        assert row["reference"], f"{row['name']}: its module docstring has no reference line"
        assert hook.CITATION.search(row["reference"]), (row["name"], row["reference"])


def test_the_reference_is_the_citation_without_the_code_it_names(hook):
    doc = textwrap.dedent(
        """\
        X: a method.

        Doe, Roe et al., "A Method", NeurIPS 2020 (arXiv 2001.00001), eq. 3. Reference code:
        github.com/doe/x (``x.py``). Details follow its code.

        More text.
        """
    )
    assert hook.paper_reference(doc) == (
        'Doe, Roe et al., "A Method", NeurIPS 2020 (arXiv 2001.00001), eq. 3.'
    )
    assert hook.paper_reference("Only a summary.") == ""
    assert "[arXiv 2001.00001](https://arxiv.org/abs/2001.00001)" in hook._linked(
        hook.paper_reference(doc)
    )


def test_the_methods_page_is_generated_from_markers(hook):
    page = (ROOT / "docs" / "reference" / "methods.md").read_text()
    assert hook.MARKER in page and hook.CLASSES_MARKER in page
    assert "::: smto.methods." not in page, "method modules are listed by the hook, not by hand"
    modules = hook.method_modules()
    assert {smto.spec(n).cls.__module__ for n in smto.available()} == set(modules)


def test_the_datasets_page_covers_every_problem():
    page = (ROOT / "docs" / "datasets.md").read_text()
    for name in PROBLEMS:
        assert f"(exists: `{name}`)" in page, f"docs/datasets.md has no section on {name}"


@pytest.fixture
def griffe_ext():
    pytest.importorskip("griffe", reason=NO_DOCS)
    return _load("smto_docs_griffe_test", HOOKS / "griffe_smto.py")


def test_roles_become_cross_references_and_a_dangling_one_is_a_warning(
    griffe_ext, tmp_path, caplog
):
    import griffe

    package = tmp_path / "smto"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            '''\
            """The package."""


            class Base:
                """A base; see :meth:`run` and :func:`~smto.helper`."""

                def run(self) -> None:
                    """Runs."""


            class Child(Base):
                """Uses :class:`Base` and :func:`nowhere`."""

                def run(self) -> None:
                    pass


            def helper() -> None:
                """Helps."""
            '''
        )
    )
    extensions = griffe.load_extensions(griffe_ext.SmtoDocstrings())
    with caplog.at_level(logging.WARNING, logger="mkdocs.plugins.smto_docs"):
        pkg = griffe.load("smto", search_paths=[str(tmp_path)], extensions=extensions)
    base = pkg["Base"].docstring.value
    assert '<autoref identifier="smto.Base.run" optional><code>run</code></autoref>' in base
    assert '<autoref identifier="smto.helper" optional><code>helper</code></autoref>' in base
    assert "`nowhere`" in pkg["Child"].docstring.value
    assert [r.getMessage() for r in caplog.records] == [
        "smto.Child: the docstring's reference :func:`nowhere` names no object"
    ]
    # The override without a docstring inherits its base's.
    assert pkg["Child"].members["run"].docstring.value == "Runs."
    assert list(griffe_ext.missing_docstrings(pkg)) == []


def test_public_names_without_a_docstring_are_found(griffe_ext, tmp_path):
    import griffe

    package = tmp_path / "smto"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            '''\
            """The package."""

            __all__ = ["Shown", "shown"]


            class Shown:
                """Documented."""

                def method(self) -> None:
                    pass

                @property
                def value(self) -> int:
                    return 1

                def _private(self) -> None:
                    pass


            def shown() -> None:
                pass


            def not_exported() -> None:
                pass
            '''
        )
    )
    extensions = griffe.load_extensions(griffe_ext.SmtoDocstrings(warn=False))
    pkg = griffe.load("smto", search_paths=[str(tmp_path)], extensions=extensions)
    assert sorted(griffe_ext.missing_docstrings(pkg)) == [
        "smto.Shown.method",
        "smto.Shown.value",
        "smto.shown",
    ]


def test_undocumented_overrides_of_torch_are_hidden_not_missing(griffe_ext, tmp_path):
    import griffe

    package = tmp_path / "smto"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            '''\
            """The package."""

            from torch import nn


            class Encoder(nn.Module):
                """An encoder."""

                def forward(self, x):
                    return x
            '''
        )
    )
    extensions = griffe.load_extensions(griffe_ext.SmtoDocstrings(warn=False))
    pkg = griffe.load("smto", search_paths=[str(tmp_path)], extensions=extensions)
    assert not pkg["Encoder"].members["forward"].is_public
    assert list(griffe_ext.missing_docstrings(pkg)) == []


@pytest.mark.slow
def test_the_docs_build_with_warnings_as_errors(tmp_path):
    """The CI step (scripts/docs.sh) in a test: a broken cross-reference, a docstring
    reference to nothing, or a public name without a docstring fails."""
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason=NO_DOCS)
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    page = (site / "reference" / "methods" / "index.html").read_text()
    for name in smto.available():
        assert f"<code>{name}</code>" in page
