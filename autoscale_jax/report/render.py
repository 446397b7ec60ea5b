"""Markdown to one self-contained HTML page (the `markdown` package).

The figures are PNG files next to index.html in report/, referenced by
relative paths, so the directory can be copied or served as it is.
"""

from __future__ import annotations

import html

import markdown

_EXTENSIONS = ("tables", "fenced_code", "sane_lists")

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;
  max-width:70em;margin:2em auto;padding:0 1em;line-height:1.45;color:#222}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.2em}
h2{font-size:1.3em;margin-top:1.8em;border-bottom:1px solid #eee}
body>p:first-of-type{background:#f3f7ff;border-left:4px solid #3b6fd6;
  padding:.6em .9em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafafa}
code{background:#f4f4f4;padding:0 .2em;border-radius:3px}
pre{background:#f7f7f7;padding:.6em;overflow:auto;max-height:24em;
  font-size:.82em}
img{max-width:100%;display:block;margin:.6em 0}
"""


def markdown_to_html(md: str, title: str) -> str:
  """A complete HTML5 document for ``md`` with a small table stylesheet."""
  body = markdown.markdown(md, extensions=list(_EXTENSIONS),
                           output_format="html")
  return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n"
          "<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, "
          "initial-scale=1\">\n"
          f"<title>AutoScale report: {html.escape(title)}</title>\n"
          f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n"
          "</html>\n")
