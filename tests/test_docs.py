"""`./kit docs`: the site builds from the committed notebooks and docs/ (no database), every notebook and page is
in it with its outputs, the notebooks in course order, and every internal link resolves."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from attendance_kit import docs
from attendance_kit.paths import DRAFT_FILE, NOTEBOOKS_DIR, PROJECT_DIR

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
PAGES = [PROJECT_DIR / "README.md", DRAFT_FILE, *sorted(docs.DOCS_DIR.glob("*.md"))]


class Page(HTMLParser):
    """What the checks read from one HTML page: its ids, its links in order, the links in its tables of
    contents, and its text."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.toctree_links: list[str] = []
        self._chunks: list[str] = []
        self._open_divs: list[bool] = []  # per open <div>: is it a table of contents?
        self.feed(path.read_text(encoding="utf-8"))
        self.text = "".join(self._chunks)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name in ("id", "name"):
            if attributes.get(name):
                self.ids.add(attributes[name])
        if tag == "div":
            self._open_divs.append("toctree-wrapper" in (attributes.get("class") or "").split())
        link = attributes.get("href") if tag in ("a", "link") else attributes.get("src")
        if link:
            self.links.append(link)
            if tag == "a" and any(self._open_divs):
                self.toctree_links.append(link)

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._open_divs:
            self._open_divs.pop()

    def handle_data(self, data: str) -> None:
        self._chunks.append(data)


def broken_links(site: Path) -> Iterator[str]:
    """Each link between the site's own files that leads nowhere: a missing file, or an anchor its page lacks."""
    pages: dict[Path, Page] = {}

    def page(path: Path) -> Page:
        if path not in pages:
            pages[path] = Page(path)
        return pages[path]

    for path in sorted(site.rglob("*.html")):
        if path.is_relative_to(site / "_static"):  # the theme's templates, not pages
            continue
        for link in page(path).links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc:  # another site, data: and mailto: links
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if not target.is_file():
                yield f"{path.relative_to(site)}: {link} (no such file)"
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in page(target).ids:
                yield f"{path.relative_to(site)}: {link} (no such anchor)"


def squeezed(text: str) -> str:
    """Text without whitespace and Markdown's emphasis and code marks: how a page and an output are compared, as
    HTML renders those as tags and a highlighted code block as a span per token."""
    return re.sub(r"[\s*`]", "", text)


def shown_outputs(notebook: Path) -> Iterator[str]:
    """Text that the notebook's committed outputs show, as a reader sees it: each line of a stream, a plain-text
    result, the text of an HTML result (a DataFrame, the contract's table), a Markdown result's code."""
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if output["output_type"] == "stream":  # without terminal colours, which the page shows as styles
                yield from re.sub(r"\x1b\[[0-9;]*m", "", "".join(output["text"])).splitlines()
            elif "text/html" in data:
                yield html.unescape(re.sub(r"<[^>]+>", "", "".join(data["text/html"])))
            elif "text/markdown" in data:
                yield from (line for line in "".join(data["text/markdown"]).splitlines() if not line.startswith("```"))
            elif "text/plain" in data and "image/png" not in data:
                yield "".join(data["text/plain"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return docs.build_site(tmp_path_factory.mktemp("site")).parent


def test_the_notebooks_are_the_walkthrough_in_course_order(site: Path) -> None:
    index = Page(site / docs.START_PAGE)
    walkthrough = [link for link in index.toctree_links if link.startswith("../notebooks/")]
    assert walkthrough == [f"../notebooks/{notebook.stem}.html" for notebook in NOTEBOOKS]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda notebook: notebook.stem)
def test_each_notebook_page_shows_its_committed_outputs(site: Path, notebook: Path) -> None:
    page = Page(site / "notebooks" / f"{notebook.stem}.html")
    outputs = [squeezed(text) for text in shown_outputs(notebook) if text.strip()]
    assert outputs, f"{notebook.name} has no outputs committed"
    shown = squeezed(page.text)
    missing = [text for text in outputs if text not in shown]
    assert not missing, f"{notebook.name}'s page lacks {len(missing)} of its {len(outputs)} outputs: {missing[:3]}"
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    pictures = sum("image/png" in output.get("data", {}) for cell in cells for output in cell.get("outputs", []))
    assert sum(link.startswith("../_images/") for link in page.links) >= pictures  # and the link check finds them


@pytest.mark.parametrize("source", PAGES, ids=lambda source: source.name)
def test_each_page_is_in_the_site(site: Path, source: Path) -> None:
    page = Page(site / source.relative_to(PROJECT_DIR).with_suffix(".html"))
    title = source.read_text(encoding="utf-8").splitlines()[0].removeprefix("# ")
    assert squeezed(title) in squeezed(page.text)


def test_the_module_table_names_every_module() -> None:
    """docs/package.md's table: each module and package of attendance_kit (the realtime package's own modules are
    named by its docstring)."""
    table = (docs.DOCS_DIR / "package.md").read_text(encoding="utf-8")
    package = PROJECT_DIR / "attendance_kit"
    modules = [path for path in package.glob("*.py") if path.name != "__init__.py"]
    packages = [path.parent for path in package.glob("*/__init__.py")]
    unnamed = [path.name for path in modules + packages
               if f"`attendance_kit/{path.name}{'/' if path.is_dir() else ''}`" not in table]
    assert unnamed == []


def test_the_readme_stays_a_five_minute_read() -> None:
    assert len((PROJECT_DIR / "README.md").read_text(encoding="utf-8").splitlines()) <= 160


def test_every_internal_link_resolves(site: Path) -> None:
    assert (site / "index.html").is_file() and (site / "docs" / "deviations.html").is_file()
    assert list(broken_links(site)) == []


def test_the_link_check_finds_a_missing_page_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "a.html").write_text('<p id="here"><a href="b.html#here">b</a> <a href="#there">x</a></p>')
    (tmp_path / "b.html").write_text('<a href="a.html#here">a</a> <a href="c.html">c</a> <img src="x.png">')
    assert sorted(broken_links(tmp_path)) == ["a.html: #there (no such anchor)", "a.html: b.html#here (no such anchor)",
                                              "b.html: c.html (no such file)", "b.html: x.png (no such file)"]


def test_a_site_folder_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "site").write_text("")
    result = subprocess.run([sys.executable, "-m", "attendance_kit.cli", "docs", "--output", str(tmp_path / "site")],
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"attendance-kit: error: the site's folder {tmp_path / 'site'} is a file: give --output a "
                             "folder you may write, or leave it out (build/docs in the clone)\n")
