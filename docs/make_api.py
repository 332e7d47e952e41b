"""Build ``docs/api.md``, the API reference, from the package's docstrings.

    python docs/make_api.py           # (re)write docs/api.md
    python docs/make_api.py --check   # exit 1 if docs/api.md is out of date

Every public name (a module's ``__all__``) of the modules listed in :data:`MODULES` gets its
signature and docstring. The docstrings are written in reStructuredText with Google-style
sections; this script turns the parts used in the package into Markdown:

* ``:math:`x``` -> ``$x$``, ``.. math::`` blocks -> ``$$ ... $$`` display maths;
* ``:func:`~inferno.x.f```, ``:class:``, ... -> ``f`` in code font;
* ````code```` -> ``code``;
* ``Args:`` / ``Attributes:`` / ``Raises:`` sections -> bullet lists;
* literal blocks (a paragraph ending in ``::``) and doctest lines (``>>>``) -> code blocks,
  tagged ``text``/``pycon`` so that ``tests/test_docs.py`` does not execute them.

Only the standard library and the package itself are needed.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
API_MD = ROOT / "docs" / "api.md"

#: (module, one-line description) in the order of the reference.
MODULES: List[Tuple[str, str]] = [
    ("inferno.data", "data sets and batching"),
    ("inferno.training.wrapper", "the training loop"),
    ("inferno.training.callbacks", "callbacks"),
    ("inferno.training.schedules", "learning-rate schedules"),
    ("inferno.nuisance", "describing nuisance parameters"),
    ("inferno.nn", "layers"),
    ("inferno.loss", "the INFERNO loss (public names)"),
    ("inferno.loss.analysis", "what INFERNO trains for: processes, nuisances, POIs, fixed channels"),
    ("inferno.loss.pure", "the loss as a pure function"),
    ("inferno.loss.fisher", "the Fisher information and the POI loss"),
    ("inferno.loss.callback", "the loss as a callback"),
    ("inferno.loss.tangents", "the nuisances' tangents through the network"),
    ("inferno.loss.chain", "the fused node of the tangents of Linear/ReLU/softmax bodies"),
    ("inferno.compat.two_process", "the two-process callbacks of pytorch_inferno over the one loss"),
    ("inferno.templates", "from a trained network to the analysis' Model"),
    ("inferno.data.readers", "ROOT and parquet input, streamed"),
    ("inferno.export", "ONNX export of a trained summary"),
    ("inferno.histograms", "hist templates and channel plots"),
    ("inferno.paper.callbacks", "the INFERNO callbacks of the paper's problem"),
    ("inferno.htautau", "a generated H -> tau tau-like search with systematics"),
    ("inferno.htautau.analysis", "the INFERNO analysis of that search"),
    ("inferno.htautau.run", "the inferno-bench command"),
    ("inferno.likelihood", "the statistical model and every measurement on it (public names)"),
    ("inferno.likelihood.model", "channels, samples, the Model"),
    ("inferno.likelihood.compiled", "the compiled model: expected counts, NLL and derivatives"),
    ("inferno.likelihood.modifiers", "HistFactory modifiers"),
    ("inferno.likelihood.parameters", "parameters and constraints"),
    ("inferno.likelihood.interpolation", "interpolation codes"),
    ("inferno.likelihood.solver", "the batched Newton solver"),
    ("inferno.likelihood.fit", "fits and profile scans"),
    ("inferno.likelihood.intervals", "intervals from a scan"),
    ("inferno.likelihood.toys", "pseudo-experiments and coverage"),
    ("inferno.likelihood.workspace", "pyhf workspaces in and out"),
    ("inferno.compat.interp", "template interpolation (normalised templates)"),
    ("inferno.compat.inference", "pytorch_inferno-style templates, likelihood, profile scans, fits, toys"),
    ("inferno.compat.paper_model", "the one-channel model of the pytorch_inferno-style API"),
    ("inferno.compat.pyhf_export", "its one-channel HistFactory export"),
    ("inferno.paper", "the paper's toy problem"),
    ("inferno.paper.cli", "the inferno-paper command"),
    ("inferno.plotting", "figures (import it as inferno.plotting)"),
]

SECTIONS_LIST = {"Args", "Arguments", "Parameters", "Attributes", "Raises", "Keyword Args"}
SECTIONS_TEXT = {"Returns", "Return", "Yields", "Example", "Examples", "Note", "Notes", "Warning"}

_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|obj|exc):`~?([^`]+)`")
_MATH = re.compile(r":math:`([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
_ADDR = re.compile(r" at 0x[0-9a-fA-F]+")


# --------------------------------------------------------------------------- inline markup
def _inline(text: str) -> str:
    """Inline reST roles and literals to Markdown."""
    text = _MATH.sub(lambda m: f"${m.group(1).strip()}$", text)
    text = _ROLE.sub(lambda m: f"`{m.group(1).split('.')[-1] if '~' in m.group(0) else m.group(1)}`", text)
    text = _LITERAL.sub(lambda m: f"`{m.group(1)}`", text)
    return text


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _take_block(lines: List[str], i: int, base: int) -> Tuple[List[str], int]:
    """Lines from ``i`` on that are blank or indented deeper than ``base``."""
    out = []
    while i < len(lines) and (not lines[i].strip() or _indent_of(lines[i]) > base):
        out.append(lines[i])
        i += 1
    while out and not out[-1].strip():
        out.pop()
        i -= 1
    return out, i


def _dedent(block: List[str]) -> List[str]:
    out = textwrap.dedent("\n".join(block)).split("\n")
    while out and not out[0].strip():
        out.pop(0)
    return out


# --------------------------------------------------------------------------- docstrings
def _list_section(block: List[str]) -> List[str]:
    """``name: description`` entries (continuations indented) to a bullet list."""
    body = _dedent(block)
    items: List[List[str]] = []
    for line in body:
        if not line.strip():
            if items:
                items[-1].append("")
            continue
        if _indent_of(line) == 0:
            items.append([line.strip()])
        elif items:
            items[-1].append(line.strip())
        else:
            items.append([line.strip()])
    out = []
    for it in items:
        while it and not it[-1]:
            it.pop()
        head, rest = it[0], it[1:]
        m = re.match(r"^([\w\s,*().\[\]'\"-]+?):\s*(.*)$", head)
        if m:
            names = ", ".join(f"`{n.strip()}`" for n in m.group(1).split(","))
            text = " ".join([m.group(2)] + [r for r in rest if r])
            out.append(f"- {names}: {_inline(text)}".rstrip())
        else:
            out.append("- " + _inline(" ".join([head] + [r for r in rest if r])))
    return out


def convert_docstring(doc: Optional[str], heading: str = "") -> str:
    """A cleaned docstring (reST + Google sections) to Markdown."""
    if not doc:
        return "*(no docstring)*\n"
    # inline maths that spans lines becomes one line (its lines are joined)
    text = _MATH.sub(lambda m: f":math:`{' '.join(m.group(1).split())}`", inspect.cleandoc(doc))
    lines = text.split("\n")
    out: List[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        ind = _indent_of(line)
        if s.startswith(".. math::"):
            block, i = _take_block(lines, i + 1, ind)
            maths = "\n".join(l for l in _dedent(block) if l.strip())
            out += ["", "$$", maths, "$$", ""]
            continue
        if s.startswith(">>>"):
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i].strip() if lines[i].strip().startswith((">>>", "...")) else lines[i][ind:])
                i += 1
            out += ["", "```pycon", *block, "```", ""]
            continue
        sec = s[:-1] if s.endswith(":") and not s.endswith("::") else None
        if sec in SECTIONS_LIST | SECTIONS_TEXT and i + 1 < len(lines) and (
                not lines[i + 1].strip() or _indent_of(lines[i + 1]) > ind):
            block, i = _take_block(lines, i + 1, ind)
            out += ["", f"**{sec}:**", ""]
            if sec in SECTIONS_LIST:
                out += _list_section(block)
            else:
                out += _convert_lines(_dedent(block))
            out.append("")
            continue
        if s.endswith("::") and s != "::" or s == "::":
            text = s[:-2].rstrip()
            if text:
                out.append(_inline(text + (":" if not text.endswith(":") else "")))
            block, j = _take_block(lines, i + 1, ind)
            if block:
                out += ["", "```text", *[l.rstrip() for l in _dedent(block)], "```", ""]
                i = j
            else:
                i += 1
            continue
        out.append(_inline(line.strip()) if ind == 0 else _inline(line))
        i += 1
    md = "\n".join(out)
    md = re.sub(r"\n{3,}", "\n\n", md).strip() + "\n"
    return md


def _convert_lines(lines: List[str]) -> List[str]:
    return convert_docstring("\n".join(lines)).rstrip("\n").split("\n")


# --------------------------------------------------------------------------- signatures
def _annot(a: Any) -> str:
    if a is inspect.Parameter.empty:
        return ""
    if isinstance(a, str):
        return a.strip("'\"")
    return inspect.formatannotation(a)


def _default(v: Any) -> str:
    r = repr(v)
    return _ADDR.sub("", r)


def format_signature(name: str, obj: Callable) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"{name}(...)"
    if inspect.isclass(obj):
        sig = sig.replace(return_annotation=inspect.Signature.empty)
    parts = []
    seen_kwonly = False
    params = list(sig.parameters.values())
    for k, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not seen_kwonly and not any(q.kind is q.VAR_POSITIONAL for q in params):
            parts.append("*")
            seen_kwonly = True
        txt = p.name
        if p.kind is p.VAR_POSITIONAL:
            txt = "*" + txt
        elif p.kind is p.VAR_KEYWORD:
            txt = "**" + txt
        ann = _annot(p.annotation)
        if ann:
            txt += f": {ann}"
        if p.default is not inspect.Parameter.empty:
            txt += f" = {_default(p.default)}" if ann else f"={_default(p.default)}"
        parts.append(txt)
    ret = _annot(sig.return_annotation)
    one = f"{name}({', '.join(parts)})" + (f" -> {ret}" if ret else "")
    if len(one) <= 90:
        return one
    body = "".join(f"    {p},\n" for p in parts)
    return f"{name}(\n{body})" + (f" -> {ret}" if ret else "")


# --------------------------------------------------------------------------- objects
def _constant_comment(module: Any, name: str) -> str:
    """The ``#:`` comment lines just above ``name = ...`` in the module's source."""
    try:
        src = inspect.getsource(module).split("\n")
    except (OSError, TypeError):
        return ""
    for k, line in enumerate(src):
        if re.match(rf"^{re.escape(name)}\s*(:[^=]+)?=", line):
            com = []
            j = k - 1
            while j >= 0 and src[j].lstrip().startswith("#:"):
                com.insert(0, src[j].lstrip()[2:].strip())
                j -= 1
            return " ".join(com)
    return ""


