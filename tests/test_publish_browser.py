"""`tlbench publish` on the committed results, read in headless Chromium as a reader sees it: every page of the
site crawled from the index, every image loaded, every internal link resolving, the tables holding the records'
numbers, no console errors; a screenshot of the index is left in the artifacts folder."""
import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from bench import store, tables
from conftest import ROOT, tlbench, unmarked

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install "
                               "-e '.[test]')")
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (scripts/setup.sh test installs "
                                "Debian's chromium; Playwright's own download needs the internet)")
PUBLISHED = ROOT / "results" / "published"
ARTIFACTS = Path(os.environ.get("TLBENCH_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("results")
    for suite in PUBLISHED.iterdir():
        shutil.copytree(suite, results / suite.name, ignore=shutil.ignore_patterns("figures", "report.*"))
    out = results.parent / "site"
    p = tlbench("publish", results, "--out", out)
    assert p.returncode == 0, p.stderr
    return out


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def crawl(site, browser) -> dict:
    """Every page reachable from the index: page -> what the reader's browser found on it."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(f"{page.url}: {m.text}"))
    page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
    found, todo = {}, [site / "index.html"]
    while todo:
        path = todo.pop()
        if path in found:
            continue
        page.goto(path.as_uri())
        found[path] = {
            "images": page.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.naturalWidth])"),
            "links": page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))"),
            "ids": set(page.eval_on_selector_all("[id]", "els => els.map(e => e.id)"))}
        if path.name == "index.html":
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=ARTIFACTS / "site-index.png")
        todo += [target for href in found[path]["links"] if (target := _target(path, href)).suffix == ".html"]
    page.close()
    return {"pages": found, "errors": errors, "site": site}


def _target(page: Path, href: str) -> Path:
    parts = urlsplit(href)
    assert not parts.scheme and not parts.netloc, f"{page.name}: external link {href}"
    return (page.parent / unquote(parts.path)).resolve() if parts.path else page


def test_every_page_loads_its_images_without_console_errors(crawl):
    pages = crawl["pages"]
    assert len(pages) == len(list(crawl["site"].glob("*.html")))  # every page is reachable from the index
    images = [(p.name, src, width) for p, seen in pages.items() for src, width in seen["images"]]
    assert images and all(width > 0 for _, _, width in images), [i for i in images if i[2] <= 0]
    assert crawl["errors"] == []


def test_every_internal_link_resolves_to_a_file_and_anchor(crawl):
    broken = []
    for path, seen in crawl["pages"].items():
        for href in seen["links"]:
            target, anchor = _target(path, href), urlsplit(href).fragment
            if not target.is_file() or (anchor and anchor not in crawl["pages"].get(target, {}).get("ids", ())):
                broken.append(f"{path.name}: {href}")
    assert broken == []


def test_the_index_holds_the_tables_numbers_and_the_history_two_points(site, browser):
    records = store.scan(PUBLISHED / "offline-default").records
    table, _ = tables.summarise(records)
    frozen = table[table["mode"] == "frozen"].iloc[0]
    expected = tables.cell(frozen, "val_acc_5", tables.pct)
    page = browser.new_page()
    page.goto((site / "index.html").as_uri())
    card = page.locator("section.card", has=page.locator("h2", has_text="offline-default"))
    comparison = card.locator("table", has=page.locator("th", has_text="Training Mode"))
    row = comparison.locator("tbody tr", has_text="Frozen weights").first
    headers = comparison.locator("thead th").all_inner_texts()
    cells = row.locator("td").all_inner_texts()
    assert unmarked(cells[headers.index("Val Acc @ 5 epoch")]) == expected
    row.locator("a").first.click()
    history = page.locator("table.history tbody tr")
    assert history.count() >= 2
    assert {"977f244", "22e1086"} <= set(history.locator("td:nth-child(5)").all_inner_texts())
    page.close()
