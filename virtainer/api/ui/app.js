// virtainer's web UI: the VM list, live from /v1/events (server-sent events, no polling), the
// power and snapshot operations, the serial console (xterm.js) and the screen (noVNC).
// Everything is loaded from this server; the session cookie authenticates every request.
// noVNC and xterm.js are imported when a screen or a console is opened: the list comes first.

const $ = (selector) => document.querySelector(selector);
const vms = new Map(); // name -> {status, snapshots}
let events = null;

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    const detail = (body && body.error) || {};
    super(detail.message || `HTTP ${status}`);
    this.status = status;
    this.hint = detail.hint || "";
  }
}

export async function api(method, path, body) {
  const options = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const reply = await fetch(path, options);
  if (reply.status === 204) return null;
  const data = reply.headers.get("content-type")?.includes("json") ? await reply.json() : null;
  if (!reply.ok) {
    if (reply.status === 401) showLogin();
    throw new ApiError(reply.status, data);
  }
  return data;
}

export function showMessage(error) {
  const box = $("#message");
  if (!error) { box.hidden = true; box.textContent = ""; return; }
  box.replaceChildren(el("strong", {}, error.message), error.hint ? el("div", {}, `Hint: ${error.hint}`) : null);
  box.hidden = false;
}

// ---- login --------------------------------------------------------------------------------

function showLogin() {
  if (events) { events.close(); events = null; }
  $("#login").hidden = false;
  $("#logout").hidden = true;
  $("#vms").replaceChildren();
  $("#manager").hidden = true;
  $("#live").textContent = "";
  $("#token").focus();
}

$("#login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("#token");
  try {
    await api("POST", "/ui/login", { token: input.value });
    input.value = "";
    $("#login-error").textContent = "";
    start();
  } catch (error) {
    input.value = "";
    $("#login-error").textContent = error.message;
  }
});

$("#logout").addEventListener("click", async () => {
  await api("POST", "/ui/logout");
  showLogin();
});

// ---- the list -----------------------------------------------------------------------------

async function start() {
  const session = await api("GET", "/ui/session");
  if (!session.authenticated) { showLogin(); return; }
  $("#login").hidden = true;
  $("#logout").hidden = false;
  if (session.manager) {
    const manager = await import("./manager.js");
    events = manager.listen();
    await manager.loadAll();
    return;
  }
  listen(); // loads the list again once the stream is open: no change between the two is missed
  await loadAll();
}

// withSnapshots false: the statuses only, the snapshots known are kept
async function loadAll(withSnapshots = true) {
  const list = await api("GET", "/v1/vms");
  const names = new Set(list.map((vm) => vm.name));
  for (const name of [...vms.keys()]) if (!names.has(name)) vms.delete(name);
  for (const status of list) vms.set(status.name, { status, snapshots: vms.get(status.name)?.snapshots ?? [] });
  render(); // the list first, then each VM's snapshots
  if (!withSnapshots) return;
  await Promise.all(list.map(async (status) => {
    const snapshots = await loadSnapshots(status.name);
    const known = vms.get(status.name);
    if (known) known.snapshots = snapshots;
  }));
  render();
}

async function loadSnapshots(name) {
  try { return await api("GET", `/v1/vms/${encodeURIComponent(name)}/snapshots`); } catch { return null; }
}

async function refresh(name, withSnapshots) {
  try {
    const status = await api("GET", `/v1/vms/${encodeURIComponent(name)}`);
    const known = vms.get(name);
    const snapshots = withSnapshots || !known ? await loadSnapshots(name) : known.snapshots;
    vms.set(name, { status, snapshots });
  } catch (error) {
    if (error.status === 404) vms.delete(name);
  }
  render();
}

function listen() {
  if (events) events.close();
  events = new EventSource("/v1/events");
  let reopened = false; // the first open follows the page's own load: the statuses suffice then
  events.onopen = () => { $("#live").textContent = "live"; loadAll(reopened).catch(showMessage); reopened = true; };
  events.onerror = () => { $("#live").textContent = "reconnecting…"; };
  const changed = (event) => {
    const data = JSON.parse(event.data);
    if (data.type === "lifecycle" && (data.event === "defined" || data.event === "undefined")) {
      loadAll().catch(showMessage);
    } else {
      refresh(data.vm, data.type === "operation" && data.operation.startsWith("snapshot") || data.operation === "revert");
    }
  };
  for (const type of ["lifecycle", "readiness", "operation"]) events.addEventListener(type, changed);
}

function seconds(value) { return `${Number(value).toFixed(1)} s`; }

