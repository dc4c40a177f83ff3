"""The documentation site (docs/, `make docs`): it builds with warnings as errors and every
reference resolved (`sphinx -W -n`), every public name has an API entry and a docstring, its
internal links and anchors resolve, and nothing is fetched from the network; a slow test opens
pages in headless Chromium and checks that the maths rendered."""

from __future__ import annotations

import html.parser
import importlib
import pathlib
import posixpath
import re
import subprocess
import sys
import time
import urllib.parse

import pytest

import sghmc_jax
from sghmc_jax import kernels

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HTML = DOCS / "_build" / "html"

# The modules of the API reference: `sghmc_jax`, every functional face, and these.
PUBLIC = [
    "sghmc_jax",
    "sghmc_jax.sgmcmc",
    *[f"sghmc_jax.sgmcmc.{rule}" for rule in kernels.rules()],
    *[
        f"sghmc_jax.{m}"
        for m in (
            "stein",
            "control_variates",
            "diagnostics",
            "schedules",
            "types",
            "kernels",
            "sampler",
            "transforms",
            "log_posterior",
        )
    ],
]


@pytest.fixture(scope="module")
def site() -> pathlib.Path:
    """The site, built as `make docs` builds it but with -W -n: a warning or an unresolved
    reference fails the build (incremental: an unchanged page is not read again)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-W", "-n", "--keep-going", "-q", str(DOCS), str(HTML)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, f"sphinx -W -n failed:\n{proc.stderr[-6000:]}"
    assert not proc.stderr.strip(), proc.stderr[-6000:]
    print(f"docs built in {time.perf_counter() - start:.1f} s")
    return HTML


def _inventory(site: pathlib.Path) -> dict[str, str]:
    """objects.inv as {name: uri}: what the site documents, read back as intersphinx would."""
    from sphinx.util.inventory import InventoryFile

    with open(site / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", posixpath.join)
    return {
        name: getattr(item, "uri", None) or item[2]
        for kind, items in inventory.items()
        if kind.startswith("py:")
        for name, item in items.items()
    }


def _public_names() -> list[tuple[str, str, object]]:
    return [(m, n, getattr(importlib.import_module(m), n)) for m in PUBLIC for n in importlib.import_module(m).__all__]


def test_every_public_name_has_an_api_entry(site):
    """Every name of a public module's `__all__` is documented, where the module defines it or,
    for a name `sghmc_jax` exports (the optax faces, `sample`, ...), as `sghmc_jax.<name>`."""
    documented = _inventory(site)
    missing = [
        f"{m}.{n}"
        for m, n, obj in _public_names()
        if f"{m}.{n}" not in documented and not (getattr(sghmc_jax, n, None) is obj and f"sghmc_jax.{n}" in documented)
    ]
    assert not missing, f"public names with no API entry: {missing}"
    assert len(_public_names()) > 100, "the walk found too few names"


def test_every_public_name_has_a_docstring():
    """A docstring of its own: not a NamedTuple's generated `Name(field, ...)`, not inherited."""

    def own_doc(obj) -> str:
        doc = obj.__doc__ or ""
        if isinstance(obj, type):
            inherited = {base.__doc__ for base in obj.__mro__[1:]}
            if doc in inherited or re.fullmatch(rf"{obj.__name__}\(.*\)", doc):
                return ""
        return doc.strip()

    missing = [
        f"{m}.{n}"
        for m, n, obj in _public_names()
        if not isinstance(obj, str) and not own_doc(obj) and not _is_alias_documented_in_source(m, n)
    ]
    assert not missing, f"public names without a docstring: {missing}"


def _is_alias_documented_in_source(module: str, name: str) -> bool:
    """A type alias (`ArrayTree = ...`) carries its docstring as the string after it, which
    autodoc reads from the source: look for it there."""
    source = pathlib.Path(importlib.import_module(module).__file__ or "").read_text()
    return re.search(rf"^{name}(: TypeAlias)? = .*\n\"\"\"\S", source, flags=re.M) is not None


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.assets: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"] or "")
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        for key in ("src", "href") if tag in ("script", "img", "link", "iframe", "source") else ():
            if a.get(key):
                self.assets.append(a[key] or "")


