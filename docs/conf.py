"""Sphinx's settings for the kit's site: `./kit docs` (attendance_kit/docs.py) builds it into build/docs/.

The source directory is the clone itself, so the site's pages stay where a reader of the repository finds them
(README.md, docs/, notebooks/, the draft) and a notebook's link to `../sql/NNN_name.sql` finds that file (the site
offers it as a download). Notebooks are rendered from their committed outputs: nothing runs, no database is needed.
"""

project = "attendance-kit"
author = "the attendance-kit developers"

extensions = ["myst_nb"]
root_doc = "docs/index"
include_patterns = ["README.md", "docs/**", "notebooks/*.ipynb", "attendance_kit/data/draft.md"]
# Sphinx walks the whole source tree before it filters: skip the big folders (the virtual environment, the
# cluster, git, the site itself, the JavaScript client's node_modules) and notebooks' checkpoints.
exclude_patterns = [".*", "**/.*", "build", "tests", "attendance_kit/realtime", "attendance_kit/bench",
                    "**/__pycache__", "docs/conf.py"]

nb_execution_mode = "off"  # the notebooks' outputs as committed (nbval keeps them true)
myst_heading_anchors = 3  # `page.md#a-heading` links, as GitHub renders them
myst_enable_extensions = ["deflist"]

smartquotes = False  # quotes as written, as in the code and the notebooks

html_theme = "sphinx_book_theme"
html_title = "attendance-kit"
html_theme_options = {"show_toc_level": 2}


def setup(app):
    # The kit's SQL is PostgreSQL's: Pygments' generic SQL lexer stops at its dollar-quoted function bodies.
    from pygments.lexers.sql import PostgresLexer

    app.add_lexer("sql", PostgresLexer)
