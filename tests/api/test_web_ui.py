"""The web UI in a real headless browser (Debian's chromium driven by Playwright) against a real
`virtainer serve` with two tiny guests: one running (Windows-7 hardware profile: a VGA adapter
and the private VNC socket every display adapter gets), one stopped. Screenshots of each step go
to tests/artifacts/web-ui/."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.api.conftest import ApiServer, TinyVm, booted_tiny, serving
from tests.browser import ARTIFACTS as BROWSER_ARTIFACTS
from tests.browser import chromium
from tests.waiting import wait_until
from virtainer.hypervisor import Hypervisor

pytestmark = pytest.mark.guest
playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is part of the test extra")
ARTIFACTS = BROWSER_ARTIFACTS / "web-ui"


@pytest.fixture(scope="module")
def running_vm(module_vm_dir: Path) -> Iterator[TinyVm]:
    directory = module_vm_dir / "running"
    directory.mkdir()
    with booted_tiny(directory, prefix="ui-run", profile="windows-7", disk_bus="virtio", video="vga") as vm:
        yield vm


@pytest.fixture(scope="module")
def stopped_vm(module_vm_dir: Path) -> Iterator[TinyVm]:
    directory = module_vm_dir / "stopped"
    directory.mkdir()
    with booted_tiny(directory, prefix="ui-off") as vm:
        with Hypervisor() as hv:
            hv.destroy(vm.name)
        yield vm


@pytest.fixture(scope="module")
def server(module_vm_dir: Path, running_vm: TinyVm, stopped_vm: TinyVm) -> Iterator[ApiServer]:
    token = "ui-test-" + secrets.token_hex(12)
    with serving(module_vm_dir, running_vm.name, stopped_vm.name, token=token) as api:
        yield api


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def page(browser: object, server: ApiServer) -> Iterator[object]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1200, "height": 900})  # type: ignore[attr-defined]
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    opened.on("dialog", lambda dialog: dialog.accept())  # the confirmations (destroy, delete)
    opened.goto(server.url + "/")
    yield opened
    context.close()


def shot(page: object, step: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{step}.png"))  # type: ignore[attr-defined]


def card(page: object, vm: TinyVm) -> object:
    return page.locator(f'article[data-vm="{vm.name}"]')  # type: ignore[attr-defined]


def test_a_wrong_token_is_refused(page: object) -> None:
    page.fill("#token", "not-the-token-" + secrets.token_hex(8))  # type: ignore[attr-defined]
    page.click("#login button[type=submit]")  # type: ignore[attr-defined]
    expect = playwright_sync.expect
    expect(page.locator("#login-error")).to_contain_text("not valid")  # type: ignore[attr-defined]
    expect(page.locator("#vms article")).to_have_count(0)  # type: ignore[attr-defined]
    shot(page, "01-wrong-token")


def test_login_lists_the_running_and_the_stopped_vm(
    page: object, server: ApiServer, running_vm: TinyVm, stopped_vm: TinyVm
) -> None:
    page.fill("#token", server.token)  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    expect = playwright_sync.expect
    expect(card(page, running_vm).locator("[data-field=state]")).to_have_text("running")
    expect(card(page, stopped_vm).locator("[data-field=state]")).to_have_text("shut-off")
    expect(card(page, running_vm)).to_contain_text("tcg")
    expect(card(page, running_vm)).to_contain_text(str(running_vm.spec.diff_path))
    expect(page.locator("#live")).to_have_text("live")
    cookies = page.context.cookies()  # type: ignore[attr-defined]
    session = next(cookie for cookie in cookies if cookie["name"] == "virtainer_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict" and server.token not in session["value"]
    assert server.token not in page.url and server.token not in server.output()  # type: ignore[attr-defined]
    shot(page, "02-list")


def test_the_console_shows_output_and_a_typed_command_answer(page: object, running_vm: TinyVm) -> None:
    card(page, running_vm).locator("button", has_text="Console").click()  # type: ignore[attr-defined]
    expect = playwright_sync.expect
    expect(page.locator("#console-role")).to_contain_text("You are typing")  # type: ignore[attr-defined]
    page.locator("#terminal").click()  # type: ignore[attr-defined]
    page.keyboard.type("echo WEB-$((6*7))\r")  # type: ignore[attr-defined]
    expect(page.locator("#terminal .xterm-rows")).to_contain_text("WEB-42")  # type: ignore[attr-defined]
    shot(page, "03-console")
    page.locator("#console-dialog .close").click()  # type: ignore[attr-defined]


def test_a_websocket_without_the_session_is_refused(server: ApiServer, running_vm: TinyVm) -> None:
    for path in (f"/v1/vms/{running_vm.name}/console", f"/v1/vms/{running_vm.name}/vnc"):
        assert handshake_status(server.url, path) == 403
        assert handshake_status(server.url, path, origin="http://evil.example") == 403
    # a client with the token (no browser, no cookie) is let in
    assert handshake_status(server.url, f"/v1/vms/{running_vm.name}/console", token=server.token) == 101


def handshake_status(url: str, path: str, *, origin: str | None = None, token: str | None = None) -> int:
    """The HTTP status a websocket upgrade gets (101: accepted)."""
    parts = urlsplit(url)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]  # fmt: skip
    lines += [f"Origin: {origin}"] if origin else []
    lines += [f"Authorization: Bearer {token}"] if token else []
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status_line = connection.makefile("rb").readline().decode()
    return int(status_line.split()[1])


def canvas_digest(page: object) -> tuple[int, str]:
    """(pixels that are not black, a hash of the frame) of the noVNC canvas."""
    script = """() => { const c = document.querySelector('#screen canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let lit = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] | d[i + 1] | d[i + 2]) lit++;
        return [lit, c.toDataURL()]; }"""
    lit, data = page.evaluate(script)  # type: ignore[attr-defined]
    return int(lit), hashlib.sha256(data.encode()).hexdigest()


def test_the_screen_shows_the_guest_display_and_changes(page: object, running_vm: TinyVm) -> None:
    card(page, running_vm).locator("button", has_text="Screen").click()  # type: ignore[attr-defined]
    expect = playwright_sync.expect
    expect(page.locator("#screen-status")).to_have_text("connected")  # type: ignore[attr-defined]
    wait_until(lambda: canvas_digest(page)[0] > 0, 30, "a frame that is not blank")
    _lit, before = canvas_digest(page)
    shot(page, "04-screen")
    # the guest draws: text on its VGA console, typed from the serial shell
    with Hypervisor() as hv, hv.console(running_vm.name) as console:
        for _ in range(3):
            console.write(b"\rfor i in 1 2 3 4 5 6 7 8; do echo VIRTAINER-SCREEN-$i > /dev/tty1; done\r")
            with contextlib.suppress(AssertionError):
                wait_until(lambda: canvas_digest(page)[1] != before, 10, "the screen to change")
                break
    assert canvas_digest(page)[1] != before, "the canvas never changed after the guest drew"
    shot(page, "05-screen-changed")
    page.locator("#screen-dialog .close").click()  # type: ignore[attr-defined]


def test_a_snapshot_made_in_the_page_appears_and_reverts(page: object, server: ApiServer, stopped_vm: TinyVm) -> None:
    vm_card = card(page, stopped_vm)
    name_input = vm_card.locator("input[aria-label^='snapshot name']")  # type: ignore[attr-defined]
    name_input.fill("web-snap")
    vm_card.locator("button", has_text="Take snapshot").click()  # type: ignore[attr-defined]
    expect = playwright_sync.expect
    row = vm_card.locator('tr[data-snapshot="web-snap"]')  # type: ignore[attr-defined]
    expect(row).to_contain_text("(current)")
    expect(name_input).to_have_value("")  # a taken name is cleared
    # the same name again, typed while a live update rebuilds the card (a snapshot taken through
    # the API by someone else): what is typed, the focus and the selection survive it
    name_input.fill("web-snap")
    # "eb-" selected, by keys: they go to the focused field, whichever node the page has now
    page.keyboard.press("Home")  # type: ignore[attr-defined]
    page.keyboard.press("ArrowRight")  # type: ignore[attr-defined]
    for _ in range(3):
        page.keyboard.press("Shift+ArrowRight")  # type: ignore[attr-defined]
    with server.client() as client:
        taken = client.post(f"/v1/vms/{stopped_vm.name}/snapshots", json={"name": "api-snap"})
        assert taken.status_code in (200, 201, 202), taken.text
    expect(vm_card.locator('tr[data-snapshot="api-snap"]')).to_have_count(1)  # the card was rebuilt
    expect(name_input).to_have_value("web-snap")
    expect(name_input).to_be_focused()
    selection = "() => [document.activeElement.selectionStart, document.activeElement.selectionEnd]"
    assert page.evaluate(selection) == [1, 4]  # type: ignore[attr-defined]
    # the API's refusal (409) and its message are shown
    vm_card.locator("button", has_text="Take snapshot").click()  # type: ignore[attr-defined]
    expect(page.locator("#message")).to_be_visible()  # type: ignore[attr-defined]
    expect(page.locator("#message")).to_contain_text("web-snap")  # type: ignore[attr-defined]
    shot(page, "06-snapshot-refused")
    row.locator("button", has_text="Revert").click()  # type: ignore[attr-defined]
    expect(page.locator("#message")).to_be_hidden()  # type: ignore[attr-defined]
    expect(vm_card.locator("[data-field=state]")).to_have_text("shut-off")  # type: ignore[attr-defined]
    expect(row).to_contain_text("(current)")
    shot(page, "07-snapshot-reverted")
    for snapshot in ("web-snap", "api-snap"):
        vm_card.locator(f'tr[data-snapshot="{snapshot}"]').locator("button", has_text="Delete").click()  # type: ignore[attr-defined]
        expect(vm_card.locator(f'tr[data-snapshot="{snapshot}"]')).to_have_count(0)  # type: ignore[attr-defined]


def test_stop_powers_the_guest_off_and_the_page_shows_it_without_a_reload(page: object, running_vm: TinyVm) -> None:
    page.evaluate("() => { window.notReloaded = true; }")  # type: ignore[attr-defined]
    vm_card = card(page, running_vm)
    vm_card.locator("input[type=number]").fill("60")  # type: ignore[attr-defined]
    vm_card.locator("button", has_text="Stop").click()  # type: ignore[attr-defined]
    expect = playwright_sync.expect
    expect(vm_card.locator("[data-field=state]")).to_have_text("shut-off", timeout=90_000)  # type: ignore[attr-defined]
    assert page.evaluate("() => window.notReloaded === true")  # type: ignore[attr-defined]
    with Hypervisor() as hv:
        assert hv.state(running_vm.name).value == "shut-off"
    assert "GUEST-ACPI-POWER-BUTTON" in running_vm.serial_log  # graceful: the guest powered itself off
    shot(page, "08-stopped")


def test_the_ui_can_be_turned_off_alone(module_vm_dir: Path, stopped_vm: TinyVm) -> None:
    token = "ui-off-" + secrets.token_hex(12)
    environment = {"VIRTAINER_API_UI": "0"}
    with serving(module_vm_dir, stopped_vm.name, token=token, env=environment) as api, api.client() as client:
        assert client.get("/").status_code == 404
        assert client.get("/ui/static/app.js").status_code == 404
        assert client.post("/ui/login", json={"token": token}).status_code == 404
        assert client.get(f"/v1/vms/{stopped_vm.name}").status_code == 200
