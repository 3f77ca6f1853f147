"""The Dagster web UI in a real browser: `dagster dev` (webserver and daemon) on loopback with its
instance on PostgreSQL, after a small `gxplab benchmark`, opened in headless Chromium (Selenium).

Checks that the asset graph shows the pipeline's stages (the asset groups) and, with every group
expanded ("Expand all groups", Alt+E), their assets; and that the leaderboard's Markdown metadata
renders as a table with the benchmark's real rows. With GXPLAB_UPDATE_SCREENSHOTS=1 it rewrites
docs/ui-asset-graph.png and docs/ui-leaderboard.png, after auditing every evaluation split so that
the leaderboard row is filled in; otherwise it audits the two control splits only, saves the
screenshots in its tmp_path and checks the docs' copies are untouched.

Needs Debian's `chromium` and `chromium-driver` (`bash scripts/ensure_chromium.sh`, which
`make test` runs) and selenium (dev extra). Selenium is given /usr/bin/chromium and
/usr/bin/chromedriver explicitly, so selenium-manager never downloads a browser. Without them the
test skips, or fails when $CI is set.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from dagster_processes import dagster_process, free_port, run_command
from headless_chromium import Screenshots, headless_chromium, set_viewport, updating_screenshots

pytestmark = pytest.mark.postgres

BIN = Path(sys.executable).parent
VIEWPORT = (1400, 900)
GRAPH_VIEWPORT = (1400, 2000)  # the expanded graph is tall: every asset fits at a legible size
STAGES = ("data", "models", "evaluation", "reports")  # group_name= of the assets
# The docs' leaderboard shows every column filled in; a plain run audits the two cheap splits.
SPLITS = (("benchmark", "control_clean", "control_faulty", "adversarial")
          if updating_screenshots() else ("control_clean", "control_faulty"))
SCREENSHOTS = ("ui-asset-graph.png", "ui-leaderboard.png")
EXPANDED = ("gxp_records", "qlora_adapter", "gxp_predictions", "gxp_leaderboard")  # per stage
# The leaderboard's columns and the split each one is computed on.
COLUMN_SPLITS = {"gxp1_f1": "benchmark", "gxp2_micro_f1": "benchmark",
                 "gxp2_macro_f1": "benchmark", "clean_fpr": "control_clean",
                 "faulty_recall": "control_faulty", "adversarial_recall": "adversarial",
                 "attack_success_rate": "adversarial"}
GRAPH_SVG = "(//*[local-name()='svg'][.//*[local-name()='foreignObject']])[1]"



def _graphql(base_url: str, query: str) -> dict:
    response = httpx.post(f"{base_url}/graphql", json={"query": query}, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def _wait_for(condition: Callable[[], bool], what: str, log: Path, attempts: int = 90) -> None:
    """Poll `condition` once a second (a short HTTP timeout each) until it holds."""
    for _ in range(attempts):
        if condition():
            return
        time.sleep(1)
    pytest.fail(f"{what}; dagster dev log:\n{log.read_text()[-3000:]}", pytrace=False)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _daemons_healthy(base_url: str) -> bool:
    data = _graphql(
        base_url,
        "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }",
    )
    statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
    return bool(statuses) and all(s["healthy"] for s in statuses if s["required"])


@pytest.fixture
def browser() -> Iterator:
    """Headless Chromium with a 1400x900 viewport."""
    with headless_chromium(VIEWPORT, "the web-UI browser test") as driver:
        yield driver


@pytest.fixture
def dagster_ui(pg_instance_url: str, tmp_path: Path) -> Iterator[str]:
    """Base URL of `dagster dev` (webserver and daemon) on 127.0.0.1, instance on PostgreSQL,
    after `gxplab benchmark` of the reference auditor on two control splits."""
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "GXPLAB_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "GXPLAB_WAREHOUSE_URL": f"sqlite:///{tmp_path / 'warehouse.sqlite'}",
        "GXPLAB_LLM_CACHE_DIR": str(tmp_path / "llm_cache"),
        "GXPLAB_DAGSTER_PG_URL": pg_instance_url,
    }
    gxplab = str(BIN / "gxplab")
    assert "PostgreSQL" in run_command([gxplab, "init-instance"], env).stdout
    run_command([gxplab, "benchmark", "--models", "reference_auditor", "--splits", *SPLITS,
          "--no-training"], env)

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dagster_dev.log"
    command = ["dagster", "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"]
    with dagster_process(command, env, log):
        _wait_for(lambda: _answers(f"{base_url}/server_info"), "webserver never answered", log)
        # The first visit on localhost opens a "Join the Dagster community" dialog; mark it seen.
        assert _graphql(base_url, "mutation { setNuxSeen }")["setNuxSeen"] is True
        _wait_for(lambda: _daemons_healthy(base_url), "the daemons never became healthy", log)
        yield base_url


def _settled(locate: Callable[[], object]) -> Callable:
    """A wait condition: the element is displayed and has not moved since the last poll (the
    graph animates its zoom-to-fit)."""
    last: list[dict] = []

    def condition(_driver) -> object:
        element = locate()
        rect = element.rect
        settled = element.is_displayed() and last == [rect]
        last[:] = [rect]
        return element if settled else False

    return condition


def _graph_node(name: str) -> str:
    """XPath of the graph node (asset or group) labelled `name`."""
    return f"//*[local-name()='foreignObject']//*[normalize-space(text())='{name}']"


def _expand_all_groups_and_fit(browser, wait) -> None:
    """Expand every asset group as a user would (the graph's "Expand all groups", Alt+E), hide
    the asset tree beside the graph, centre the graph (double-click on its background) and zoom
    out until it fits the viewport's height."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ActionChains(browser).key_down(Keys.ALT).send_keys("e").key_up(Keys.ALT).perform()
    wait.until(lambda d: len(d.find_elements(By.XPATH, "//*[local-name()='foreignObject']"))
               > len(STAGES), "the asset groups did not expand")
    browser.find_element(By.XPATH, "//input[@placeholder='Jump to…']/following::button[1]").click()
    svg = wait.until(_settled(lambda: browser.find_element(By.XPATH, GRAPH_SVG)))
    browser.execute_script("arguments[0].parentElement.dispatchEvent("
                           "new MouseEvent('dblclick', {bubbles: true}))", svg)
    room = browser.execute_script("return innerHeight") - 110  # below the page's header bar
    for _ in range(12):
        svg = wait.until(_settled(lambda: browser.find_element(By.XPATH, GRAPH_SVG)))
        if svg.rect["height"] <= room:
            return
        browser.find_element(By.XPATH, "//button[.//*[@aria-label='zoom_out']]").click()
    pytest.fail(f"the expanded graph never fitted in {room} px: {svg.rect}", pytrace=False)


def test_asset_graph_and_leaderboard_render_in_the_browser(browser, dagster_ui, tmp_path):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 45, poll_frequency=0.5,
                         ignored_exceptions=(NoSuchElementException,
                                             StaleElementReferenceException))
    shots = Screenshots(tmp_path, SCREENSHOTS)

    browser.get(f"{dagster_ui}/asset-groups")
    wait.until(ec.title_is("Global asset lineage"), "the lineage page did not load")
    for stage in STAGES:  # one collapsed group node per stage, drawn in the graph's SVG
        node = f"//*[local-name()='foreignObject']//div[normalize-space(text())='{stage}']"
        wait.until(_settled(lambda node=node: browser.find_element(By.XPATH, node)),
                   f"asset group {stage!r} not drawn in the graph")
    assert not browser.find_elements(
        By.XPATH, "//*[@role='dialog'][contains(., 'Join the Dagster community')]"
    )
    set_viewport(browser, GRAPH_VIEWPORT)
    _expand_all_groups_and_fit(browser, wait)
    for name in EXPANDED:  # each stage's assets are drawn, not only the groups
        wait.until(_settled(lambda name=name: browser.find_element(By.XPATH, _graph_node(name))),
                   f"asset {name!r} not drawn in the expanded graph")
    browser.save_screenshot(shots.path("ui-asset-graph.png"))
    set_viewport(browser, VIEWPORT)

    browser.get(f"{dagster_ui}/assets/gxp_leaderboard")
    show = wait.until(ec.element_to_be_clickable((
        By.XPATH, "//tr[td[normalize-space()='leaderboard']]//a[contains(., 'Show Markdown')]"
    )), "the leaderboard metadata entry is missing")
    show.click()
    dialog = "//div[@role='dialog'][.//*[normalize-space()='leaderboard']]"
    row = wait.until(ec.visibility_of_element_located((
        By.XPATH, f"{dialog}//table//tr[td[normalize-space()='reference_auditor']]"
    )), "the leaderboard table has no reference_auditor row")
    headers = [th.text for th in browser.find_elements(By.XPATH, f"{dialog}//table//th")]
    assert headers[:2] == ["rank", "model"] and "faulty_recall" in headers, headers
    cells = dict(zip(headers, (td.text for td in row.find_elements(By.TAG_NAME, "td")),
                     strict=True))
    assert cells["rank"] == "1"
    assert cells["faulty_recall"].split() == ["1.000", "[1.00,", "1.00]"]
    assert cells["status"] == f"audited {len(SPLITS)}/5 splits"
    for column, split in COLUMN_SPLITS.items():  # a number on each split audited, else a dash
        assert (cells[column][0].isdigit() if split in SPLITS else cells[column] == "–"), (
            column, cells[column])
    assert len(browser.find_elements(By.XPATH, f"{dialog}//table//tbody/tr")) > 1  # all models
    browser.save_screenshot(shots.path("ui-leaderboard.png"))
    shots.check_docs_untouched()
