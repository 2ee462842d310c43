"""Packaging: the core needs only torch, numpy and scipy; everything else is an extra, and a
missing extra is a clear error at use, not at ``import smto``."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "smto"
CORE = {"torch", "numpy", "scipy"}
# The optional packages (and the extra that installs each).
OPTIONAL = {
    "pandas": "bench",
    "tqdm": "bench",
    "PIL": "vision",
    "matplotlib": "plots",
    "optuna": "sweep",
    "sqlalchemy": "sweep",
    "psycopg2": "sweep",
    "torch_geometric": "graph",
    "rdkit": "qm9",
    "qm9pack": "qm9",
    "torchjd": "test",
}


def _pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower().replace("_", "-")


def _extra_packages(extras: dict[str, list[str]], extra: str) -> set[str]:
    """The packages an extra installs, following ``smto[...]`` references."""
    names: set[str] = set()
    for requirement in extras[extra]:
        if _name(requirement) == "smto":
            for inner in re.search(r"\[(.*)\]", requirement).group(1).split(","):
                names |= _extra_packages(extras, inner.strip())
        else:
            names.add(_name(requirement))
    return names


def test_the_core_dependencies_are_torch_numpy_scipy_and_torch_is_a_range():
    project = _pyproject()["project"]
    dependencies = project["dependencies"]
    assert {_name(r) for r in dependencies} == CORE
    (torch,) = [r for r in dependencies if _name(r) == "torch"]
    assert "==" not in torch and "===" not in torch, f"torch is pinned: {torch!r}"
    assert ">=" in torch, f"torch needs a lower bound: {torch!r}"


def test_the_extras_install_what_the_optional_code_needs():
    extras = _pyproject()["project"]["optional-dependencies"]
    assert {"pandas", "tqdm"} <= _extra_packages(extras, "bench")
    assert "optuna" in _extra_packages(extras, "sweep")
    assert {"rdkit", "qm9pack", "torch-geometric"} <= _extra_packages(extras, "qm9")
    for extra in ("test", "dev"):  # what scripts/env.sh installs
        assert {"pandas", "tqdm", "optuna", "matplotlib", "rdkit", "qm9pack"} <= _extra_packages(
            extras, extra
        )


def test_the_tested_torch_is_in_the_declared_range():
    specifiers = pytest.importorskip("packaging.specifiers")
    (torch,) = [r for r in _pyproject()["project"]["dependencies"] if _name(r) == "torch"]
    pins = (ROOT / "requirements" / "constraints.txt").read_text()
    pinned = re.search(r"^torch==(\S+)$", pins, re.MULTILINE).group(1)
    assert pinned in specifiers.SpecifierSet(torch[len("torch") :]), (pinned, torch)


def _module_level_imports(tree: ast.Module):
    """Imports run when the module is imported: not in a function or class body, not under
    ``if TYPE_CHECKING``."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            test = node.test
            guarded = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
            )
            if not guarded:
                todo += node.body
            todo += node.orelse
        elif isinstance(node, (ast.Try, ast.With)):
            todo += node.body
            for handler in getattr(node, "handlers", []):
                todo += handler.body
            todo += getattr(node, "orelse", []) + getattr(node, "finalbody", [])


