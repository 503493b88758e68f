"""The shell blocks of a Markdown page and the ``<!-- ci: ... -->`` comment above each.

docs/containers.md says above every shell block how it is checked:

    <!-- ci: run NAME (note) -->                .ci/container-build.sh runs this block verbatim
    <!-- ci: checked by WHERE (note) -->       a test or script named by WHERE covers it
    <!-- ci: not runnable here: REASON -->      why the CI machine cannot run it

``python3 .ci/doc_blocks.py PAGE NAME`` prints the block marked ``run NAME`` (for the CI
script); tests/test_containers.py imports :func:`blocks` to check that every block is marked.
Standard library only: the CI script runs it with the host's python3.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_MARK = re.compile(r"<!--\s*ci:\s*(.*?)\s*-->", re.DOTALL)
_FENCE = re.compile(r"^```(\w*)\s*$")


def blocks(text: str) -> list[dict]:
    """Every fenced block of ``text``: ``{"lang", "code", "mark", "line"}``; ``mark`` is the
    text of the ``ci:`` comment that ends right before the fence (blank lines allowed in
    between), or None."""
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = "\n".join(lines[:i]).rstrip()
        mark = None
        if before.endswith("-->"):
            comments = list(_MARK.finditer(before))
            if comments and comments[-1].end() == len(before):
                mark = " ".join(comments[-1].group(1).split())
        found.append({"lang": opening.group(1), "code": "\n".join(lines[i + 1:end]),
                      "mark": mark, "line": i + 1})
        i = end + 1
    return found


def run_block(text: str, name: str) -> str:
    """The code of the block marked ``run NAME``."""
    matches = [b["code"] for b in blocks(text)
               if b["mark"] and re.fullmatch(rf"run {re.escape(name)}(\s.*)?", b["mark"])]
    if len(matches) != 1:
        raise SystemExit(f"{len(matches)} blocks marked 'ci: run {name}' (expected 1)")
    return matches[0]


if __name__ == "__main__":
    page, name = sys.argv[1:]
    print(run_block(Path(page).read_text(encoding="utf-8"), name))
