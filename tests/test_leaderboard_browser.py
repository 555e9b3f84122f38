"""The leaderboard site in a real browser: headless Chromium (Debian's chromium and chromium-driver, which
scripts/setup.sh installs) opens index.html from the file system, follows a link to a track, sorts and
filters a table, follows a link to an entry page, finds no console errors, and saves screenshots under
the test's output folder. In CI (CI set) a missing browser fails the test instead of skipping it."""
import os
import shutil

import pytest

from harness.leaderboard.site import build_site
from test_leaderboard_site import EVIL, results  # noqa: F401 (fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        if os.environ.get("CI"):
            pytest.fail("CI: chromium and chromium-driver are not installed (scripts/setup.sh installs them)")
        pytest.skip("chromium / chromium-driver not installed (scripts/setup.sh installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--allow-file-access-from-files", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    from selenium.webdriver.chrome.service import Service
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _column(driver, table_id, index):
    from selenium.webdriver.common.by import By
    rows = driver.find_elements(By.CSS_SELECTOR, f"table#{table_id} tbody tr")
    return [r.find_elements(By.TAG_NAME, "td")[index].get_attribute("data-value") for r in rows if r.is_displayed()]


def test_site_sorts_filters_links_and_has_no_console_errors(browser, results, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    site = build_site([results], tmp_path / "site").parent
    browser.get((site / "index.html").as_uri())
    assert browser.title == "vqbench leaderboard"
    browser.find_element(By.LINK_TEXT, "fmnist-49tok").click()
    assert "fmnist-49tok" in browser.title
    headers = browser.find_elements(By.CSS_SELECTOR, "table#tokenizers thead th")
    psnr = next(i for i, h in enumerate(headers) if h.text.startswith("psnr"))
    headers[psnr].click()                                    # higher is better: best first
    values = [float(v) for v in _column(browser, "tokenizers", psnr)]
    assert values == sorted(values, reverse=True) and values[0] == 18.2
    headers[psnr].click()
    assert [float(v) for v in _column(browser, "tokenizers", psnr)] == sorted(values)
    rfid = next(i for i, h in enumerate(headers) if h.text.startswith("rfid"))
    headers[rfid].click()                                    # lower is better: best first
    assert [float(v) for v in _column(browser, "tokenizers", rfid)][0] == 165.0
    box = browser.find_element(By.CSS_SELECTOR, 'input.filter[data-table="tokenizers"]')
    box.send_keys("cvq")
    assert len(_column(browser, "tokenizers", psnr)) == 1
    box.clear()
    box.send_keys(" ")                                       # an empty filter shows every row again
    assert len(_column(browser, "tokenizers", psnr)) == 3
    assert browser.find_element(By.LINK_TEXT, f"default/{EVIL}")   # the name shows as text, never runs
    browser.save_screenshot(str(tmp_path / "track-fmnist-49tok.png"))
    browser.find_element(By.LINK_TEXT, "default/vq-fmnist").click()
    assert "default/vq-fmnist" in browser.title
    assert "config hash" in browser.find_element(By.TAG_NAME, "body").text
    browser.save_screenshot(str(tmp_path / "entry-vq-fmnist.png"))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
    assert (tmp_path / "track-fmnist-49tok.png").stat().st_size > 1000
