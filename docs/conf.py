"""Sphinx configuration: the HTML site built by `make docs` into docs/_build/html.

The build is offline: the notebooks are rendered from their committed outputs (no execution),
MathJax is copied into the site from the `sphinx-mathjax-offline` package (no CDN), and
intersphinx reads the inventories of JAX, optax, NumPy and Python shipped in docs/_inventories/
(their provenance: docs/_inventories/README.md), never the network."""

from __future__ import annotations

import pathlib
import re
import sys

from docutils import nodes
from sphinx import addnodes

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import sghmc_jax  # noqa: E402
from sghmc_jax import kernels  # noqa: E402

project = "sghmc_jax"
author = "the sghmc_jax authors"
copyright = "2026, the sghmc_jax authors"
release = version = sghmc_jax.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx-mathjax-offline",  # sets mathjax_path to the bundled copy it puts in _static/
]

exclude_patterns = ["_build", "_inventories", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
html_static_path: list[str] = []

# Google-style docstrings with RST maths, rendered as written.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": False}
autosummary_generate = False
# Single backticks in a docstring: a cross-reference when they hold the name of a documented
# object (`sample`, `SampleResult.diagnose()`, `kernels.Rule`), else code (`key=`, `(chain,
# draw)`), as the docstrings use them both ways; see `_code_or_xref`. Explicit roles
# (:func:`...`) and every other reference stay nitpicky.
default_role = "code-or-xref"
nitpicky = True

# Intersphinx without the network: the inventories shipped under docs/_inventories/ (`<name>.inv`,
# each for the site below). A name is looked up in them only by `_resolve_external`, in the
# inventory of its top-level module, so a default-role word such as `array` or `code` never
# links to some library's page of that name.
_SITES = {
    "python": "https://docs.python.org/3",
    "jax": "https://docs.jax.dev/en/latest",
    "optax": "https://optax.readthedocs.io/en/latest",
    "numpy": "https://numpy.org/doc/stable",
}
intersphinx_mapping = {name: (url, str(DOCS / "_inventories" / f"{name}.inv")) for name, url in _SITES.items()}
intersphinx_disabled_reftypes = ["*"]
# Optional dependencies the docstrings name (the `disk`, `arviz` extras; the models' libraries):
# no inventory of theirs is shipped, so their names render as code.
nitpick_ignore_regex = [(r"py:.*", r"(zarr|orbax|arviz|tqdm|flax|nnx|equinox|eqx|posteriors|torch)(\..*)?")]

# MyST: heading anchors for in-page and cross-page links (`page.md#the-sampler`), maths.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# The notebooks are rendered from their committed outputs; the tests run them.
nb_execution_mode = "off"
nb_merge_streams = True
suppress_warnings = ["mystnb.unknown_mime_type"]

html_theme = "sphinx_book_theme"
html_title = "sghmc_jax"
html_theme_options = {
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "use_download_button": False,
}
html_last_updated_fmt = None


def _functional_face_pages(app) -> None:
    """One API page per functional face, for every rule in `kernels.rules()` (a new sampler's
    page appears without an edit here; docs/api/sgmcmc/ is generated, not committed)."""
    out = DOCS / "api" / "sgmcmc"
    out.mkdir(exist_ok=True)
    wanted = {f"{rule}.rst" for rule in kernels.rules()}
    for stale in out.glob("*.rst"):
        if stale.name not in wanted:
            stale.unlink()
    for rule in kernels.rules():
        module = f"sghmc_jax.sgmcmc.{rule}"
        text = f"{module}\n{'=' * len(module)}\n\n.. automodule:: {module}\n   :members:\n"
        path = out / f"{rule}.rst"
        if not path.is_file() or path.read_text() != text:  # unchanged pages stay cached
            path.write_text(text)


_NAME = re.compile(r"~?[A-Za-z_][\w.]*(\(\)|\(\.\.\.\))?")
_MODULE_LEVEL = {"function", "class", "exception", "data", "module"}


def _code_or_xref(name, rawtext, text, lineno, inliner, options=None, content=None):
    """The default role: a Python cross-reference that renders as code when its target is not
    found (`_resolve_code_or_xref`), or plain code when the text is no dotted name."""
    code = nodes.literal(rawtext, text, classes=["code"])
    if not _NAME.fullmatch(text):
        return [code], []
    env = inliner.document.settings.env
    target = re.sub(r"\((\.\.\.)?\)$", "", text.lstrip("~"))
    node = addnodes.pending_xref(
        rawtext,
        refdomain="py",
        reftype="obj",
        reftarget=target,
        refexplicit=False,
        refwarn=False,
        code_or_xref=True,
    )
    node["py:module"] = env.ref_context.get("py:module")
    node["py:class"] = env.ref_context.get("py:class")
    node += nodes.literal(rawtext, text, classes=["xref", "py", "py-obj"])
    return [node], []


# The inventory that documents each top-level module, and the aliases docstrings write.
_INVENTORY_OF = {"jax": "jax", "jaxlib": "jax", "optax": "optax", "numpy": "numpy"}
_MODULE_ALIASES = {"np": "numpy", "jnp": "jax.numpy"}
_INVENTORY_NAMES: dict[str, dict[str, str]] = {}


def _inventory_names(env, inventory: str) -> dict[str, str]:
    """{name: type} of one shipped inventory's Python objects, read once."""
    from sphinx.ext.intersphinx import InventoryAdapter

    if inventory not in _INVENTORY_NAMES:
        items = InventoryAdapter(env).named_inventory[inventory]
        _INVENTORY_NAMES[inventory] = {n: t for t, objs in items.items() if t.startswith("py:") for n in objs}
    return _INVENTORY_NAMES[inventory]


def _external_name(env, target: str, inventory: str) -> str | None:
    """The name under which `inventory` documents `target`: itself, or for a private home that
    annotations spell (`jax.jaxlib._jax.Array`, `optax._src.base.GradientTransformation`,
    `jax._src.mesh.Mesh`) the public name, `<package>.<name>` or else the one public entry
    that ends with `.<name>`; None when there is none."""
    names = _inventory_names(env, inventory)
    if target in names:
        return target
    if "._" not in target:
        return None
    top, last = target.partition(".")[0], target.rpartition(".")[2]
    if f"{top}.{last}" in names:
        return f"{top}.{last}"
    ends = [n for n in names if n.endswith("." + last) and n.startswith(top + ".") and "._" not in n]
    return ends[0] if len(ends) == 1 else None


def _resolve_external(env, node, contnode, python: bool):
    """A reference to JAX, optax or NumPy (or, with `python`, any name in Python's inventory:
    builtins and the standard library, as annotations spell them) resolved in the shipped
    inventory of its top-level module; None when it documents no such name."""
    from sphinx.ext.intersphinx import resolve_reference_in_inventory

    target = node["reftarget"]
    head, dot, rest = target.partition(".")
    if head in _MODULE_ALIASES and dot:
        target = f"{_MODULE_ALIASES[head]}.{rest}"
    inventory = _INVENTORY_OF.get(target.partition(".")[0]) or ("python" if python else None)
    name = inventory and _external_name(env, target, inventory)
    if not name:
        return None
    original = node["reftarget"]
    if name != original and contnode.astext() == original and len(contnode.children) == 1:
        contnode = contnode.deepcopy()  # a field's type spelled out: show the public name
        contnode.replace(contnode.children[0], nodes.Text(name))
    # The role may not match the inventory's type (an annotation is a :py:class: reference even
    # to a py:data such as `jax.typing.ArrayLike`); the name was found, so any type will do.
    reftype, node["reftarget"], node["reftype"] = node["reftype"], name, "obj"
    try:
        return resolve_reference_in_inventory(env, inventory, node, contnode)
    finally:
        node["reftarget"], node["reftype"] = original, reftype


def _resolve_code_or_xref(app, env, node, contnode):
    """A default-role target the Python domain did not find: the current module's name, the
    name as `sghmc_jax` exports it, or the one documented object whose name ends with it (an
    undotted name matches module-level objects only, so a parameter called `key` never links
    to some state's `key` field), or a name of JAX, optax or NumPy (`_resolve_external`); none
    or several: code, without a warning. Annotations naming other modules go to
    `_resolve_external`, Python's inventory included."""
    from sphinx.util.nodes import make_refnode

    objects = env.domains.python_domain.objects
    target, module = node["reftarget"], node.get("py:module") or ""
    if node.get("refdomain") != "py":
        return None
    if not node.get("code_or_xref"):  # an annotation naming the defining module, or a private type
        if not target.startswith("sghmc_jax."):
            return _resolve_external(env, node, contnode, python=True)
        if "._" in target and f"sghmc_jax.{target.rpartition('.')[2]}" not in objects:
            return contnode
        target = target.rpartition(".")[2]
    candidates = [f"{module}.{target}", f"sghmc_jax.{target}", f"sghmc_jax.{module.rpartition('.')[0]}.{target}"]
    found = next((c for c in candidates if c in objects and not objects[c].aliased), None)
    if found is None:
        ends = [
            n
            for n, o in objects.items()
            if n.endswith("." + target) and not o.aliased and ("." in target or o.objtype in _MODULE_LEVEL)
        ]
        found = ends[0] if len(ends) == 1 else None
    if found is None:
        return _resolve_external(env, node, contnode, python=False) or contnode
    obj = objects[found]
    return make_refnode(app.builder, node["refdoc"], obj.docname, obj.node_id, contnode, found)


# The type aliases of `sghmc_jax.types`, longest first (one's expansion can hold another's), then
# JAX's (named after ours, which can hold them), and the private homes of public types that
# annotations evaluate to.
_ALIASES = ("ScalarOrSchedule", "LogProbFn", "Schedule", "ArrayTree")
_LIBRARY_ALIASES = ("jax.typing.ArrayLike",)
_PRIVATE_HOMES = {"jax.jaxlib._jax.Array": "jax.Array"}


def _spelled_as(mode: str) -> list[tuple[str, str]]:
    """(expansion, name) pairs: each alias's value and each private type as autodoc writes them
    in `mode` ("smart" in signatures, "fully-qualified-except-typing" in napoleon's types)."""
    from sphinx.util.typing import stringify_annotation

    from sghmc_jax import types

    tilde = "~" if mode == "smart" else ""
    pairs = []
    for alias in _ALIASES:
        expansion, name = stringify_annotation(getattr(types, alias), mode), f"{tilde}sghmc_jax.types.{alias}"
        # A recursive alias in a union is expanded one level further (`ArrayTree | None` holds
        # `Iterable[<ArrayTree's expansion>]`): once that inner one is named, the outer reads so.
        pairs += [(expansion, name), (expansion.replace(f"{alias}]", f"{name}]"), name)]
    pairs += [(stringify_annotation(_library_alias(alias), mode), tilde + alias) for alias in _LIBRARY_ALIASES]
    return pairs + [(tilde + private, tilde + public) for private, public in _PRIVATE_HOMES.items()]


def _library_alias(name: str):
    """The object a dotted name such as `jax.typing.ArrayLike` names."""
    import importlib

    module, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def _name_aliases(text: str, mode: str) -> str:
    """`text` with every alias's expansion replaced by the alias (`ArrayTree`, not `Array |
    ndarray | bool | number | Iterable[ArrayTree] | Mapping[Any, ArrayTree]`) and every private
    home by the public name (`jax.Array`, not `jax.jaxlib._jax.Array`)."""
    for expansion, name in _spelled_as(mode):
        text = text.replace(expansion, name)
    return text


def _signature_with_aliases(app, what, name, obj, options, signature, return_annotation):
    """Signatures name the type aliases instead of expanding them (`_name_aliases`)."""
    if signature is None and return_annotation is None:
        return None
    return (
        signature and _name_aliases(signature, "smart"),
        return_annotation and _name_aliases(return_annotation, "smart"),
    )


def _types_with_aliases(app, what, name, obj, options, lines):
    """The `:type:` and `:rtype:` lines napoleon writes name the type aliases too (the aliases'
    own entries keep their "alias of" expansion)."""
    for i, line in enumerate(lines):
        if line.lstrip().startswith((":type", ":rtype")):
            lines[i] = _name_aliases(line, "fully-qualified-except-typing")


def _values_with_aliases(app, doctree) -> None:
    """An alias's value shown in a signature (`ScalarOrSchedule: TypeAlias = ...`, autodoc's
    repr of it) names the other aliases and public types (`float | jax.Array |
    sghmc_jax.types.Schedule`)."""
    from sghmc_jax import types

    for signature in doctree.findall(addnodes.desc_signature):
        own = f"{signature.get('module')}.{signature.get('fullname')}"
        pairs = [(repr(getattr(types, a)), f"sghmc_jax.types.{a}") for a in _ALIASES if f"sghmc_jax.types.{a}" != own]
        pairs += [(repr(_library_alias(alias)), alias) for alias in _LIBRARY_ALIASES]
        pairs += list(_PRIVATE_HOMES.items())
        for text in list(signature.findall(nodes.Text)):
            new = str(text)
            for expansion, name in pairs:
                new = new.replace(expansion, name)
            if new != str(text):
                text.parent.replace(text, nodes.Text(new))


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """A NamedTuple's fields are described by its docstring's "Attributes:"; the generated
    "Alias for field number N" entries would repeat them."""
    if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    return None


def setup(app):
    app.add_role("code-or-xref", _code_or_xref)
    app.connect("builder-inited", _functional_face_pages)
    app.connect("missing-reference", _resolve_code_or_xref)
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    app.connect("autodoc-process-signature", _signature_with_aliases)
    app.connect("autodoc-process-docstring", _types_with_aliases, priority=600)  # after napoleon
    app.connect("doctree-read", _values_with_aliases)
