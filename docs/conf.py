"""Sphinx configuration of the documentation site (``make docs`` -> ``docs/_build/html``).

Why Sphinx with MyST-parser: the docstrings of the package are reStructuredText --
``:math:``, ``:class:``, ``:func:`` and ``:mod:`` roles, ``.. math::`` blocks, Google-style
``Args:`` / ``Returns:`` / ``Raises:`` sections -- which Sphinx's ``autodoc`` and ``napoleon``
render natively (a markdown-first generator such as mkdocstrings would show the roles raw),
while MyST-parser reads the user guide's markdown pages (``index.md``, ``training.md``, ...)
as they are, ``$...$`` maths included (its ``dollarmath`` extension). No intersphinx: the
site builds without a network.

The API reference (``docs/api/*.md``) is ``automodule`` with ``:members:``, so every module's
``__all__`` decides what is shown. Each object is documented once: a name re-exported by a
package and by the module that defines it (``inferno.loss.Analysis`` and
``inferno.loss.analysis.Analysis``) is documented at the package, its public path, and the
module's section shows the module's docstring and what the package does not re-export
(:func:`_skip_member`). The front door ``inferno`` re-exports names documented elsewhere: its
page lists them (the ``inferno-exports`` directive) with links. Cross-references in the
docstrings to another public path of a documented object (``inferno.ModelWrapper``,
``inferno.loss.callback.InfernoLoss``) are resolved to where it is documented
(:func:`_resolve_alias`).

Autodoc imports the package: every module of :data:`API_MODULES` must import without its
optional dependencies (uproot, pyarrow, hist, onnx, dask are imported inside functions).
Each page's automodule is in an ``{eval-rst}`` block: autodoc writes reStructuredText, which
MyST would otherwise read as markdown.
"""
from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import inferno  # noqa: E402

project = "inferno"
author = "inferno developers"
copyright = "inferno developers"
release = version = inferno.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

root_doc = "index"
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
# the result tables of the runs (results/, benchmark/) are pages, in hidden toctrees of the pages
# that link them; their other files (csv, logs, json) are not sources
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links, as on GitHub

autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False  # not torch's docstrings of forward, backward, ...
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

html_theme = "furo"
html_title = f"inferno {release}"
html_static_path: List[str] = []
html_show_sourcelink = False

# --------------------------------------------------------------------------- one place per object
#: the modules of the API pages, packages before their modules (the front door ``inferno`` is
#: not one: it re-exports the names documented here)
API_MODULES = [
    "inferno.loss", "inferno.loss.analysis", "inferno.loss.pure", "inferno.loss.fisher",
    "inferno.loss.callback", "inferno.loss.tangents", "inferno.loss.chain",
    "inferno.likelihood", "inferno.likelihood.model", "inferno.likelihood.compiled",
    "inferno.likelihood.modifiers", "inferno.likelihood.parameters", "inferno.likelihood.interpolation",
    "inferno.likelihood.solver", "inferno.likelihood.fit", "inferno.likelihood.intervals",
    "inferno.likelihood.toys", "inferno.likelihood.workspace", "inferno.likelihood.hs3",
    "inferno.nuisance",
    "inferno.data", "inferno.data.dataset", "inferno.data.streaming",
    "inferno.training", "inferno.training.wrapper", "inferno.training.callbacks", "inferno.training.schedules",
    "inferno.nn", "inferno.distributed", "inferno.distributed.reduce", "inferno.distributed.dask",
    "inferno.templates", "inferno.data.readers", "inferno.data.readers.read", "inferno.data.readers.stream",
    "inferno.data.readers.sources", "inferno.data.readers.backends",
    "inferno.histograms", "inferno.export", "inferno.plotting",
    "inferno.compat", "inferno.compat.two_process", "inferno.compat.inference", "inferno.compat.interp",
    "inferno.compat.paper_model", "inferno.compat.pyhf_export", "inferno.compat.callbacks",
    "inferno.paper", "inferno.paper.problem", "inferno.paper.limits", "inferno.paper.systematics",
    "inferno.paper.callbacks", "inferno.paper.cli", "inferno.paper.study",
    "inferno.htautau", "inferno.htautau.constants", "inferno.htautau.features", "inferno.htautau.generator",
    "inferno.htautau.kinematics", "inferno.htautau.analysis", "inferno.htautau.run", "inferno.htautau.baselines",
    "inferno.htautau.summaries", "inferno.htautau.report",
    "inferno.explain", "inferno.explain.importance", "inferno.explain.attributions", "inferno.explain.nuisances",
    "inferno.explain.report",
]


