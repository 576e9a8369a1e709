"""The top-level documents link only to files in the repository: a picture or page that is
missing (or ignored by git, as the screenshots once were) fails here, not on a reader."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Inline links and images, [text](target) and ![alt](target "title"), and <img src="...">.
LINK = re.compile(
    r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|<img [^>]*src=\"([^\"]+)\""
)
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
CODE = re.compile(r"`[^`\n]*`")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|#)", re.IGNORECASE)  # https:, mailto:, #anchor


def tracked_files() -> set[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing says which files are tracked")
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(filter(None, listing.stdout.split("\0")))


def top_level_docs() -> list[str]:
    return sorted(path for path in tracked_files() if "/" not in path and path.endswith(".md"))


def relative_targets(markdown: str) -> list[str]:
    """Link and image targets that point into the repository, anchors dropped."""
    prose = CODE.sub("", FENCE.sub("", markdown))
    targets = [inline or html for inline, html in LINK.findall(prose)]
    return [unquote(t.split("#")[0]) for t in targets if not EXTERNAL.match(t)]


def test_every_tracked_top_level_document_is_checked():
    docs = top_level_docs()
    assert "README.md" in docs
    on_disk = {path.name for path in ROOT.glob("*.md")}
    assert on_disk <= set(docs), "top-level documents git does not track"


@pytest.mark.parametrize("doc", top_level_docs() if (ROOT / ".git").exists() else ["README.md"])
def test_links_and_images_point_to_tracked_files(doc):
    tracked = tracked_files()
    folders = {str(Path(path).parent) for path in tracked}
    targets = relative_targets((ROOT / doc).read_text())
    missing = [
        target
        for target in targets
        if target
        and str(Path(target)) not in tracked
        and str(Path(target.rstrip("/"))) not in folders
    ]
    assert missing == [], f"{doc} links to files that are not in git"


def test_the_link_finder_sees_links_images_and_skips_code_and_urls():
    text = (
        "![shot](docs/a.png) [page](RELIABILITY.md#promises) [web](https://example.org)\n"
        '<img src="docs/b.png"> `[not](a-link)` [top](#top)\n```\n[nor](this)\n```\n'
    )
    assert relative_targets(text) == ["docs/a.png", "RELIABILITY.md", "docs/b.png"]
