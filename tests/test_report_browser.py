"""The report page in headless Chromium: loads without console errors, one row per entry,
and clicking a column header sorts the rows.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them)
and selenium (the ``dev`` extra). Without them the test fails: the page's behaviour is a
deliverable, not an optional extra.
"""

import shutil

import pytest

from memorybench.results.leaderboard import publish
from memorybench.results.report import write_report
from memorybench.run.request import RunOptions
from memorybench.run.runner import run
from memorybench.suites.spec import load_suite

INSTALL_HINT = "apt-get install -y chromium chromium-driver (.ci/run does this) and pip install selenium"


def _browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"selenium is not installed: {INSTALL_HINT}")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail(f"headless Chromium is missing (chromium={chromium}, chromedriver={driver}): {INSTALL_HINT}")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--allow-file-access-from-files", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture(scope="module")
def driver():
    browser = _browser()  # before the page is built: a missing browser fails fast
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A report of three real smoke-v1 entries (none, and wanda-prune at two settings)."""
    folder = tmp_path_factory.mktemp("results")
    cache = tmp_path_factory.mktemp("cache")
    paths = []
    for i, (method, settings) in enumerate([("none", None), ("wanda-prune", {"timesteps": 2}),
                                            ("wanda-prune", {"timesteps": 2, "sparsity": 0.2})]):
        out = folder / f"r{i}.json"
        run(load_suite("smoke-v1"), method, settings,
            RunOptions(output=str(out), cache_dir=str(cache), progress=False, batch_size=8))
        paths.append(out)
    board = folder / "smoke-v1.json"
    publish(paths, board)
    return write_report(board, tmp_path_factory.mktemp("site"))


def _column(driver, col):
    rows = driver.find_elements("css selector", "#leaderboard tbody tr")
    return [r.find_elements("css selector", "th, td")[col].get_attribute("data-value") for r in rows]


def _pairs(driver, col):
    rows = driver.find_elements("css selector", "#leaderboard tbody tr")
    return {r.get_attribute("data-config"): r.find_elements("css selector", "th, td")[col].get_attribute("data-value")
            for r in rows}


def test_report_page_in_headless_chromium(driver, page):
    driver.get(page.as_uri())
    assert driver.title.startswith("memorybench leaderboard: smoke-v1")
    rows = driver.find_elements("css selector", "#leaderboard tbody tr")
    assert sorted(r.get_attribute("data-method") for r in rows) == ["none", "wanda-prune", "wanda-prune"]
    # every image on the page loaded (thumbnail grids beside the page)
    broken = driver.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    assert broken == [] and len(driver.find_elements("css selector", "img")) == 3

    heads = driver.find_elements("css selector", "#leaderboard thead th")
    names = [h.get_attribute("data-column") for h in heads]
    col = names.index("pixel_diversity_general")
    lower_first = heads[col].get_attribute("data-higher-is-better") != "true"
    before = _column(driver, col)
    configs = [r.get_attribute("data-config") for r in driver.find_elements("css selector", "#leaderboard tbody tr")]
    values = [float(v) for v in before]
    assert len(set(values)) == 3  # three different numbers, so the order is checkable

    heads[col].click()
    first = [float(v) for v in _column(driver, col)]
    assert first == sorted(values, reverse=not lower_first)  # best first
    assert heads[col].get_attribute("aria-sort") == ("ascending" if lower_first else "descending")
    heads[col].click()
    assert [float(v) for v in _column(driver, col)] == sorted(values, reverse=lower_first)

    # rows move whole: each entry keeps its own value
    assert _pairs(driver, col) == dict(zip(configs, before))
    heads[0].click()
    labels = _column(driver, 0)
    assert labels == sorted(labels) and _pairs(driver, col) == dict(zip(configs, before))

    logs = driver.get_log("browser")
    errors = [entry for entry in logs if entry["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
