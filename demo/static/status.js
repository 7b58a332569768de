// Status page of the cowsqlpy demo cluster: polls /_cluster every second and renders it.
"use strict";
const REFRESH_MS = 1000;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function badge(text, cls) { return el("span", {class: "badge " + cls}, text); }

function renderNodes(data) {
  const tbody = document.querySelector("#nodes tbody");
  tbody.replaceChildren();
  for (const n of data.nodes || []) {
    const health = n.healthy === true ? badge("healthy", "ok")
                 : n.healthy === false ? badge("down", "down") : badge("unknown", "unknown");
    const api = n.api ? el("a", {href: location.protocol + "//" + n.api + "/"}, n.api) : "-";
    const tr = el("tr", {class: n.leader ? "node leader" : "node", "data-node": n.db,
                         "data-role": n.role, "data-healthy": String(n.healthy)},
      el("td", {}, n.id + (n.db === data.node.db ? " (this node)" : "")),
      el("td", {}, n.role),
      el("td", {}, n.leader ? badge("LEADER", "leader-badge") : ""),
      el("td", {}, health),
      el("td", {}, n.db),
      el("td", {}, api));
    tbody.append(tr);
  }
}

function renderRecent(data) {
  const tbody = document.querySelector("#recent tbody");
  tbody.replaceChildren();
  for (const e of data.recent || []) {
    const value = e.type === "delete" ? "" : (e.value !== undefined ? e.value : "base64:" + e.value_b64);
    tbody.append(el("tr", {},
      el("td", {}, e.revision), el("td", {class: e.type}, e.type),
      el("td", {}, e.key), el("td", {class: "value", title: value}, value)));
  }
  if (!tbody.children.length) tbody.append(el("tr", {}, el("td", {colspan: "4"}, "no writes yet")));
}

function render(data, status) {
  const leader = (data.nodes || []).find(n => n.leader);
  document.body.dataset.leader = data.leader || "";
  document.body.dataset.nodes = String((data.nodes || []).length);
  document.querySelector("#summary").textContent =
    "served by " + data.node.api + " \u00b7 leader: " + (leader ? leader.db + (leader.api ? " (" + leader.api + ")" : "") : "none") +
    " \u00b7 revision " + (data.revision ?? "?") + " \u00b7 " + (data.nodes || []).length + " nodes";
  const banner = document.querySelector("#banner");
  banner.hidden = status === 200;
  banner.textContent = status === 200 ? "" : "HTTP " + status + ": " + (data.message || data.error || "");
  renderNodes(data);
  renderRecent(data);
  document.querySelector("#curl").textContent =
    "curl -X PUT -d my-value " + location.origin + "/my-key\n" +
    "curl " + location.origin + "/my-key\n" +
    "curl '" + location.origin + "/?prefix=my-'";
  document.body.dataset.state = status === 200 ? "ready" : "degraded";
}

async function refresh() {
  try {
    const resp = await fetch("/_cluster", {cache: "no-store"});
    render(await resp.json(), resp.status);
  } catch (err) {
    const banner = document.querySelector("#banner");
    banner.hidden = false;
    banner.textContent = "this node does not answer: " + err;
    document.body.dataset.state = "unreachable";
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

document.querySelector("#put-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const key = document.querySelector("#put-key").value;
  const resp = await fetch("/" + key.split("/").map(encodeURIComponent).join("/"),
                           {method: "PUT", body: document.querySelector("#put-value").value});
  const body = await resp.json();
  document.querySelector("#put-result").textContent =
    resp.status + " " + (resp.ok ? "revision " + body.revision : body.message);
});

refresh();