def _short_repr(v: Any, limit: int = 300) -> str:
    r = _ADDR.sub("", repr(v))
    return r if len(r) <= limit else r[:limit] + " ..."


def _docstring(func: Callable) -> Optional[str]:
    """``func.__doc__``, or, when that is None because the first statement of the body is
    a string *expression* (e.g. a docstring assembled with ``+``), that expression's value."""
    if func.__doc__ or not inspect.isfunction(func):
        return func.__doc__
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return None
    fdef = tree.body[0]
    if not isinstance(fdef, (ast.FunctionDef, ast.AsyncFunctionDef)) or not fdef.body:
        return None
    first = fdef.body[0]
    if not isinstance(first, ast.Expr):
        return None
    try:
        value = eval(compile(ast.Expression(first.value), "<docstring>", "eval"), func.__globals__)
    except Exception:
        return None
    return value if isinstance(value, str) else None


def _own_members(cls: type) -> List[Tuple[str, Any]]:
    """Public methods and properties defined (or overridden) in the class itself."""
    out = []
    for name, val in cls.__dict__.items():
        if name.startswith("_"):
            continue
        if isinstance(val, property):
            out.append((name, val))
        elif isinstance(val, (staticmethod, classmethod)):
            out.append((name, val.__func__))
        elif inspect.isfunction(val):
            if cls.__doc__ and val.__doc__ is None and name.startswith("on_"):
                continue  # undocumented hook overrides: the class docstring says what they do
            out.append((name, val))
    return out


