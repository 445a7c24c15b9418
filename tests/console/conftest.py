"""One `trackd serve` per test module (with a destination that always fails, so there are
dead letters to show), and one headless Chromium per module for the browser tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import DEFAULT_CONFIG, Server
from tests.gateway.helpers import running_server

ADMIN_TOKEN = "test-admin-token"
WRITE_KEY = "wk_web"
# The access tests knock with wrong credentials on purpose, more often than the throttle lets.
CONSOLE_CONFIG = DEFAULT_CONFIG.replace("[server]\n", "[server]\nadmin_auth_failures = 1000\n",
                                        1) + """
[[destinations]]
name = "broken-hook"
url = "http://127.0.0.1:9/never"
max_attempts = 1
timeout = 2
"""


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("console") / "data", CONSOLE_CONFIG) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium driven through Debian's chromedriver (scripts/install-browser)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,900", "--lang=en-US"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