def test_no_module_imports_an_optional_package_at_import_time():
    """Optional packages are imported where they are used, through smto._optional.require
    (or under TYPE_CHECKING), so importing any module of smto never fails for want of one."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in _module_level_imports(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for name in names:
                if name.partition(".")[0] in OPTIONAL:
                    found.append(f"{path.relative_to(SRC.parent)}:{node.lineno} imports {name}")
    assert not found, "module-level imports of optional packages:\n" + "\n".join(found)


# Runs in a fresh interpreter in which the optional packages cannot be imported: every finder
# of sys.meta_path is wrapped so that it finds none of them, as if they were not installed.
PROBE = textwrap.dedent(
    """
    import json, sys, tempfile

    BLOCKED = set(sys.argv[1].split(","))

    class Hide:
        # A finder of sys.meta_path that does not see the blocked packages. (Raising instead
        # would break code that asks importlib.util.find_spec whether a package exists.)

        def __init__(self, finder):
            self.finder = finder

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                return None
            return self.finder.find_spec(name, path, target)

        def __getattr__(self, name):
            return getattr(self.finder, name)

    sys.meta_path[:] = [Hide(finder) for finder in sys.meta_path]
    results = {}

    def probe(key, action):
        try:
            action()
            results[key] = None
        except Exception as error:
            results[key] = f"{type(error).__name__}: {error}"

    import smto

    def core():
        import smto.methods, smto.train, smto.problems, smto.evaluation, smto.report
        for name in smto.available():
            smto.create(name, n_tasks=2)
        smto.create("nash_mtl", n_tasks=2)
        from smto.train import RunConfig, train
        config = RunConfig(problem="toy_regression", tasks="T1_T2", method="cagrad", epochs=1)
        with tempfile.TemporaryDirectory() as root:
            assert train(config, root).status == "completed"

    def train_progress():
        from smto.train import RunConfig, train
        config = RunConfig(problem="toy_regression", tasks="T1_T2", epochs=1)
        with tempfile.TemporaryDirectory() as root:
            train(config, root, progress=True)

    def figures():
        from pathlib import Path
        from smto.report import figures

        class Frame:  # what the figure checks before drawing (pandas is blocked too)
            columns = ["method", "delta_m"]
            empty = False

        with tempfile.TemporaryDirectory() as root:
            figures.delta_m_boxplot(Frame(), Path(root) / "box")

    def sweep_storage():
        from smto.sweep.storage import require_optuna
        require_optuna()

    def mpnn():
        from smto.models.mpnn import qm9_mpnn
        qm9_mpnn(implementation="pyg")

    def fast_mpnn():
        from smto.data.molecules import random_molecules
        from smto.models.mpnn import qm9_mpnn
        qm9_mpnn()(random_molecules(3, (2, 5)))

    def qm9_build():
        from smto.data.qm9 import build_from_qm9pack
        build_from_qm9pack(limit=1)

    def load_runs():
        from smto.train import load_runs
        with tempfile.TemporaryDirectory() as root:
            load_runs(root)

    probe("core", core)
    probe("smto.evaluation.report", lambda: __import__("smto.evaluation.report"))
    probe("smto.report.tables", lambda: __import__("smto.report.tables"))
    probe("smto.report.Table", lambda: __import__("smto.report", fromlist=["Table"]).Table)
    probe("load_runs", load_runs)
    probe("qm9 build", qm9_build)

    import contextlib, io
    from smto.cli import main
    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        code = main(["bench", "step", "--models", "mpnn_pyg", "--methods", "unit_scal"])
    results["cli"] = [code, said.getvalue()]
    probe("train progress", train_progress)
    probe("figures", figures)
    probe("sweep", sweep_storage)
    probe("mpnn", mpnn)
    probe("fast mpnn", fast_mpnn)
    print(json.dumps(results))
    """
)
BLOCKED = (
    "pandas", "tqdm", "PIL", "matplotlib", "optuna", "psycopg2", "torch_geometric", "rdkit",
    "qm9pack",
)  # fmt: skip


@pytest.fixture(scope="module")
def without_extras() -> dict[str, str | None]:
    """What each probe of PROBE raised (None: it worked) with the optional packages blocked."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(BLOCKED)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_library_works_with_only_torch_numpy_and_scipy(without_extras):
    """import smto and its packages, create every method, train a short run."""
    assert without_extras["core"] is None, without_extras["core"]


def test_the_fast_mpnn_needs_no_torch_geometric(without_extras):
    """qm9_mpnn's default (the dense encoder) builds and runs without the graph extra."""
    assert without_extras["fast mpnn"] is None, without_extras["fast mpnn"]


def test_the_command_line_says_a_missing_extra_in_one_line(without_extras):
    code, said = without_extras["cli"]
    assert code == 2
    assert said.startswith("smto: error: ") and said.count("\n") == 1, said
    assert "pip install 'smto[graph]'" in said, said


@pytest.mark.parametrize(
    ("probe", "extra"),
    [
        ("smto.evaluation.report", "bench"),
        ("smto.report.tables", "bench"),
        ("smto.report.Table", "bench"),
        ("load_runs", "bench"),
        ("train progress", "bench"),
        ("figures", "plots"),
        ("sweep", "sweep"),
        ("qm9 build", "qm9"),
        ("mpnn", "graph"),
    ],
)
def test_a_missing_extra_is_a_clear_error(without_extras, probe, extra):
    error = without_extras[probe]
    assert error is not None, f"{probe} worked without its extra"
    assert error.startswith("MissingExtraError: "), error
    assert f"pip install 'smto[{extra}]'" in error, error