def _import(name: str) -> Optional[Any]:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _public_names(module: Any) -> List[str]:
    """What ``automodule :members:`` shows of a module: its ``__all__``, or else the public
    names defined in it."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [n for n, v in vars(module).items() if not n.startswith("_")
            and getattr(v, "__module__", None) == module.__name__
            and (inspect.isclass(v) or inspect.isfunction(v))]


def _key(name: str, obj: Any) -> Tuple[Any, ...]:
    # classes and functions by identity; constants (floats, dicts) by name and identity
    return (id(obj),) if inspect.isclass(obj) or inspect.isroutine(obj) else (name, id(obj))


def _shadowed(modname: str) -> bool:
    """Whether a module's name is also that of another object of its package (the module
    ``inferno.likelihood.fit`` and the function ``inferno.likelihood.fit``): its page
    documents it with ``:no-index:``, so it does not own the names it shares."""
    parent, last = modname.rsplit(".", 1)
    return getattr(sys.modules.get(parent), last, None) is not sys.modules.get(modname)


def _assigns(modname: str, name: str) -> bool:
    """Whether the module's source assigns ``name`` at its top level (a constant's home,
    where its ``#:`` comment is)."""
    try:
        src = inspect.getsource(sys.modules[modname])
    except (OSError, TypeError):
        return False
    return re.search(rf"^{re.escape(name)}\s*(:[^=\n]*)?=", src, re.M) is not None


def _owners() -> Dict[Tuple[Any, ...], str]:
    """Object -> the module whose section documents it. Candidates: the modules of
    :data:`API_MODULES` that show it. A class or function goes to the shortest candidate
    that contains the module defining it (the package that re-exports it: its public path),
    else the first candidate; a constant to the module that assigns it (autodoc takes its
    ``#:`` comment from there)."""
    cands: Dict[Tuple[Any, ...], List[Tuple[str, str, Any]]] = {}
    for modname in API_MODULES:
        mod = _import(modname)
        if mod is None:
            continue
        for n in _public_names(mod):
            if hasattr(mod, n) and not inspect.ismodule(getattr(mod, n)):
                obj = getattr(mod, n)
                cands.setdefault(_key(n, obj), []).append((modname, n, obj))
    owners = {}
    for key, found in cands.items():
        mods = [m for m, _, _ in found if not _shadowed(m)] or [m for m, _, _ in found]
        _, name, obj = found[0]
        if inspect.isclass(obj) or inspect.isroutine(obj):
            home = getattr(obj, "__module__", None) or ""
            inside = [m for m in mods if home == m or home.startswith(m + ".")]
            owners[key] = min(inside, key=lambda m: m.count(".")) if inside else mods[0]
        else:
            owners[key] = next((m for m in mods if _assigns(m, name)), mods[0])
    return owners


OWNERS = _owners()
_current = {"module": None}


def _track_module(app, what, name, obj, options, lines):
    if what == "module":
        _current["module"] = name


def _documenting_module(app) -> Optional[str]:
    """The module whose members autodoc is choosing: Sphinx's own record where it has one
    (its name changed between versions), else the last module docstring seen."""
    doc = getattr(app.env, "current_document", None)
    if doc is not None:
        return getattr(doc, "autodoc_module", None) or _current["module"]
    return app.env.temp_data.get("autodoc:module") or _current["module"]


def _skip_member(app, what, name, obj, skip, options):
    """In a module's section, keep every name of ``__all__`` (documented or not) that this
    module owns (:func:`_owners`), skip those documented elsewhere."""
    modname = _documenting_module(app) if what == "module" else None
    if modname is None:
        return None
    module = sys.modules.get(modname)
    if module is None or name not in _public_names(module) or inspect.ismodule(obj):
        return None
    return OWNERS.get(_key(name, obj), modname) != modname


def _documented_name(obj: Any, name: str) -> Optional[str]:
    owner = OWNERS.get(_key(name, obj))
    if owner is None:
        return None
    for n in _public_names(sys.modules[owner]):
        if hasattr(sys.modules[owner], n) and _key(n, getattr(sys.modules[owner], n)) == _key(name, obj):
            return f"{owner}.{n}"
    return None


