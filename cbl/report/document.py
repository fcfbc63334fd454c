"""The report as a list of blocks, rendered to Markdown and to one self-contained HTML page.

Both files come from the same blocks, so they cannot drift apart. The renderer
is written by hand rather than converting the Markdown with a library because
the blocks are few (headings, paragraphs, lists, tables, images, code) and cbl
declares no Markdown package; the HTML embeds every image as base64 PNG so the
page can be mailed or opened anywhere on its own.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cbl.yamlio import atomic_write_bytes

__all__ = ["Block", "Bullets", "Code", "Heading", "Image", "Paragraph", "Table", "Writer", "to_html", "to_markdown"]


@dataclass
class Heading:
    level: int  # 1 = page title
    text: str


@dataclass
class Paragraph:
    text: str  # may hold `code` and **bold** spans


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    right: tuple[int, ...] = ()  # columns aligned right (numbers)


@dataclass
class Image:
    file: Path  # a PNG beside the report
    alt: str
    caption: str = ""


@dataclass
class Code:
    text: str
    language: str = ""


Block = Heading | Paragraph | Bullets | Table | Image | Code


# --------------------------------------------------------------------------- Markdown
def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    rule = ["---:" if i in table.right else "---" for i in range(len(table.header))]
    return ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in [table.header, rule, *table.rows]]


def to_markdown(blocks: Sequence[Block]) -> str:
    """Markdown with images referenced by file name (the PNGs lie beside report.md)."""
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            parts.append("\n".join(_md_table(block)))
        elif isinstance(block, Image):
            parts.append(f"![{block.alt}]({block.file.name})" + (f"\n\n*{block.caption}*" if block.caption else ""))
        elif isinstance(block, Code):
            parts.append(f"```{block.language}\n{block.text.rstrip()}\n```")
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------- HTML
_CODE_SPAN = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
code, pre { background: #f4f4f4; font-family: ui-monospace, monospace; }
pre { padding: 0.6em; overflow-x: auto; }
figure { margin: 1em 0; } figure img { max-width: 100%; } figcaption { font-style: italic; color: #555; }
"""


def _inline(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = _CODE_SPAN.sub(r"<code>\1</code>", escaped)
    return _BOLD.sub(r"<strong>\1</strong>", escaped)


_NUM = ' class="num"'


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{_inline(c)}</th>" for c in table.header)
    body = "".join(
        "<tr>"
        + "".join(f"<td{_NUM if i in table.right else ''}>{_inline(c)}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in table.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_image(image: Image) -> str:
    data = base64.b64encode(image.file.read_bytes()).decode("ascii")
    caption = f"<figcaption>{_inline(image.caption)}</figcaption>" if image.caption else ""
    return f'<figure><img alt="{html.escape(image.alt)}" src="data:image/png;base64,{data}">{caption}</figure>'


def to_html(blocks: Sequence[Block], title: str) -> str:
    """A standalone HTML page: inline CSS, images embedded as base64 PNG."""
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            parts.append(_html_table(block))
        elif isinstance(block, Image):
            parts.append(_html_image(block))
        elif isinstance(block, Code):
            parts.append(f"<pre><code>{html.escape(block.text.rstrip())}</code></pre>")
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


class Writer:
    """Collects blocks and figures for one report folder."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.blocks: list[Block] = []
        self.figures: list[Path] = []

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def figure(self, name: str, png: bytes, alt: str, caption: str = "") -> None:
        path = atomic_write_bytes(self.out_dir / name, png)
        self.figures.append(path)
        self.blocks.append(Image(path, alt, caption))
