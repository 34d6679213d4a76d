"""The console page's files, without a browser: every file the page loads exists in the package,
the page stays loadable under `script-src 'self'; style-src 'self'`, and every vendored library
carries its licence and provenance. (tests/browser drives the page itself.)"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

import ecokit.console

STATIC = Path(ecokit.console.__file__).parent / "static"
MODULES = sorted((STATIC / "js").glob("*.js"))


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self.style_elements = 0
        self.style_attributes: list[str] = []
        self.handlers: list[str] = []
        self._in_script_without_src = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            if values.get(name):
                self.urls.append(str(values[name]))
        if tag == "script":
            self._in_script_without_src = not values.get("src")
        if tag == "style":
            self.style_elements += 1
        if "style" in values:
            self.style_attributes.append(tag)
        self.handlers += [name for name in values if name.startswith("on")]

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script_without_src = False

    def handle_data(self, data: str) -> None:
        if self._in_script_without_src and data.strip():
            self.inline_scripts += 1


@pytest.fixture(scope="module")
def page() -> _Page:
    parser = _Page()
    parser.feed((STATIC / "index.html").read_text())
    return parser


def test_every_file_the_page_loads_is_in_the_package(page: _Page) -> None:
    local = [url for url in page.urls if not re.match(r"^[a-z]+:|^#", url)]
    assert local, "index.html loads nothing?"
    missing = [url for url in local if not (STATIC.parent / url).is_file()]
    assert missing == [], "index.html refers to files the package does not have"


def test_the_page_needs_no_inline_script_or_style(page: _Page) -> None:
    # The console sends script-src 'self'; style-src 'self': inline code would be refused.
    assert page.inline_scripts == 0
    assert page.style_elements == 0
    assert page.style_attributes == []
    assert page.handlers == []


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_module_imports_resolve(module: Path) -> None:
    for target in re.findall(r"^import .*? from '([^']+)';", module.read_text(), flags=re.M):
        assert target.startswith("."), f"{module.name}: imports {target!r} from outside the package"
        assert (module.parent / target).resolve().is_file(), f"{module.name}: {target} does not exist"


def test_modules_never_insert_html() -> None:
    # Device-supplied text (ids, command details, shadows) must go in as text, never as HTML.
    offenders = [m.name for m in MODULES if re.search(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML", m.read_text())]
    assert offenders == []


@pytest.mark.parametrize("folder", sorted(p for p in (STATIC / "vendor").iterdir() if p.is_dir()),
                         ids=lambda p: p.name)
def test_vendored_libraries_carry_licence_and_provenance(folder: Path) -> None:
    assert (folder / "LICENSE").read_text().strip()
    vendor = (folder / "VENDOR.md").read_text()
    version = folder.name.rsplit("-", 1)[1]
    assert version in vendor
    assert re.search(r"sha1 .*`[0-9a-f]{40}`", vendor), "no npm tarball checksum"
    assert "licence:" in vendor