def _lookup(path: str) -> Tuple[Optional[Any], Optional[str]]:
    """The object at a dotted path ``inferno.x.y.Name[.attr]``: (object, its last name)."""
    parts = path.split(".")
    if "__main__" in parts:  # importing a command's __main__ runs it
        return None, None
    for k in range(len(parts) - 1, 0, -1):
        mod = sys.modules.get(".".join(parts[:k])) or _import(".".join(parts[:k]))
        if mod is None:
            continue
        obj = mod
        try:
            for p in parts[k:]:
                obj = getattr(obj, p)
        except AttributeError:
            return None, None
        return obj, parts[k]
    return None, None


def _by_last_name() -> Dict[str, List[str]]:
    """Last name -> the documented names that end with it."""
    out: Dict[str, List[str]] = {}
    for owner in set(OWNERS.values()):
        for n in _public_names(sys.modules[owner]):
            if hasattr(sys.modules[owner], n) and OWNERS.get(_key(n, getattr(sys.modules[owner], n))) == owner:
                out.setdefault(n, []).append(f"{owner}.{n}")
    return out


BY_LAST_NAME = _by_last_name()


def _resolve_alias(app, env, node, contnode):
    """``missing-reference``: a reference to another public path of a documented object
    (``inferno.ModelWrapper``, ``inferno.loss.pure.inferno_loss``, ``inferno.Model.fit``)
    goes to where the object is documented; so does a short name (``calc_profile``,
    ``ShapeNuisance.alpha_curvature``) that names one documented object of the package."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    candidates = [target]
    if not target.startswith("inferno"):
        mod = node.get("py:module")
        if mod:
            candidates.append(f"{mod}.{target}")
        head, _, rest = target.partition(".")
        found = BY_LAST_NAME.get(head, [])
        if len(found) == 1:
            candidates.append(found[0] + ("." + rest if rest else ""))
    for cand in candidates:
        if not cand.startswith("inferno."):
            continue
        parts = cand.split(".")
        # Name or Name.attribute: the documented name of the top object, then the rest
        for cut in (len(parts), len(parts) - 1):
            obj, first = _lookup(".".join(parts[:cut]))
            if obj is None or inspect.ismodule(obj):
                continue
            doc = _documented_name(obj, first)
            if doc is None:
                continue
            new = ".".join([doc] + parts[cut:])
            if new == target:
                continue
            dom = env.get_domain("py")
            node = node.deepcopy()
            node["reftarget"] = new
            res = dom.resolve_xref(env, node["refdoc"], app.builder, node.get("reftype", "obj"), new, node, contnode)
            if res is not None:
                return res
            res = dom.resolve_xref(env, node["refdoc"], app.builder, "obj", new, node, contnode)
            if res is not None:
                return res
    return None


# --------------------------------------------------------------------------- directives
from docutils import nodes  # noqa: E402
from docutils.statemachine import StringList  # noqa: E402
from sphinx.ext.autosummary import Autosummary  # noqa: E402


class Exports(Autosummary):
    """A table of a package's ``__all__`` (one-line summaries), each name linked to where it
    is documented: ``inferno-exports`` with the package as its argument."""

    required_arguments = 1
    option_spec = dict(Autosummary.option_spec)

    def run(self):
        module = importlib.import_module(self.arguments[0])
        lines, constants = [], []
        for n in module.__all__:
            obj = getattr(module, n)
            if inspect.ismodule(obj):
                continue
            doc = _documented_name(obj, n)
            if doc is None:
                continue
            if inspect.isclass(obj) or inspect.isroutine(obj):
                lines.append(f"~{doc}")
            else:  # a constant: autosummary would show its type's docstring (dict, float)
                constants.append(f":py:obj:`~{doc}`")
        self.content = StringList(lines)
        self.arguments = []
        self.options.setdefault("nosignatures", True)
        out = super().run()
        if constants:
            para = nodes.paragraph()
            self.state.nested_parse(StringList(["Constants: " + ", ".join(constants) + "."]),
                                    self.content_offset, para)
            out += para.children
        return out


def _drop_object_base(app, name, obj, options, bases):
    """``Bases: object`` says nothing."""
    if object in bases:
        bases.remove(object)


def setup(app):
    app.connect("autodoc-process-bases", _drop_object_base)
    app.connect("autodoc-process-docstring", _track_module)
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("missing-reference", _resolve_alias)
    app.add_directive("inferno-exports", Exports)
    return {"parallel_read_safe": True}
