"""Web UI and metrics benchmark. Prints numbers; not a test.

    .venv/bin/python benchmarks/ui_bench.py [--vms 20] [--rounds 5] [--guest]

- `/metrics` scrape time with N VMs defined on libvirt's test driver (test:///default, in this
  process): uncached (every scrape reads libvirt) and cached (within metrics_ttl_s).
- Page load to the VM list visible (all N cards) in headless chromium, on the same server.
- With --guest: a tiny guest under the real libvirtd, `virtainer serve` in its own process: from
  clicking Console (Enter typed at once) to the first byte in the terminal.
Goals (issue 11): list under 300 ms, first console byte under 500 ms, scrape under 50 ms.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from virtainer.api.server import run_in_thread  # noqa: E402
from virtainer.api.settings import ApiSettings  # noqa: E402
from virtainer.hypervisor import Hypervisor  # noqa: E402

TOKEN = "ui-bench-" + "0123456789abcdef"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
DOMAIN = """<domain type="test"><name>{name}</name><memory unit="MiB">256</memory><vcpu>1</vcpu>
<os><type arch="x86_64">hvm</type></os><devices><disk type="file" device="disk">
<source file="/var/tmp/{name}.img"/><target dev="vda" bus="virtio"/></disk>
<interface type="network"><source network="default"/></interface></devices></domain>"""


def summary(label: str, samples_ms: list[float]) -> None:
    ordered = sorted(samples_ms)
    print(f"{label:44} median {statistics.median(ordered):7.1f} ms   min {ordered[0]:7.1f}   max {ordered[-1]:7.1f}"
          f"   ({len(ordered)} runs)")  # fmt: skip


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def scrape(client: httpx.Client) -> None:
    client.get("/metrics").raise_for_status()


def define_test_vms(count: int) -> Hypervisor:
    """The test driver's state lives while a connection to it is open: the caller keeps this one."""
    hv = Hypervisor("test:///default")
    for index in range(count - len(hv.list_names())):
        hv.define(DOMAIN.format(name=f"bench-{index:02d}"))
        hv.start(f"bench-{index:02d}")
    return hv


def bench_test_driver(vms: int, rounds: int, directory: Path) -> None:
    keep = define_test_vms(vms)
    common = {"libvirt_uri": "test:///default", "token": TOKEN, "token_file": directory / "token", "port": 0}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for label, ttl in (("uncached", 0.0), ("cached", 60.0)):
        handle = run_in_thread(ApiSettings.build(**common, metrics_ttl_s=ttl))
        try:
            with httpx.Client(base_url=handle.url, headers=auth) as client:
                client.get("/metrics").raise_for_status()  # warm: connection, first read
                samples = [timed(functools.partial(scrape, client)) for _ in range(rounds * 4)]
                families = client.get("/metrics").text.count("# TYPE")
            summary(f"/metrics scrape, {vms} VMs, {label} ({families} families)", samples)
            if label == "cached":
                bench_page_load(handle.url, vms, rounds)
        finally:
            handle.stop()
    keep.close()


def bench_page_load(url: str, vms: int, rounds: int) -> None:
    from playwright.sync_api import sync_playwright

    # the page's own clock: from the navigation's start to all cards in the DOM (Playwright's
    # round trips and its polling are not the page's)
    watch = f"""new MutationObserver((_, observer) => {{
        if (document.querySelectorAll('article.vm').length >= {vms}) {{
            window.listShownMs = performance.now(); observer.disconnect(); }}
        }}).observe(document, {{ subtree: true, childList: true }});"""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        context = browser.new_context()
        page = context.new_page()
        page.goto(url + "/")
        page.fill("#token", TOKEN)
        page.keyboard.press("Enter")
        page.wait_for_selector("article.vm")
        page.add_init_script(watch)
        outside, inside = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            page.goto(url + "/")
            page.wait_for_function("() => window.listShownMs !== undefined")
            outside.append((time.perf_counter() - started) * 1000)
            inside.append(float(page.evaluate("() => window.listShownMs")))
        summary(f"page load -> {vms} VM cards (page's clock)", inside)
        summary(f"page load -> {vms} VM cards (driver's clock)", outside)
        browser.close()


def bench_console(rounds: int, directory: Path) -> None:
    from playwright.sync_api import sync_playwright

    from tests.api.conftest import booted_tiny, serving

    with (
        booted_tiny(directory, prefix="uibench") as vm,
        serving(directory, vm.name, token=TOKEN) as server,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.goto(server.url + "/")
        page.fill("#token", TOKEN)
        page.keyboard.press("Enter")
        card = page.locator(f'article[data-vm="{vm.name}"]')
        card.wait_for()
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            card.locator("button", has_text="Console").click()
            page.locator("#terminal .xterm-rows").wait_for()
            page.locator("#terminal").click()  # the keys go to the terminal; a quiet guest answers Enter
            page.keyboard.press("Enter")
            page.wait_for_function("() => document.querySelector('#terminal .xterm-rows').textContent.trim() !== ''")
            samples.append((time.perf_counter() - started) * 1000)
            page.locator("#console-dialog .close").click()
        summary("click Console -> first byte in the terminal", samples)
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--guest", action="store_true", help="also the console on a real tiny guest (boots one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="virtainer-ui-bench-") as temp:
        Path(temp).chmod(0o755)  # libvirt's QEMU (another user) opens the guest's diff in here
        bench_test_driver(args.vms, args.rounds, Path(temp))
        if args.guest:
            bench_console(args.rounds, Path(temp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