def _parse(page: pathlib.Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_internal_links_and_anchors_resolve_and_no_asset_is_remote(site):
    """Every relative link of every page reaches a file of the site, and its #anchor an id on
    that page; every script, stylesheet and image is a file of the site (the site works offline:
    MathJax is bundled, the notebooks' figures are files)."""
    pages = sorted(p for p in site.rglob("*.html") if not {"_sources", "_modules", "_static"} & set(p.parts))
    parsed = {p: _parse(p) for p in pages}
    broken, remote = [], []
    for page, links in parsed.items():
        for href in links.links:
            url = urllib.parse.urlsplit(href)
            if url.scheme or href.startswith("//"):
                continue  # an external link: followed by the reader, not needed to read the site
            target = (page.parent / urllib.parse.unquote(url.path)).resolve() if url.path else page
            if not target.is_file():
                broken.append(f"{page.relative_to(site)} -> {href}")
            elif url.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else _parse(target).ids
                if urllib.parse.unquote(url.fragment) not in ids:
                    broken.append(f"{page.relative_to(site)} -> {href} (no such anchor)")
        for src in links.assets:
            url = urllib.parse.urlsplit(src)
            if url.scheme in ("http", "https") or src.startswith("//"):
                remote.append(f"{page.relative_to(site)}: {src}")
            elif not url.scheme and url.path and not (page.parent / urllib.parse.unquote(url.path)).resolve().is_file():
                broken.append(f"{page.relative_to(site)} -> {src} (asset)")
    assert len(pages) > 30, [p.name for p in pages]
    assert not broken, f"{len(broken)} broken: {broken[:20]}"
    assert not remote, f"assets fetched from the network: {remote[:20]}"
    mathjax = re.findall(
        r'<script[^>]*src="([^"]*tex-chtml\.js)[^"]*"', (site / "guides" / "samplers.html").read_text()
    )
    assert mathjax and (site / "guides" / urllib.parse.urlsplit(mathjax[0]).path).resolve().is_file(), mathjax


def test_names_of_jax_optax_numpy_and_python_link_to_their_docs(site):
    """Intersphinx from the inventories shipped in docs/_inventories/ (no network): names of JAX,
    optax, NumPy and Python in signatures and docstrings render as links to those projects'
    pages, at the object's own anchor (a private home such as `jax.jaxlib._jax.Array` links
    as its public name)."""
    wanted = {
        "https://docs.jax.dev/en/latest/": ["jax.Array", "jax.random.key", "jax.sharding.Mesh", "jax.typing.ArrayLike"],
        "https://optax.readthedocs.io/en/latest/": ["optax.GradientTransformationExtraArgs", "optax.chain"],
        "https://numpy.org/doc/stable/": ["numpy.ndarray"],
        "https://docs.python.org/3/": ["collections.abc.Callable"],
    }
    for inventory in ("jax", "optax", "numpy", "python"):
        assert (DOCS / "_inventories" / f"{inventory}.inv").is_file(), inventory
    pages = [p for p in site.rglob("*.html") if not {"_sources", "_modules", "_static"} & set(p.parts)]
    external = {href for page in pages for href in _parse(page).links if href.startswith("https://")}
    for prefix, names in wanted.items():
        for name in names:
            assert any(h.startswith(prefix) and h.endswith(f"#{name}") for h in external), (prefix, name)
    private = [h for h in external if "._" in h.partition("#")[2]]
    assert not private, private[:10]


def test_signatures_name_the_type_aliases_and_public_types(site):
    """Signatures and field types read `ArrayTree` (not its expansion `Array | ndarray | bool |
    number | Iterable[ArrayTree] | Mapping[Any, ArrayTree]`, which only the alias's own entry
    shows), `ArrayLike` (not `Array | ndarray | bool | number | bool | int | float | complex`)
    and `jax.Array` (not its private home `jax.jaxlib._jax.Array`)."""

    def text(page: pathlib.Path) -> str:
        return html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))

    api = {p.relative_to(site).as_posix(): text(p) for p in (site / "api").rglob("*.html")}
    assert "predictive_mean: ArrayTree | None" in api["api/sghmc_jax.html"]
    assert "alpha: ArrayLike = 0.01" in api["api/sghmc_jax.html"]
    assert "momenta: ArrayTree | float | None = None" in api["api/sghmc_jax.html"]
    assert "ScalarOrSchedule: TypeAlias = float | jax.Array | sghmc_jax.types.Schedule" in api["api/types.html"]
    expanded = [p for p, t in api.items() if "Iterable[ArrayTree]" in t and p != "api/types.html"]
    assert not expanded, expanded
    assert api["api/types.html"].count("Iterable[ArrayTree]") == 2  # ArrayTree's and LogProbFn's "alias of"
    private = [p for p, t in api.items() if "jax.jaxlib" in t or "TypeAliasForwardRef" in t]
    assert not private, private


def test_every_page_of_the_site_is_built(site):
    """The pages issue 21 asks for: the getting started, the guides, the 9 notebooks (rendered
    with their committed outputs), an API page per module and per functional face, the
    developer page."""
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) == 9, notebooks
    for nb in notebooks:
        page = (site / "notebooks" / f"{nb}.html").read_text()
        assert "<img" in page or "cell_output" in page, f"{nb}: no output rendered"
    for guide in (
        "optax",
        "functional",
        "sampler",
        "minibatches",
        "control_variates",
        "models",
        "diagnosing",
        "scaling",
        "samplers",
        "performance",
    ):
        assert (site / "guides" / f"{guide}.html").is_file(), guide
    for module in PUBLIC[1:]:
        short = module.removeprefix("sghmc_jax.").replace(".", "/")
        assert (site / "api" / f"{short}.html").is_file(), module
    for page in ("index", "getting_started", "developer", "api/sghmc_jax"):
        assert (site / f"{page}.html").is_file(), page