def document_object(modname: str, name: str, obj: Any, module: Any) -> List[str]:
    out: List[str] = []
    if inspect.isclass(obj):
        kind = "exception" if issubclass(obj, BaseException) else "class"
        bases = [b.__name__ for b in obj.__bases__ if b is not object]
        out += [f"### `{name}`", "", f"*{kind}*" + (f", derives from `{', '.join(bases)}`" if bases else ""), ""]
        if not issubclass(obj, BaseException):
            out += ["```text", format_signature(name, obj), "```", ""]
        out.append(convert_docstring(obj.__doc__))
        for mname, m in _own_members(obj):
            if isinstance(m, property):
                out += [f"#### `{name}.{mname}` *(property)*", ""]
                if m.__doc__:
                    out.append(convert_docstring(m.__doc__))
            else:
                sig = format_signature(f"{name}.{mname}", m).replace("(self, ", "(").replace("(self)", "()")
                sig = sig.replace("(cls, ", "(").replace("(cls)", "()").replace("\n    self,\n", "\n").replace("\n    cls,\n", "\n")
                out += [f"#### `{name}.{mname}`", "", "```text", sig, "```", ""]
                if m.__doc__:
                    out.append(convert_docstring(m.__doc__))
    elif callable(obj):
        out += [f"### `{name}`", "", "```text", format_signature(name, obj), "```", "",
                convert_docstring(_docstring(obj))]
    else:
        com = _constant_comment(module, name)
        out += [f"### `{name}`", "", "```text", f"{name} = {_short_repr(obj)}", "```", ""]
        if com:
            out += [_inline(com), ""]
    return out


