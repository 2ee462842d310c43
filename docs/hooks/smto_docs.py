"""The mkdocs hook of smto's documentation (``hooks:`` in mkdocs.yml).

* The methods table of ``reference/methods.md`` and the reference of each method's module
  are generated at build time from the registry (:func:`methods_table`,
  :func:`method_modules`), so they cannot drift from the code: the page holds only the
  markers ``<!-- smto:methods-table -->`` and ``<!-- smto:methods-modules -->``.
* Every ``::: identifier`` block is checked for public objects without a docstring
  (``griffe_smto.missing_docstrings``); each is a warning, so ``mkdocs build --strict``
  fails on it.

``python docs/hooks/smto_docs.py`` prints the table (run from the repository root).
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

log = logging.getLogger("mkdocs.plugins.smto_docs")

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- smto:methods-table -->"
CLASSES_MARKER = "<!-- smto:methods-modules -->"
METHODS_PAGE = "reference/methods.md"
BLOCK = re.compile(r"^:::\s+([\w.]+)\s*$", re.MULTILINE)
ARXIV = re.compile(r"arXiv[ :]?(\d{4}\.\d{4,5})")
OPENREVIEW = re.compile(r"openreview ([\w-]+)")
# A sentence ends at ". " before a capital, except after "et al." or "eq.".
SENTENCE_END = re.compile(r"(?<!\bal)(?<!\beq)\.\s+(?=[A-Z])")
CITATION = re.compile(r"arXiv|openreview|\b(?:19|20)\d\d\b")


def _griffe_smto() -> ModuleType:
    name = "smto_docs_griffe"
    if name not in sys.modules:
        path = Path(__file__).with_name("griffe_smto.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _import_smto() -> ModuleType:
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    import smto

    return smto


def paper_reference(module_doc: str | None) -> str:
    """The paper reference of a method: the second paragraph of its module's docstring (the
    first is its one-line summary), up to the end of the first sentence that cites (a year,
    an arXiv or openreview id); what follows (reference code, details) is left out."""
    paragraphs = [p for p in (module_doc or "").strip().split("\n\n") if p.strip()]
    if len(paragraphs) < 2:
        return ""
    kept = []
    for sentence in SENTENCE_END.split(" ".join(paragraphs[1].split())):
        kept.append(sentence.rstrip("."))
        if CITATION.search(sentence):
            break
    return ". ".join(kept) + "."


def _linked(reference: str) -> str:
    reference = reference.replace("|", "\\|")
    reference = ARXIV.sub(lambda m: f"[arXiv {m[1]}](https://arxiv.org/abs/{m[1]})", reference)
    return OPENREVIEW.sub(
        lambda m: f"[openreview {m[1]}](https://openreview.net/forum?id={m[1]})", reference
    )


def _cell(value: object) -> str:
    return repr(value).replace("|", "\\|")


@cache
def method_rows() -> list[dict[str, str]]:
    """One row per registered method (``smto.available()``): name, display name, class path,
    paper reference, space, scale, and its hyperparameters with their defaults."""
    smto = _import_smto()
    from smto import registry

    rows = []
    for name in smto.available():
        spec = registry.spec(name)
        method = registry.create(name, max(2, spec.cls.min_tasks))
        module = sys.modules[spec.cls.__module__]
        rows.append(
            {
                "name": name,
                "display_name": spec.display_name,
                "class": f"{spec.cls.__module__}.{spec.cls.__qualname__}",
                "reference": paper_reference(module.__doc__),
                "space": method.space.value,
                "scale": method.scale.value,
                "hyperparameters": ", ".join(
                    f"`{h.name}={_cell(h.default)}`" for h in spec.hyperparameters.values()
                ),
            }
        )
    return rows


def methods_table() -> str:
    """The Markdown table of every registered method (the methods page's table)."""
    lines = [
        "| name | method | paper | space | scale | hyperparameters (defaults) |",
        "|---|---|---|---|---|---|",
    ]
    for row in method_rows():
        lines.append(
            f"| [`{row['name']}`][{row['class']}] | {row['display_name']} "
            f"| {_linked(row['reference']) or '(none)'} | {row['space']} | {row['scale']} "
            f"| {row['hyperparameters'] or 'none'} |"
        )
    return "\n".join(lines)


@cache
def _collection():
    import griffe

    extension = _griffe_smto().SmtoDocstrings(warn=False)
    return griffe.load(
        "smto",
        search_paths=[str(ROOT / "src")],
        extensions=griffe.load_extensions(extension),
        resolve_aliases=True,
    )


def undocumented(identifier: str) -> list[str]:
    """The public objects a ``::: identifier`` block renders without a docstring."""
    package = _collection()
    obj = package if identifier == "smto" else package[identifier.removeprefix("smto.")]
    return sorted(set(_griffe_smto().missing_docstrings(obj)))


def method_modules() -> list[str]:
    """The modules of the registered methods, in registry order, each once."""
    modules = [row["class"].rsplit(".", 1)[0] for row in method_rows()]
    return list(dict.fromkeys(modules))


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri == METHODS_PAGE:
        for marker in (MARKER, CLASSES_MARKER):
            if marker not in markdown:
                log.warning("%s: the marker %s is missing", METHODS_PAGE, marker)
        blocks = "\n\n".join(f"::: {module}" for module in method_modules())
        markdown = markdown.replace(MARKER, methods_table()).replace(CLASSES_MARKER, blocks)
    for identifier in BLOCK.findall(markdown):
        for path in undocumented(identifier):
            log.warning("%s: %s has no docstring", page.file.src_uri, path)
    return markdown


if __name__ == "__main__":
    print(methods_table())