// Each card is rebuilt only when what it shows changed, and a rebuilt card carries over what the
// user was typing: the values of its fields, the focus and the selection (a live update arriving
// while someone fills the snapshot name must not wipe it). Unchanged cards stay the same nodes.
const cards = new Map(); // name -> {shown: JSON of what the card shows, node}

function render() {
  const entries = [...vms.values()].sort((a, b) => a.status.name.localeCompare(b.status.name))
    .map((vm) => ({ key: vm.status.name, data: vm, build: card }));
  renderList($("#vms"), cards, entries, "No VMs on this server.");
}

// Puts one node per entry ({key, data, build(data)}) into `container`, in order: an entry whose
// data did not change keeps its node; a rebuilt one takes over its fields' state.
export function renderList(container, cache, entries, emptyText) {
  const restores = []; // run once the rebuilt nodes are in the page
  const wanted = entries.map((entry) => cachedNode(cache, entry, restores));
  const keys = new Set(entries.map((entry) => entry.key));
  for (const key of [...cache.keys()]) if (!keys.has(key)) cache.delete(key);
  const keep = new Set(wanted);
  for (const child of [...container.children]) if (!keep.has(child)) child.remove();
  // in order, moving nothing that is already in place (moving a node takes the focus out of it)
  wanted.forEach((node, index) => { if (container.children[index] !== node) container.insertBefore(node, container.children[index] ?? null); });
  if (!wanted.length) container.replaceChildren(el("p", {}, emptyText));
  for (const restore of restores) restore();
}

function cachedNode(cache, { key, data, build }, restores) {
  const shown = JSON.stringify(data);
  const previous = cache.get(key);
  if (previous?.shown === shown) return previous.node;
  const node = build(data);
  if (previous) restores.push(carryFormState(previous.node, node));
  cache.set(key, { shown, node });
  return node;
}

// Called while `from` is still in the page (focus and selection are read there); returns what
// gives the focus and the selection back once `to` has taken its place.
function carryFormState(from, to) {
  for (const field of from.querySelectorAll("input[data-key], select[data-key], textarea[data-key]")) {
    const target = to.querySelector(`[data-key="${CSS.escape(field.dataset.key)}"]`);
    if (target) { target.value = field.value; target.checked = field.checked; }
  }
  const active = from.contains(document.activeElement) ? document.activeElement : null;
  const key = active?.dataset?.key;
  if (!key) return () => {};
  const selection = selectionOf(active);
  return () => {
    const target = to.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (!target) return;
    target.focus({ preventScroll: true });
    if (selection) { try { target.setSelectionRange(...selection); } catch { /* a field without text selection */ } }
  };
}

function selectionOf(field) {
  try {
    return field.selectionStart === null ? null : [field.selectionStart, field.selectionEnd, field.selectionDirection];
  } catch { return null; } // number inputs, selects: no text selection
}

function keyed(key) { return document.querySelector(`[data-key="${CSS.escape(key)}"]`); }

function card({ status, snapshots }) {
  const name = status.name;
  const running = ["running", "paused", "shutting-down"].includes(status.state);
  const busy = Boolean(status.operation);
  const key = (what) => `${name}:${what}`;
  const stopTimeout = el("input", { type: "number", min: 1, max: 3600, value: 60, "aria-label": `stop timeout for ${name}`,
    "data-key": key("timeout") });
  const base = status.diff.base;
  const stages = status.readiness.stages.map((stage) => el("li", {}, `${stage.stage} ${seconds(stage.elapsed_s)}`,
    stage.detail ? el("span", { class: "note" }, ` (${stage.detail})`) : null));
  return el("article", { class: "vm", "data-vm": name, "aria-label": name },
    el("h2", {}, name),
    el("div", {}, el("span", { class: `state ${status.state}`, "data-field": "state" }, status.state),
      busy ? el("span", { class: "note" }, ` — ${status.operation} in progress`) : null),
    el("dl", {},
      el("dt", {}, "accelerator"), el("dd", { title: status.accelerator_reason }, status.accelerator || "—"),
      el("dt", {}, "resources"), el("dd", {}, `${status.vcpus} vCPU, ${status.memory_mib} MiB`),
      el("dt", {}, "addresses"), el("dd", {}, status.addresses.map((a) => `${a.address}/${a.prefix}`).join(", ") || "—"),
      el("dt", {}, "readiness"), el("dd", {}, status.readiness.ready ? "ready" : `waiting for ${status.readiness.wanted.join(", ")}`,
        stages.length ? el("ol", { class: "stages" }, stages) : null),
      el("dt", {}, "diff"), el("dd", {}, status.diff.path || "—"),
      el("dt", {}, "base"), el("dd", {}, base ? `${base.path} (${base.format}, sha256 ${base.sha256.slice(0, 12)}…)` : "—")),
    el("div", { class: "actions" },
      el("button", { type: "button", class: "primary", disabled: running || busy, "data-key": key("start"),
        onclick: () => operate(name, "start") }, "Start"),
      el("button", { type: "button", disabled: !running || busy, "data-key": key("stop"),
        onclick: () => operate(name, "stop", { timeout_s: Number(stopTimeout.value) || 60 }) }, "Stop"),
      el("label", {}, "timeout", stopTimeout, "s"),
      el("button", { type: "button", disabled: !running || busy, "data-key": key("reboot"),
        onclick: () => operate(name, "reboot") }, "Reboot"),
      el("button", { type: "button", class: "danger", disabled: !running || busy, "data-key": key("destroy"),
        onclick: () => { if (confirm(`Power off ${name} at once? Unsaved guest data is lost (the diff is kept).`)) operate(name, "destroy"); } },
        "Destroy"),
      el("button", { type: "button", disabled: !running, "data-key": key("console"), onclick: () => openConsole(name) }, "Console"),
      el("button", { type: "button", disabled: !running, "data-key": key("screen"), onclick: () => openScreen(name) }, "Screen")),
    snapshotSection(name, snapshots, busy));
}

