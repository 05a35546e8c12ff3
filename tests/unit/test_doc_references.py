"""Every document the sources cite is in the repository, and every [Note: ...] they cite is written
down somewhere in the sources."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted((REPO / "src" / "shardwise").rglob("*.py"))


def test_cited_documents_exist():
    missing = []
    for path in SOURCES:
        text = path.read_text()
        for cited in re.findall(r"(?<![\w/])((?:docs/)?[\w-]+\.md)\b", text):
            if not (REPO / cited).exists():
                missing.append(f"{path.relative_to(REPO)} cites {cited}")
    assert missing == []


def test_cited_notes_are_written():
    texts = {path: path.read_text() for path in SOURCES}
    written = {m for text in texts.values() for m in re.findall(r"^\s*#?\s*\[Note: ([^\]]+)\]\s*$", text, re.M)}
    cited = {(" ".join(m.replace("#", " ").split()), path)  # a citation may wrap onto the next line
             for path, text in texts.items() for m in re.findall(r"\[Note: ([^\]]+)\]", text)}
    assert sorted(f"{p.relative_to(REPO)}: {n}" for n, p in cited if n not in written) == []