def build() -> str:
    """The text of docs/api.md."""
    import inferno

    lines = [
        "# API reference",
        "",
        "<!-- Generated by docs/make_api.py from the docstrings: do not edit by hand. -->",
        "",
        f"Package version {inferno.__version__}. Every name below is importable from the module",
        "shown and, except for `inferno.plotting`, from `inferno` itself",
        "(`from inferno import calc_profile`). Maths uses the package's notation: $\\mu$ is the",
        "parameter of interest (the expected signal yield), $f_s, f_b$ are normalised",
        "templates (histograms), $\\nu_i$ the expected count in bin $i$, $\\alpha_k$ a shape",
        "nuisance in interpolation units. Regenerate with `python docs/make_api.py`.",
        "",
        "## Contents",
        "",
    ]
    mods = []
    for modname, desc in MODULES:
        module = importlib.import_module(modname)
        names = list(getattr(module, "__all__", []))
        anchor = modname.replace(".", "")
        lines.append(f"- [`{modname}`](#{anchor}): {desc} -- " + ", ".join(f"`{n}`" for n in names))
        mods.append((modname, module, names))
    lines.append("")
    for modname, module, names in mods:
        lines += [f"## `{modname}`", "", convert_docstring(module.__doc__)]
        for name in names:
            lines += document_object(modname, name, getattr(module, name), module)
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"
    return text


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is out of date")
    a = p.parse_args(argv)
    text = build()
    if a.check:
        old = API_MD.read_text() if API_MD.exists() else ""
        if old != text:
            print(f"{API_MD} is out of date: run `python docs/make_api.py`", file=sys.stderr)
            return 1
        print(f"{API_MD} is up to date")
        return 0
    API_MD.write_text(text)
    print(f"wrote {API_MD} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