function snapshotSection(name, snapshots, busy) {
  const key = (what) => `${name}:${what}`;
  const nameInput = el("input", { type: "text", placeholder: "name (optional)", "aria-label": `snapshot name for ${name}`,
    pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,62}", "data-key": key("snap-name") });
  const kind = el("select", { "aria-label": `snapshot kind for ${name}`, "data-key": key("snap-kind") },
    el("option", { value: "disk" }, "disk"), el("option", { value: "memory" }, "disk + memory"));
  const form = el("form", { class: "snap-form", onsubmit: (event) => {
    event.preventDefault();
    const body = { kind: kind.value };
    if (nameInput.value) body.name = nameInput.value;
    // taken: the name is used up (the field, perhaps rebuilt meanwhile, is found by its key)
    operate(name, "snapshots", body).then((done) => { if (done && keyed(key("snap-name"))) keyed(key("snap-name")).value = ""; });
  } }, nameInput, kind, el("button", { type: "submit", disabled: busy, "data-key": key("snap-create") }, "Take snapshot"));
  const rows = (snapshots || []).map((snap) => el("tr", { "data-snapshot": snap.name },
    el("td", {}, snap.name, snap.current ? el("span", { class: "note" }, " (current)") : null),
    el("td", {}, snap.kind),
    el("td", {}, new Date(snap.created_at * 1000).toLocaleString()),
    el("td", {},
      el("button", { type: "button", disabled: busy, "data-key": key(`revert:${snap.name}`),
        onclick: () => operate(name, `snapshots/${encodeURIComponent(snap.name)}/revert`) }, "Revert"), " ",
      el("button", { type: "button", class: "danger", disabled: busy, "data-key": key(`delete:${snap.name}`),
        onclick: () => { if (confirm(`Delete snapshot ${snap.name} of ${name}?`)) remove(name, snap.name); } }, "Delete"))));
  return el("section", { "aria-label": `snapshots of ${name}` },
    el("h3", {}, "Snapshots"),
    snapshots === null ? el("p", { class: "note" }, "not available for this VM") :
      rows.length ? el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "kind"),
        el("th", {}, "taken"), el("th", {}, ""))), el("tbody", {}, rows)) : el("p", { class: "note" }, "none yet"),
    form);
}

async function operate(name, operation, body) {
  showMessage(null);
  let done = false;
  try {
    await api("POST", `/v1/vms/${encodeURIComponent(name)}/${operation}`, body);
    done = true;
  } catch (error) {
    showMessage(error);
  }
  refresh(name, operation.startsWith("snapshots"));
  return done;
}

async function remove(name, snapshot) {
  showMessage(null);
  try {
    await api("DELETE", `/v1/vms/${encodeURIComponent(name)}/snapshots/${encodeURIComponent(snapshot)}`);
  } catch (error) {
    showMessage(error);
  }
  refresh(name, true);
}

// ---- dialogs ------------------------------------------------------------------------------

