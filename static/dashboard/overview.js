// Keeps the tenants overview live: polls the stats every two seconds, derives events/s.
const table = document.getElementById("tenants");
const previous = new Map();

async function refresh() {
  const response = await fetch(table.dataset.statsUrl, { credentials: "same-origin" });
  if (!response.ok) return;
  const { tenants } = await response.json();
  const now = performance.now();
  for (const tenant of tenants) {
    const row = table.querySelector(`tr[data-slug="${CSS.escape(tenant.slug)}"]`);
    if (!row) continue;
    const set = (field, value) => { row.querySelector(`[data-field="${field}"]`).textContent = value; };
    set("websocket", tenant.connections.websocket);
    set("sse", tenant.connections.sse);
    set("accepted", tenant.events.accepted);
    set("delivered", tenant.events.delivered);
    set("persisted", tenant.events.persisted);
    set("lag", tenant.persistence.lag_seconds);
    const before = previous.get(tenant.slug);
    if (before) {
      const rate = (tenant.events.accepted - before.accepted) / ((now - before.at) / 1000);
      set("rate", rate.toFixed(1));
    }
    previous.set(tenant.slug, { accepted: tenant.events.accepted, at: now });
  }
}

refresh();
setInterval(refresh, 2000);
