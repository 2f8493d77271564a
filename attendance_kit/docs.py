"""The kit's site: the README, the pages in docs/ and the walkthrough's notebooks as static HTML (`./kit docs`).

Sphinx with myst-nb builds it, the notebooks rendered from their committed outputs: nothing is executed and no
database is needed. docs/conf.py holds Sphinx's settings; docs/developers.md says why this tool.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import KitError
from .paths import PROJECT_DIR

DOCS_DIR = PROJECT_DIR / "docs"
SITE_DIR = PROJECT_DIR / "build" / "docs"
START_PAGE = "docs/index.html"  # the site's root document, docs/index.md


def build_site(output_dir: Path = SITE_DIR) -> Path:
    """Build the site into `output_dir` and return its front page. Any warning (a broken link, a page in no
    table of contents) fails the build: Sphinx prints each, then the build raises `KitError`."""
    try:
        from sphinx.cmd.build import build_main
    except ImportError:
        raise KitError("Sphinx is not installed: `./kit docs` installs it, or pip install -e '.[test]'") from None
    prepare(output_dir)
    # Every page read afresh each time: Sphinx warns only about the pages it reads, so a page left unread because
    # it did not change would pass a second build with the broken link the first one reported.
    status = build_main(["--builder", "html", "--conf-dir", str(DOCS_DIR), "--fresh-env", "--fail-on-warning",
                         "--quiet", str(PROJECT_DIR), str(output_dir)])
    if status != 0:
        raise KitError("the site did not build: Sphinx's messages above name each file and line to fix")
    front_page = output_dir / "index.html"
    # The root document sits in docs/, as in the repository: the site's own index.html leads there.
    front_page.write_text(f'<!DOCTYPE html>\n<meta http-equiv="refresh" content="0; url={START_PAGE}">\n'
                          f'<a href="{START_PAGE}">attendance-kit</a>\n', encoding="utf-8")
    return front_page


def prepare(output_dir: Path) -> None:
    """The site's folder, made if missing, or one line saying why it cannot be (Sphinx would print a traceback)."""
    fix = "give --output a folder you may write, or leave it out (build/docs in the clone)"
    if output_dir.exists() and not output_dir.is_dir():
        raise KitError(f"the site's folder {output_dir} is a file: {fix}")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise KitError(f"cannot make the site's folder {output_dir}: {error.strerror}: {fix}") from None
    if not os.access(output_dir, os.W_OK):
        raise KitError(f"cannot write to the site's folder {output_dir}: {fix}")
