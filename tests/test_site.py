"""The course website: built by ``make site``'s command, opened page by page in headless Chromium.

The build (Sphinx with myst-nb, the committed notebooks not re-executed) must pass with warnings
as errors; then a local HTTP server on 127.0.0.1 serves it, with every request that leaves the
loopback blocked, and the test checks on every page: each image loaded (non-zero size), the
formulas typeset by the local MathJax (its output present, no raw ``$...$`` left), every
internal link answered; the API page lists the losses and their modules; the search finds
"covariance". Screenshots of the landing page, one notebook and the API page go to
``build/screenshots/site/`` for a person to look at.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from test_browser import CHROMIUM_FLAGS, _chromium, _missing

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "build" / "screenshots" / "site"
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built from the repository as ``make site`` builds it."""
    sphinx = shutil.which("sphinx-build", path=str(Path(sys.executable).parent)) or shutil.which("sphinx-build")
    if sphinx is None:
        _missing("Sphinx is not installed (pip install -e '.[dev]')")
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sphinx, "-W", "--keep-going", "-q", "-b", "html", "-c", "site", ".", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (
        f"the site's build failed or warned:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )
    return out


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    chromium = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield instance
        finally:
            instance.close()


@contextlib.contextmanager
def _opened(browser, url: str):
    """A page at ``url`` (closed afterwards) whose requests beyond 127.0.0.1 are blocked and recorded."""
    page = _open(browser, url)
    try:
        yield page
    finally:
        page.close()


def _open(browser, url: str):
    """A page at ``url`` whose requests beyond 127.0.0.1 are blocked and recorded."""
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.outside = []

    def route(request_route):
        host = urllib.parse.urlsplit(request_route.request.url).hostname
        if host not in ("127.0.0.1", None) and not request_route.request.url.startswith("data:"):
            page.outside.append(request_route.request.url)
            return request_route.abort()
        return request_route.continue_()

    page.route("**/*", route)
    page.missing = []  # local files the page asked for and did not get (a font, a script, an image)
    page.on("response", lambda r: r.status >= 400 and not _optional(r.url) and page.missing.append(r.url))
    page.goto(url, wait_until="load")
    return page


# MathJax's HTML-CSS output probes for its TeX fonts before it falls back to the STIX-Web ones the
# site ships (site/conf.py): those probes may fail, nothing else may
OPTIONAL = ("/_static/mathjax/fonts/HTML-CSS/TeX/", "/_static/mathjax/jax/output/HTML-CSS/fonts/TeX/", "/favicon.ico")


def _optional(url: str) -> bool:
    return any(part in urllib.parse.urlsplit(url).path for part in OPTIONAL)


def _wait_for_mathjax(page) -> None:
    """Wait until the local MathJax has loaded and typeset the page (if it has formulas)."""
    if not page.eval_on_selector_all('script[src*="MathJax.js"]', "els => els.length"):
        return  # Sphinx loads MathJax only on pages whose content has formulas
    page.wait_for_function(
        "() => window.MathJax && window.MathJax.Hub && window.MathJax.Hub.queue.pending === 0 "
        "&& window.MathJax.Hub.queue.running === 0 && document.querySelectorAll('.MathJax, .MathJax_Display').length > 0",
        timeout=60_000,
    )


PAGES = [
    "site/index.html",
    "site/api.html",
    *[f"notebooks/{n}.html" for n in NOTEBOOKS],
    "docs/glossary.html",
    "docs/collapse.html",
    "notebooks/TEACHING.html",
]


@pytest.mark.slow
@pytest.mark.parametrize("page_path", PAGES)
def test_a_page_shows_its_figures_and_formulas_and_its_links_resolve(served, browser, site, page_path):
    page = _open(browser, f"{served}/{page_path}")
    try:
        _wait_for_mathjax(page)
        images = page.eval_on_selector_all(
            "article img", "els => els.map(e => ({src: e.getAttribute('src'), w: e.naturalWidth, h: e.naturalHeight}))"
        )
        broken = [i["src"] for i in images if not (i["w"] > 0 and i["h"] > 0)]
        assert not broken, f"{page_path}: images that did not load: {broken}"
        if page_path.startswith("notebooks/0"):
            committed = (ROOT / page_path.replace(".html", ".ipynb")).read_text()
            figures = committed.count('"image/png"')
            assert len(images) >= figures > 0, (page_path, len(images), figures)
        # Sphinx marks each formula .math.notranslate; MathJax replaces its text by a math/tex script
        # and the typeset output, or by an error
        maths = page.eval_on_selector_all("article .math.notranslate", "els => els.length")
        typeset = page.eval_on_selector_all('article script[type^="math/tex"]', "els => els.length")
        errors = page.eval_on_selector_all("article .MathJax_Error, article merror", "els => els.length")
        assert typeset == maths and not errors, f"{page_path}: {maths} formulas, {typeset} typeset, {errors} errors"
        text = page.eval_on_selector(  # the prose and outputs, not the code (which may hold $ in strings)
            "article",
            "a => { const c = a.cloneNode(true); c.querySelectorAll('pre, code, script, .highlight').forEach(e => e.remove());"
            " return c.innerText; }",
        )
        raw = re.findall(r"(?<![\\\w])\$[^$\n]{1,80}\$|\\\(.{1,80}?\\\)", text)
        assert not raw, f"{page_path}: formulas left as text: {raw[:3]}"
        links = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
        for link in {href.split("#")[0] for href in links if href.startswith(served)}:
            with urllib.request.urlopen(link, timeout=10) as reply:
                assert reply.status == 200, link
        assert not page.outside, f"{page_path} asked the network for {page.outside[:3]}"
        assert not page.missing, f"{page_path}: files not found: {page.missing[:3]}"
        if page_path in ("site/index.html", "site/api.html", "notebooks/02_collapse.html"):
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / (Path(page_path).stem + ".png")), full_page=False)
    finally:
        page.close()


