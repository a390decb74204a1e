// The tenant page: a live event viewer on the hub's own client, a rate chart, who is online on a
// topic (presence, live) with the tenant's per-topic counts, and a test publisher.
import { EventhubClient } from "../eventhub.js";

const viewer = document.getElementById("viewer");
const list = document.getElementById("events");
const stateBadge = document.getElementById("state");
const pauseButton = document.getElementById("pause");
const chart = document.getElementById("chart");
const MAX_ROWS = 200;

let client = null;
let paused = false;
const perSecond = new Array(60).fill(0);
let currentSecond = Math.floor(Date.now() / 1000);

function connect() {
  // Carry the last event id over, so that switching transport or topics loses nothing.
  const lastEventId = client?.lastEventId || undefined;
  if (client) client.close();
  const topics = document.getElementById("topics").value.split(",").map((t) => t.trim()).filter(Boolean);
  client = new EventhubClient({
    tenant: viewer.dataset.tenant,
    transport: document.getElementById("transport").value,
    topics: topics.length ? topics : ["*"],
    lastEventId,
  });
  client.on("state", ({ state, reason }) => {
    stateBadge.textContent = reason ? `${state}: ${reason}` : state;
    stateBadge.className = `state ${state}`;
  });
  client.on("event", show);
  client.connect();
}

function show(event) {
  tick();
  perSecond[perSecond.length - 1] += 1;
  if (paused) return;
  const latency = Date.now() - Date.parse(event.ts);
  const item = document.createElement("li");
  item.dataset.seq = event.seq;
  const meta = document.createElement("div");
  meta.className = "meta";
  for (const text of [`#${event.seq}`, event.topic, event.event, new Date(event.ts).toLocaleTimeString(), `${latency} ms`]) {
    const span = document.createElement("span");
    span.textContent = text;
    meta.append(span);
  }
  const body = document.createElement("pre");
  body.textContent = JSON.stringify(event.data, null, 2);
  item.append(meta, body);
  list.prepend(item);
  while (list.children.length > MAX_ROWS) list.lastElementChild.remove();
}

function tick() {
  const second = Math.floor(Date.now() / 1000);
  while (currentSecond < second) {
    perSecond.shift();
    perSecond.push(0);
    currentSecond += 1;
  }
}

function draw() {
  tick();
  const ctx = chart.getContext("2d");
  const { width, height } = chart;
  ctx.clearRect(0, 0, width, height);
  const peak = Math.max(1, ...perSecond);
  const bar = width / perSecond.length;
  ctx.fillStyle = "#2f6fed";
  perSecond.forEach((n, i) => {
    const h = (n / peak) * (height - 4);
    ctx.fillRect(i * bar, height - h, Math.max(1, bar - 1), h);
  });
  document.getElementById("rate").textContent = perSecond[perSecond.length - 2] ?? 0;
}

async function refreshStats() {
  const response = await fetch(viewer.dataset.statsUrl, { credentials: "same-origin" });
  if (!response.ok) return;
  const stats = await response.json();
  document.getElementById("ws-count").textContent = stats.connections.websocket;
  document.getElementById("sse-count").textContent = stats.connections.sse;
  document.getElementById("persisted").textContent = stats.events.persisted;
  document.getElementById("lag").textContent = stats.persistence.lag_seconds;
}

// Presence: its own connection to the one topic watched, opened when asked (the viewer's
// counts stay those of the tenant's clients). The hub does not count a dashboard session in
// presence, so watching adds no one to the list or the counts.
let presenceClient = null;
const presenceList = document.getElementById("presence-users");
const presenceState = document.getElementById("presence-state");

function watchPresence(topic) {
  if (presenceClient) presenceClient.close();
  presenceList.replaceChildren();
  presenceClient = new EventhubClient({
    tenant: viewer.dataset.tenant,
    transport: document.getElementById("transport").value,
    topics: [topic],
    presence: true,
  });
  presenceClient.on("state", ({ state, reason }) => {
    presenceState.textContent = reason ? `${state}: ${reason}` : state;
    presenceState.className = `state ${state}`;
  });
  presenceClient.on("presence", (change) => {
    if (change.topic === topic) showPresent(presenceClient.presence(topic));
  });
  presenceClient.connect();
}

function showPresent(users) {
  presenceList.replaceChildren(
    ...users.map(({ user, info }) => {
      const item = document.createElement("li");
      item.dataset.user = user;
      item.textContent = user;
      const detail = Object.keys(info || {}).length ? JSON.stringify(info) : "";
      if (detail) {
        const span = document.createElement("span");
        span.textContent = detail;
        item.append(span);
      }
      return item;
    }),
  );
}

async function refreshPresenceTopics() {
  const response = await fetch(viewer.dataset.presenceUrl, { credentials: "same-origin" });
  if (!response.ok) return;
  const { topics, truncated } = await response.json();
  document.querySelector("#presence-topics tbody").replaceChildren(
    ...topics.map(({ topic, connections, users }) => {
      const row = document.createElement("tr");
      row.dataset.topic = topic;
      for (const text of [topic, connections, users]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      return row;
    }),
  );
  document.getElementById("presence-truncated").hidden = !truncated;
}

document.getElementById("presence-watch").addEventListener("submit", (submit) => {
  submit.preventDefault();
  const topic = submit.target.topic.value.trim();
  if (topic && !topic.endsWith("*")) watchPresence(topic);
  else presenceState.textContent = "an exact topic, without *";
});

document.getElementById("apply").addEventListener("click", connect);
document.getElementById("transport").addEventListener("change", connect);
document.getElementById("clear").addEventListener("click", () => list.replaceChildren());
pauseButton.addEventListener("click", () => {
  paused = !paused;
  pauseButton.textContent = paused ? "Resume" : "Pause";
});

document.getElementById("publish").addEventListener("submit", async (submit) => {
  submit.preventDefault();
  const form = submit.target;
  const output = document.getElementById("publish-result");
  let data;
  try {
    data = JSON.parse(form.data.value || "null");
  } catch {
    output.textContent = "Data is not valid JSON.";
    return;
  }
  const response = await fetch(viewer.dataset.publishUrl, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": form.csrfmiddlewaretoken.value },
    body: JSON.stringify({ topic: form.topic.value, type: form.type.value, data }),
  });
  const body = await response.json();
  output.textContent = response.ok ? `Published #${body.seq}` : `Refused (${response.status}): ${body.detail}`;
});

connect();
setInterval(draw, 500);
setInterval(refreshStats, 2000);
refreshPresenceTopics();
setInterval(refreshPresenceTopics, 2000);
