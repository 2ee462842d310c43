"""A Griffe extension for smto's API reference (loaded by mkdocstrings, see mkdocs.yml).

smto's docstrings are Markdown with reST-style roles (``:class:`GramMethod```,
``:func:`~smto.train.train```). This extension, once the package is loaded:

1. turns every role into a cross-reference to the object it names, resolved as Sphinx
   would: in the class, then the module and its parents, then as an absolute path. A role
   that names nothing is a warning, so ``mkdocs build --strict`` fails on it (a renamed
   function, a typo). A role that names an object the reference does not render (a private
   helper) stays plain code. reST's ``::`` before a literal block becomes ``:``;
2. gives a method without a docstring the docstring of the method it overrides in an smto
   base class (``terms``, ``weigh``, ``batches``: the interface documents them once);
3. hides the undocumented overrides of torch's protocol (``forward``, ``get_extra_state``,
   ``step``), which torch documents, and every member whose name starts with ``_``
   (``__init__`` still documents the class through ``merge_init_into_class``).

``missing_docstrings`` lists the public objects the reference renders without a docstring;
the mkdocs hook (``smto_docs.py``) turns them into warnings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import griffe

log = logging.getLogger("mkdocs.plugins.smto_docs")

PACKAGE = "smto"
ROLE = re.compile(r":(?:py:)?(class|func|meth|attr|mod|data|exc|obj):`(~?)([^`<>]+)`")
# reST's literal-block marker ("In a training loop::" before an indented block): in Markdown
# the indented block is already code, and the marker is one colon.
LITERAL_MARKER = re.compile(r"(?<=\S)::(?=\n\s*\n)")


def _members(obj: griffe.Object | griffe.Alias) -> dict:
    if obj.is_class:
        try:
            return obj.all_members  # inherited ones too
        except griffe.AliasResolutionError:  # pragma: no cover - an external base
            return obj.members
    return obj.members


def _walk(start: griffe.Object | griffe.Alias, dotted: str) -> griffe.Object | None:
    current: griffe.Object | griffe.Alias = start
    for part in dotted.split("."):
        members = _members(current)
        if part not in members:
            return None
        current = members[part]
        if current.is_alias:
            try:
                current = current.final_target
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                return None  # an object of another package (torch, numpy)
    return current  # type: ignore[return-value]


def resolve(owner: griffe.Object, name: str) -> griffe.Object | None:
    """The object ``name`` refers to in the docstring of ``owner`` (None if nothing)."""
    scope: griffe.Object | None = owner if (owner.is_class or owner.is_module) else owner.parent
    while scope is not None:
        found = _walk(scope, name)
        if found is not None:
            return found
        scope = scope.parent
    root_name, _, rest = name.partition(".")
    collection = owner.modules_collection
    if root_name in collection.members:
        root = collection.members[root_name]
        return root if not rest else _walk(root, rest)
    return None


def _cross_reference(owner: griffe.Object, match: re.Match[str], warn: bool = True) -> str:
    _role, tilde, name = match.groups()
    name = name.strip()
    text = name.rsplit(".", 1)[-1] if tilde else name
    target = resolve(owner, name)
    if target is None:
        if warn:
            log.warning(
                "%s: the docstring's reference %s names no object", owner.path, match.group(0)
            )
        return f"`{text}`"
    # Optional: an object that exists but is not rendered (private) stays plain code.
    return f'<autoref identifier="{target.path}" optional><code>{text}</code></autoref>'


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


def _torch_based(cls: griffe.Class) -> bool:
    """Whether ``cls`` or one of its smto bases derives from a torch class."""
    for klass in (cls, *_mro(cls)):
        for base in klass.bases:
            if getattr(base, "canonical_path", str(base)).startswith("torch."):
                return True
    return False


def _mro(cls: griffe.Class) -> list[griffe.Class]:
    try:
        return cls.mro()
    except (griffe.AliasResolutionError, ValueError):
        return []


class SmtoDocstrings(griffe.Extension):
    """Cross-references from roles, inherited docstrings, hidden protocol overrides.

    Args:
        warn: whether a role that names no object is a warning (the mkdocs hook loads the
            package a second time, quietly, to find missing docstrings).
    """

    def __init__(self, warn: bool = True) -> None:
        super().__init__()
        self.warn = warn

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        if pkg.name != PACKAGE:
            return
        everything = list(_objects(pkg))
        for obj in everything:
            if obj.docstring is not None:
                obj.docstring.value = LITERAL_MARKER.sub(":", obj.docstring.value)
            if obj.docstring is not None and ROLE.search(obj.docstring.value):
                obj.docstring.value = ROLE.sub(
                    lambda m, o=obj: _cross_reference(o, m, self.warn), obj.docstring.value
                )
        for obj in everything:
            parent = obj.parent
            if parent is None or not parent.is_class:
                continue
            if obj.name.startswith("_"):
                obj.public = False
                continue
            if obj.docstring is not None or not (obj.is_function or obj.is_attribute):
                continue
            inherited = next(
                (
                    base.members[obj.name].docstring
                    for base in _mro(parent)
                    if obj.name in base.members and base.members[obj.name].docstring
                ),
                None,
            )
            if inherited is not None:
                obj.docstring = griffe.Docstring(
                    inherited.value, parser=inherited.parser, parent=obj
                )
            elif obj.is_function and _torch_based(parent):
                obj.public = False  # an override of torch's protocol (forward, step, ...)


def missing_docstrings(obj: griffe.Object | griffe.Alias) -> Iterator[str]:
    """The paths of the objects the reference renders for ``obj`` that have no docstring:
    modules, classes, functions, methods and properties that are public (in ``__all__``
    where a module has one), not imported, and not hidden by this extension."""
    if obj.is_alias:
        return
    documented = obj.docstring is not None and obj.docstring.value.strip()
    kind = obj.is_module or obj.is_class or obj.is_function or "property" in obj.labels
    if kind and not documented:
        yield obj.path
    if not (obj.is_module or obj.is_class):
        return
    for member in obj.members.values():
        # Submodules are rendered by their own ::: blocks, imported names where they live.
        if member.is_alias or member.is_module:
            continue
        if member.name.startswith("_") or not member.is_public:
            continue
        yield from missing_docstrings(member)