function socketUrl(path) {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${path}`;
}

for (const dialog of document.querySelectorAll("dialog")) {
  dialog.querySelector(".close").addEventListener("click", () => dialog.close());
}

let consoleSession = null;

// base: where the VM's API is (manager mode: a container's, through the manager)
export async function openConsole(name, base = "") {
  const dialog = $("#console-dialog");
  $("#console-title").textContent = `Console — ${name}`;
  $("#console-role").textContent = "connecting…";
  dialog.showModal();
  const [{ Terminal }, { FitAddon }] = await Promise.all([
    import("./vendor/xterm/xterm.mjs"), import("./vendor/xterm/addon-fit.mjs")]);
  const terminal = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 14 });
  const fit = new FitAddon();
  terminal.loadAddon(fit);
  terminal.open($("#terminal"));
  fit.fit();
  const socket = new WebSocket(socketUrl(`${base}/v1/vms/${encodeURIComponent(name)}/console`));
  socket.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  let typing = false;
  socket.onmessage = (event) => {
    if (typeof event.data !== "string") { terminal.write(new Uint8Array(event.data)); return; }
    const message = JSON.parse(event.data);
    if (message.type === "role") {
      typing = message.typing;
      const others = message.viewers - 1;
      $("#console-role").textContent = (typing ? "You are typing" : "Watching: someone else is typing") +
        (others ? ` · ${others} other viewer${others > 1 ? "s" : ""}` : "");
      $("#console-take").hidden = typing;
    } else if (message.type === "closed") {
      $("#console-role").textContent = `closed: ${message.reason}`;
    }
  };
  socket.onclose = () => { if (!$("#console-role").textContent.startsWith("closed")) $("#console-role").textContent = "disconnected"; };
  terminal.onData((data) => { if (typing && socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data)); });
  const resize = () => {
    fit.fit();
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "resize", cols: terminal.cols, rows: terminal.rows }));
  };
  window.addEventListener("resize", resize);
  socket.onopen = resize;
  terminal.focus();
  consoleSession = { socket, terminal, resize };
}

$("#console-take").addEventListener("click", () => {
  consoleSession?.socket.send(JSON.stringify({ type: "take" }));
  consoleSession?.terminal.focus();
});

$("#console-dialog").addEventListener("close", () => {
  if (!consoleSession) return;
  window.removeEventListener("resize", consoleSession.resize);
  consoleSession.socket.close();
  consoleSession.terminal.dispose();
  consoleSession = null;
});

let screenSession = null;

export async function openScreen(name, base = "") {
  const dialog = $("#screen-dialog");
  $("#screen-title").textContent = `Screen — ${name}`;
  $("#screen-status").textContent = "connecting…";
  dialog.showModal();
  let display;
  try { display = await api("GET", `${base}/v1/vms/${encodeURIComponent(name)}/display`); } catch (error) {
    $("#screen-status").textContent = error.message; return;
  }
  if (!display.adapter || !display.vnc) {
    $("#screen-status").textContent = display.adapter ? "This VM's display has no VNC listener (restart it with this version)."
      : "This VM has no display adapter (give it one with vnc=auto, or a Windows profile).";
    return;
  }
  const { default: RFB } = await import("./vendor/novnc/core/rfb.js");
  const rfb = new RFB($("#screen"), socketUrl(`${base}/v1/vms/${encodeURIComponent(name)}/vnc`), { shared: true });
  rfb.scaleViewport = true;
  rfb.addEventListener("connect", () => { $("#screen-status").textContent = "connected"; rfb.focus(); });
  rfb.addEventListener("disconnect", (event) => {
    $("#screen-status").textContent = event.detail.clean ? "disconnected" : "this VM's screen cannot be reached (no display adapter, or it stopped)";
  });
  rfb.addEventListener("credentialsrequired", () => {
    const password = prompt("VNC password of this VM");
    if (password !== null) rfb.sendCredentials({ password });
  });
  screenSession = rfb;
}

$("#screen-cad").addEventListener("click", () => screenSession?.sendCtrlAltDel());
$("#paste").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("#paste-text");
  typeText(screenSession, input.value);
  input.value = "";
  screenSession?.focus();
});

// The guest's clipboard is not shared over VNC with QEMU: paste types the text as keystrokes.
function typeText(rfb, text) {
  if (!rfb) return;
  for (const character of text) {
    const code = character.codePointAt(0);
    const keysym = character === "\n" ? 0xff0d : code < 0x100 ? code : 0x01000000 + code;
    rfb.sendKey(keysym, null);
  }
}

$("#screen-dialog").addEventListener("close", () => {
  screenSession?.disconnect();
  screenSession = null;
  $("#screen").replaceChildren();
});

start().catch(showMessage);
