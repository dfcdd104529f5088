// Manager mode (`virtainer serve --docker`): the Docker engine's VM containers. Live from the
// manager's /v1/events (the engine's container events, no polling); each container's VMs, console
// and screen through the manager (/v1/containers/NAME/api/...), which holds the container's token.

import { api, el, openConsole, openScreen, renderList, showMessage } from "./app.js";

const $ = (selector) => document.querySelector(selector);
const containers = new Map(); // name -> {info, vms: [VM status] | null, note}
const cards = new Map();

const apiBase = (name) => `/v1/containers/${encodeURIComponent(name)}/api`;

export function listen() {
  $("#manager").hidden = false;
  const events = new EventSource("/v1/events");
  events.onopen = () => { $("#live").textContent = "live"; loadAll().catch(showMessage); };
  events.onerror = () => { $("#live").textContent = "reconnecting…"; };
  events.addEventListener("container", (event) => {
    const data = JSON.parse(event.data);
    if (["create", "destroy", "rename"].includes(data.action)) loadAll().catch(showMessage);
    else refresh(data.vm);
  });
  loadImages();
  return events;
}

export async function loadAll() {
  const list = await api("GET", "/v1/containers");
  const names = new Set(list.map((info) => info.name));
  for (const name of [...containers.keys()]) if (!names.has(name)) containers.delete(name);
  for (const info of list) containers.set(info.name, { ...(containers.get(info.name) ?? { vms: null, note: "" }), info });
  render();
  await Promise.all(list.map((info) => loadVms(info.name)));
  render();
}

async function refresh(name) {
  try {
    const list = await api("GET", "/v1/containers");
    const info = list.find((item) => item.name === name);
    if (!info) { containers.delete(name); render(); return; }
    containers.set(name, { ...(containers.get(name) ?? { vms: null, note: "" }), info });
    render();
    await loadVms(name);
  } catch (error) { showMessage(error); }
  render();
}

async function loadVms(name) {
  const known = containers.get(name);
  if (!known) return;
  if (known.info.state !== "running" || !known.info.api) { known.vms = null; known.note = ""; return; }
  try {
    known.vms = await api("GET", `${apiBase(name)}/v1/vms`);
    known.note = "";
  } catch (error) {
    known.vms = null;
    known.note = `API not answering yet (${error.message})`;
  }
}

async function loadImages() {
  try {
    const images = await api("GET", "/v1/containers/images");
    $("#images").replaceChildren(...images.map((tag) => el("option", { value: tag })));
    const input = $("#new-image");
    if (!input.value && images.length) input.value = images[0];
  } catch (error) { showMessage(error); }
}

function render() {
  const entries = [...containers.values()].sort((a, b) => a.info.name.localeCompare(b.info.name))
    .map((entry) => ({ key: entry.info.name, data: entry, build: containerCard }));
  renderList($("#containers"), cards, entries, "No virtainer containers on this engine.");
}

function containerCard({ info, vms, note }) {
  const name = info.name;
  const running = info.state === "running";
  const key = (what) => `container:${name}:${what}`;
  const timeout = el("input", { type: "number", min: 1, max: 3600, value: 70, "aria-label": `stop timeout for ${name}`, "data-key": key("timeout") });
  const dropVolume = el("input", { type: "checkbox", "aria-label": `also delete the volume of ${name}`, "data-key": key("drop-volume") });
  return el("article", { class: "vm", "data-container": name, "aria-label": name },
    el("h2", {}, name),
    el("div", {}, el("span", { class: `state ${running ? "running" : "shut-off"}`, "data-field": "state" }, info.state),
      info.health ? el("span", { class: "note", "data-field": "health" }, ` · ${info.health}`) : null),
    el("dl", {},
      el("dt", {}, "image"), el("dd", {}, info.image),
      el("dt", {}, "volume"), el("dd", { "data-field": "volume" }, info.volume || "—"),
      el("dt", {}, "ports"), el("dd", {}, info.ports.join(", ") || "—"),
      ...(vms || []).flatMap((vm) => vmRows(name, vm)),
      note ? [el("dt", {}, "VM"), el("dd", { class: "note" }, note)] : []),
    el("div", { class: "actions" },
      el("button", { type: "button", class: "primary", disabled: running, "data-key": key("start"), onclick: () => act(name, "start") }, "Start"),
      el("button", { type: "button", disabled: !running, "data-key": key("stop"),
        onclick: () => act(name, "stop", { timeout_s: Number(keyed(key("timeout"))?.value) || 70 }) }, "Stop"),
      el("label", {}, "timeout", timeout, "s"),
      el("button", { type: "button", class: "danger", disabled: running, "data-key": key("remove"),
        onclick: () => removeContainer(name, Boolean(keyed(key("drop-volume"))?.checked)) }, "Remove"),
      el("label", {}, dropVolume, "and its volume")));
}

function vmRows(container, vm) {
  const on = ["running", "paused", "shutting-down"].includes(vm.state);
  const ready = vm.readiness.ready ? "ready" : `waiting for ${vm.readiness.wanted.join(", ")}`;
  const stages = vm.readiness.stages.map((stage) => `${stage.stage} ${Number(stage.elapsed_s).toFixed(1)} s`).join(", ");
  return [
    el("dt", {}, `VM ${vm.name}`),
    el("dd", { "data-vm": vm.name },
      el("span", { "data-field": "vm-state" }, vm.state), " · ", el("span", { "data-field": "readiness" }, ready),
      stages ? el("div", { class: "note" }, stages) : null,
      el("div", { class: "actions" },
        el("button", { type: "button", disabled: !on, onclick: () => openConsole(vm.name, apiBase(container)) }, "Console"),
        el("button", { type: "button", disabled: !on, onclick: () => openScreen(vm.name, apiBase(container)) }, "Screen"))),
  ];
}

function keyed(key) { return document.querySelector(`[data-key="${CSS.escape(key)}"]`); }

async function act(name, action, body) {
  showMessage(null);
  try { await api("POST", `/v1/containers/${encodeURIComponent(name)}/${action}`, body); } catch (error) { showMessage(error); }
  refresh(name);
}

async function removeContainer(name, dropVolume) {
  const what = dropVolume ? `${name} and its volume (the VM's disk is deleted)` : `${name} (its volume is kept)`;
  if (!confirm(`Remove ${what}?`)) return;
  showMessage(null);
  try {
    const removed = await api("DELETE", `/v1/containers/${encodeURIComponent(name)}?volume=${dropVolume}`);
    if (removed?.volume_kept) $("#manager-note").textContent = `Removed ${name}; its volume ${removed.volume_kept} is kept.`;
  } catch (error) { showMessage(error); }
  loadAll().catch(showMessage);
}

$("#create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const value = (field) => form.elements[field].value;
  const body = {
    name: value("name").trim(), image: value("image").trim(), memory_mib: Number(value("memory_mib")), cpus: Number(value("cpus")),
    ssh_key: value("ssh_key"), volume: value("volume").trim(), ports: value("ports"), env: value("env"),
    network: form.elements.network.checked, kvm: form.elements.kvm.checked,
  };
  showMessage(null);
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const created = await api("POST", "/v1/containers", body);
    $("#manager-note").textContent = `Created ${created.name} (volume ${created.volume}).`;
    form.elements.name.value = "";
    form.elements.volume.value = "";
  } catch (error) { showMessage(error); } finally { button.disabled = false; }
  loadAll().catch(showMessage);
});
