"""The Prefect UI after a lift-full run, in a real browser (Debian's chromium, headless, via Playwright).

It opens the flow run's page and checks that the run, its task runs and the evaluation report
artifact (with its plots) are visible; screenshots go to tests/_artifacts/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "tests" / "_artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions"]


@pytest.fixture(scope="module")
def browser():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed and `make test` could not install it (needs root and apt-get: "
                    "infra/install_system_deps.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_flow_run_task_runs_and_evaluation_report_are_visible(browser, demo_run, local_stack, stack_tools):
    assert demo_run.state == "COMPLETED"
    env, run_id = demo_run.env, demo_run.flow_run_id
    ui = env["PREFECT_UI_URL"]
    run = local_stack.flow_run(env, run_id)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1600, "height": 1100})
    page.set_default_timeout(60_000)

    # The flow run: its name, flow, final state, and every task run in the timeline/list.
    page.goto(f"{ui}/runs/flow-run/{run_id}", wait_until="networkidle")
    page.get_by_text(run["name"]).first.wait_for()
    page.get_by_text("lift-full").first.wait_for()
    page.get_by_text("Completed").first.wait_for()
    page.get_by_role("tablist").get_by_text("Task Runs", exact=True).click()
    for name in sorted(stack_tools.TASKS):
        page.get_by_text(name, exact=True).first.wait_for()
    page.screenshot(path=str(SHOTS / "prefect-ui-flow-run.png"), full_page=True)

    # The evaluation report artifact, rendered: heading, table and the four embedded plots.
    report = stack_tools.artifacts(env, run_id)["evaluate-report"]
    page.goto(f"{ui}/artifacts/artifact/{report['id']}", wait_until="networkidle")
    page.get_by_text("LiFT evaluation: base vs aligned").first.wait_for()
    plots = page.locator("img[src^='data:image/png;base64,']")
    plots.first.wait_for()
    assert plots.count() == 4  # frames side by side, rewards, dimensions, loss
    assert all(plots.nth(i).evaluate("img => img.naturalWidth > 0") for i in range(4))  # decoded, not broken
    page.screenshot(path=str(SHOTS / "prefect-ui-evaluation-report.png"), full_page=True)

    # The run's artifacts tab lists the report among the others.
    page.goto(f"{ui}/runs/flow-run/{run_id}", wait_until="networkidle")
    page.get_by_role("tablist").get_by_text("Artifacts", exact=True).click()
    page.get_by_text("evaluate-report").first.wait_for()
    page.screenshot(path=str(SHOTS / "prefect-ui-artifacts.png"), full_page=True)
    for shot in ("prefect-ui-flow-run.png", "prefect-ui-evaluation-report.png", "prefect-ui-artifacts.png"):
        assert (SHOTS / shot).stat().st_size > 10_000