@pytest.mark.slow
def test_the_api_page_lists_the_losses_and_their_modules(served, browser):
    names = ("vicreg_loss", "barlow_twins_loss", "covariance_loss", "VICRegLoss", "BarlowTwinsLoss", "collapse_report",
             "load_encoder", "decorr_lite.losses.vicreg", "decorr_lite.losses.covariance")  # fmt: skip
    with _opened(browser, f"{served}/site/api.html") as page:
        text = page.inner_text("article")
        assert [name for name in names if name not in text] == []
        _wait_for_mathjax(page)


@pytest.mark.slow
def test_the_search_finds_covariance(served, browser):
    with _opened(browser, f"{served}/search.html?q=covariance") as page:
        page.wait_for_selector("#search-results li, ul.search li", timeout=60_000)
        assert page.eval_on_selector_all("#search-results li, ul.search li", "els => els.length") >= 3


def test_the_citation_file_is_valid_and_names_this_version():
    import decorr_lite

    cffconvert = shutil.which("cffconvert", path=str(Path(sys.executable).parent)) or shutil.which("cffconvert")
    if cffconvert is None:
        _missing("cffconvert is not installed (make installs it)")
    result = subprocess.run(
        [cffconvert, "--validate", "-i", str(ROOT / "CITATION.cff")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    version = re.search(r"^version: *(\S+)", (ROOT / "CITATION.cff").read_text(), re.M).group(1)
    assert version == decorr_lite.__version__
    broken = (ROOT / "CITATION.cff").read_text().replace("cff-version: 1.2.0", "cff-version: 1.2.0\nnot-a-key: 1")
    bad = ROOT / "build" / "CITATION-invalid.cff"
    bad.parent.mkdir(exist_ok=True)
    bad.write_text(broken)
    assert subprocess.run([cffconvert, "--validate", "-i", str(bad)], capture_output=True).returncode != 0
