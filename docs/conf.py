"""Sphinx configuration: the HTML site built by `make docs` into docs/_build/html.

The build is offline: the notebooks are rendered from their committed outputs (no execution),
MathJax is copied into the site from the `sphinx-mathjax-offline` package (no CDN), and
intersphinx reads only inventories shipped in docs/_inventories/ (none is shipped: this
machine cannot reach the projects' sites, so references to JAX, optax and NumPy render as code;
see `nitpick_ignore_regex`)."""

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

# Intersphinx without the network: only inventories shipped under docs/_inventories/ are read
# (`<name>.inv`, each for the site below); names of a project with no inventory there render as
# plain code and are listed in `nitpick_ignore_regex`.
_SITES = {
    "python": "https://docs.python.org/3",
    "jax": "https://docs.jax.dev/en/latest",
    "optax": "https://optax.readthedocs.io/en/latest",
    "numpy": "https://numpy.org/doc/stable",
}
intersphinx_mapping = {
    name: (url, str(DOCS / "_inventories" / f"{name}.inv"))
    for name, url in _SITES.items()
    if (DOCS / "_inventories" / f"{name}.inv").is_file()
}
intersphinx_disabled_reftypes = ["*"]
_EXTERNAL = [n for n in ("jax", "optax", "numpy", "python") if n not in intersphinx_mapping]
_MODULES = {
    "jax": r"(jax|jaxlib|jnp|chex)",
    "optax": r"optax",
    "numpy": r"(numpy|np)",
    "python": r"(typing|collections|collections\.abc|contextlib|dataclasses|enum|os|pathlib|functools|types|warnings)",
}
nitpick_ignore_regex = [(r"py:.*", rf"{_MODULES[n]}(\..*)?") for n in _EXTERNAL]
if "python" in _EXTERNAL:  # builtins and typing's names, as annotations spell them
    nitpick_ignore_regex += [
        (r"py:.*", r"(int|float|str|bool|bytes|dict|list|tuple|set|frozenset|object|type|slice|callable)"),
        (r"py:.*", r"(Any|Callable|Iterable|Iterator|Mapping|Sequence|Literal|NamedTuple|TypeAlias|Self)"),
        (r"py:.*", r"(Exception|ValueError|TypeError|RuntimeError|Warning|UserWarning)"),
        (r"py:.*", r"(ArrayLike|Array|PRNGKey|PRNGKeyArray|Numeric|ndarray|NDArray|DTypeLike)"),
    ]
# Optional dependencies the docstrings name (the `disk`, `arviz` extras; the models' libraries).
nitpick_ignore_regex += [(r"py:.*", r"(zarr|orbax|arviz|tqdm|flax|nnx|equinox|eqx|posteriors|torch)(\..*)?")]

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


def _resolve_code_or_xref(app, env, node, contnode):
    """A default-role target the Python domain did not find: the current module's name, the
    name as `sghmc_jax` exports it, or the one documented object whose name ends with it (an
    undotted name matches module-level objects only, so a parameter called `key` never links
    to some state's `key` field); none or several: code, without a warning."""
    from sphinx.util.nodes import make_refnode

    objects = env.domains.python_domain.objects
    target, module = node["reftarget"], node.get("py:module") or ""
    if not node.get("code_or_xref"):  # an annotation naming the defining module, or a private type
        if node.get("refdomain") != "py" or not target.startswith("sghmc_jax."):
            return None
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
        return contnode
    obj = objects[found]
    return make_refnode(app.builder, node["refdoc"], obj.docname, obj.node_id, contnode, found)


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
