// manta's dashboard: plain JS, one file, no build step (only the chart
// library is bundled: vendor/charts.js). Every value shown comes from the
// head's JSON routes and is put in the page as text, never as HTML.
"use strict";

const state = { csrf: "", principal: null, timers: [], page: null };

// -- helpers -------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v;  // CSSOM: the page's CSP admits no style attributes
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, opts = {}) {
  const init = { method: opts.method || "GET", credentials: "same-origin", headers: {} };
  if (init.method !== "GET") {
    init.headers["X-CSRF-Token"] = state.csrf;  // every state-changing call carries it
    if (opts.body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.body);
    }
  }
  const resp = await fetch(path, init);
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) {
    if (resp.status === 401 && !opts.quiet) showLogin();
    throw new HttpError(resp.status, (body && body.message) || resp.statusText);
  }
  return body;
}

function every(ms, fn) {
  const t = { stopped: false, id: 0, stop() { this.stopped = true; clearTimeout(this.id); } };
  const run = async () => {
    if (t.stopped) return;
    try { await fn(); } catch (e) { if (!(e instanceof HttpError && e.status === 401)) note(e); }
    if (!t.stopped) t.id = setTimeout(run, ms);
  };
  state.timers.push(t);
  run();
}

function stopTimers() {
  for (const t of state.timers) t.stop();
  state.timers = [];
}

function note(e) {
  const el = document.getElementById("page-error");
  if (el) el.textContent = String(e.message || e);
}

function fmtBytes(n) {
  if (n === null || n === undefined || n < 0) return "?";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

function fmtTime(ms) { return ms ? new Date(ms).toLocaleTimeString() : ""; }
function fmtDur(a, b) { return a && b ? `${((b - a) / 1000).toFixed(3)} s` : ""; }
function short(id) { return id ? String(id).slice(0, 12) : ""; }
function stateCell(s) { return h("span", { class: `state-${s}` }, s); }

function bar(used, total) {
  const f = total > 0 ? Math.min(1, used / total) : 0;
  return h("span", { class: "bar", title: `${used} / ${total}` }, h("span", { style: `width:${(f * 100).toFixed(1)}%` }));
}

// A table: columns are [header, row => cell]; rows may be clicked.
function table(columns, rows, onClick, id) {
  return h("table", { id },
    h("thead", {}, h("tr", {}, columns.map(([name]) => h("th", {}, name)))),
    h("tbody", {}, rows.map((r) => h("tr", onClick ? { class: "clickable", onclick: () => onClick(r) } : {},
      columns.map(([, cell]) => h("td", {}, cell(r)))))));
}

function replace(el, ...children) { el.replaceChildren(...children.flat(Infinity)); }

// -- login -------------------------------------------------------------------------

function showLogin() {
  stopTimers();
  document.getElementById("page").hidden = true;
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("login").hidden = false;
}

async function login(ev) {
  ev.preventDefault();
  const err = document.getElementById("login-error");
  err.textContent = "";
  try {
    const token = document.getElementById("token").value;
    const r = await api("/api/login", { method: "POST", body: { token }, quiet: true });
    document.getElementById("token").value = "";
    state.csrf = r.csrf_token;
    await boot();
  } catch (e) {
    err.textContent = `Login failed: ${e.message}`;
  }
}

async function logout() {
  try { await api("/api/logout", { method: "POST", body: {} }); } catch (e) { /* gone already */ }
  state.csrf = "";
  showLogin();
}

async function boot() {
  let s;
  try {
    s = await api("/api/session", { quiet: true });
  } catch (e) {
    showLogin();
    return;
  }
  state.principal = s.principal;
  state.csrf = s.csrf_token || state.csrf;
  document.getElementById("login").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("who").textContent = `${s.principal.name} (${s.principal.role})`;
  document.getElementById("nav-audit").hidden = s.principal.role !== "admin";
  route();
}

// -- pages ---------------------------------------------------------------------------

const pages = {};

function route() {
  if (!state.principal) return;
  stopTimers();
  const name = (location.hash.replace(/^#\//, "").split("?")[0]) || "overview";
  const render = pages[name] || pages.overview;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("href") === `#/${name}`);
  const page = document.getElementById("page");
  page.hidden = false;
  page.dataset.page = name;
  replace(page, h("p", { id: "page-error", class: "error" }));
  render(page);
}

// Charts of the head's metrics history (/api/metrics/history): a sample
// every few seconds for the last hour, kept by the head itself.
const pct = (v) => `${v.toFixed(0)}%`;
const perS = (v) => v.toFixed(1);
const SERIES = [
  ["cpu", "CPU", pct, ["machines' use", "reserved by tasks and actors"]],
  ["memory", "Memory in use", fmtBytes, ["memory"]],
  ["object_store", "Object store", fmtBytes, ["in memory", "spilled"]],
  ["rates", "Tasks and actors per second", perS, ["tasks ended/s", "actors ended/s"]],
];

// An x tick: the time of day (uPlot's own labels also print a date, which is noise here).
const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });

function makeChart(el, title, fmt, labels) {
  if (!window.uPlot) return null;
  const width = Math.max(300, el.clientWidth - 10);
  const colors = ["#2563eb", "#dc2626", "#16a34a"];
  return new window.uPlot({
    width, height: 180, title,
    series: [{}].concat(labels.map((l, i) => ({ label: l, stroke: colors[i % colors.length], width: 2, value: (u, v) => v === null ? "" : fmt(v) }))),
    axes: [{ values: (u, vs) => vs.map(clock) }, { values: (u, vs) => vs.map(fmt), size: 80 }],
    // At least the last 5 minutes (one sample would span years), at most the hour kept.
    scales: { x: { time: true, range: (u, min, max) => [Math.max(max - 3600, Math.min(min, max - 300)), max] } },
  }, [[], ...labels.map(() => [])], el);
}

function fromHistory(hist) {
  // Field names: head/http/history.py's Sample.
  const s = hist.samples || [];
  const t = s.map((x) => x.time);
  return {
    cpu: [t, s.map((x) => x.cpu_percent), s.map((x) => (x.cpus ? (100 * x.cpus_used) / x.cpus : 0))],
    memory: [t, s.map((x) => x.mem_used)],
    object_store: [t, s.map((x) => x.store_used), s.map((x) => x.spilled_bytes)],
    rates: [t, s.map((x) => x.tasks_finished_per_s + x.tasks_failed_per_s), s.map((x) => x.actors_finished_per_s)],
  };
}

pages.overview = (page) => {
  const cards = h("div", { class: "cards", id: "cards" });
  const nodes = h("div", { id: "nodes" });
  const charts = h("div", { class: "charts" });
  page.append(h("h1", {}, "Overview"), cards, h("h2", {}, "Nodes"), nodes, h("h2", {}, "The last hour"), charts);
  const boxes = {};
  const plots = {};
  for (const [key, title, fmt, labels] of SERIES) {
    boxes[key] = h("div", { class: "chart", id: `chart-${key}` });
    charts.append(boxes[key]);
    plots[key] = makeChart(boxes[key], title, fmt, labels);
  }
  every(2000, async () => {
    const o = await api("/api/state/overview");
    const alive = (o.actors_by_state.ALIVE || 0);
    const card = (n, l, id) => h("div", { class: "card", id }, h("div", { class: "n" }, n), h("div", { class: "l" }, l));
    const cpuT = o.resources_total.CPU || 0, cpuU = o.resources_used.CPU || 0;
    replace(cards,
      card(o.alive_nodes, "nodes alive", "card-nodes"),
      card(`${cpuU.toFixed(1)} / ${cpuT}`, "CPUs in use", "card-cpu"),
      card(alive, "actors alive", "card-actors"),
      card(o.tasks_total, "tasks known", "card-tasks"),
      card(o.running_jobs, "jobs running", "card-jobs"));
    replace(nodes, table([
      ["Node", (n) => h("span", { class: "mono" }, short(n.node_id))],
      ["Address", (n) => n.address],
      ["State", (n) => stateCell(n.alive ? "ALIVE" : "DEAD")],
      ["Head", (n) => (n.is_head ? "yes" : "")],
      ["Resources (used / total)", (n) => Object.keys(n.resources_total).sort().map((k) => {
        const tot = n.resources_total[k], used = tot - (n.resources_available[k] || 0);
        const show = k === "memory" || k === "object_store_memory" ? `${fmtBytes(used)} / ${fmtBytes(tot)}` : `${+used.toFixed(2)} / ${tot}`;
        return h("div", {}, bar(used, tot), ` ${k} ${show}`);
      })],
      ["Object store", (n) => fmtBytes(n.store_capacity)],
    ], o.nodes, null, "nodes-table"));
    const hist = await api("/api/metrics/history");
    const data = fromHistory(hist);
    for (const [key] of SERIES) {
      if (plots[key]) plots[key].setData(data[key]);
      boxes[key].dataset.points = String(data[key][0].length);
    }
  });
};

pages.jobs = (page) => {
  const subs = h("div", { id: "submissions" });
  const drivers = h("div", { id: "drivers" });
  const logBox = h("div", { id: "job-log-box" });
  page.append(h("h1", {}, "Jobs"), h("h2", {}, "Submitted jobs"), subs, logBox, h("h2", {}, "Drivers"), drivers);
  let followed = null;
  const follow = (job) => {
    followed = job.submission_id;
    const pre = h("pre", { id: "job-log" }, "");
    const stop = h("button", { onclick: async () => {
      try { await api(`/api/jobs/${encodeURIComponent(job.submission_id)}/stop`, { method: "POST", body: {} }); } catch (e) { note(e); }
    } }, "Stop");
    replace(logBox, h("div", { class: "detail" }, h("h2", {}, `Logs of ${job.submission_id} `, stop), pre));
    every(1500, async () => {
      if (followed !== job.submission_id) return;
      const r = await api(`/api/jobs/${encodeURIComponent(job.submission_id)}/logs`);
      if (pre.textContent !== r.logs) {
        pre.textContent = r.logs;
        pre.scrollTop = pre.scrollHeight;
      }
    });
  };
  let submissions = true;
  every(2000, async () => {
    if (submissions) {
      try {
        const js = await api("/api/jobs/");
        replace(subs, table([
          ["Submission", (j) => h("span", { class: "mono" }, j.submission_id)],
          ["Status", (j) => stateCell(j.status)],
          ["Entrypoint", (j) => h("code", {}, j.entrypoint)],
          ["Message", (j) => j.message || ""],
          ["Started", (j) => fmtTime(j.start_time)],
          ["Ended", (j) => fmtTime(j.end_time)],
        ], js, follow, "jobs-table"));
      } catch (e) {
        if (!(e instanceof HttpError) || e.status === 401) throw e;
        submissions = false;
        replace(subs, h("p", { class: "muted" }, `The Jobs API is not on this head (${e.message}).`));
      }
    }
    const d = await api("/api/state/jobs");
    replace(drivers, table([
      ["Job", (j) => h("span", { class: "mono" }, j.job_id)],
      ["Namespace", (j) => j.namespace],
      ["State", (j) => stateCell(j.alive ? "RUNNING" : "FINISHED")],
      ["Driver", (j) => `${j.ip} pid ${j.driver_pid}`],
      ["Entrypoint", (j) => h("code", {}, j.entrypoint)],
      ["Started", (j) => fmtTime(j.start_ms)],
    ], d.jobs, null, "drivers-table"));
  });
};

pages.actors = (page) => {
  const body = h("div", { id: "actors" });
  page.append(h("h1", {}, "Actors"), body);
  every(2000, async () => {
    const r = await api("/api/state/actors");
    replace(body, table([
      ["Actor", (a) => h("span", { class: "mono" }, short(a.actor_id))],
      ["Class", (a) => a.class_name],
      ["Name", (a) => a.name],
      ["Namespace", (a) => a.namespace],
      ["State", (a) => stateCell(a.state)],
      ["Job", (a) => a.job_id],
      ["Node", (a) => h("span", { class: "mono" }, short(a.node_id))],
      ["PID", (a) => a.pid || ""],
      ["Restarts", (a) => a.num_restarts],
      ["Death cause", (a) => a.death_cause || ""],
    ], r.actors, null, "actors-table"));
  });
};

pages.tasks = (page) => {
  const sel = h("select", { id: "task-state" }, ["", "PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER", "RUNNING", "FINISHED", "FAILED"]
    .map((s) => h("option", { value: s }, s || "any state")));
  const name = h("input", { id: "task-name", placeholder: "function or class name" });
  const job = h("input", { id: "task-job", placeholder: "job id (hex)" });
  const count = h("span", { class: "muted", id: "task-count" });
  const body = h("div", { id: "tasks" });
  const detail = h("div", { id: "task-detail" });
  page.append(h("h1", {}, "Tasks"), h("div", { class: "filters" }, sel, name, job, count), body, detail);
  let open = null;
  const show = async (t) => {
    open = t.task_id;
    const r = await api(`/api/state/tasks/${t.task_id}`);
    const x = r.task;
    replace(detail, h("div", { class: "detail" },
      h("h2", {}, `Task ${x.name} `, h("span", { class: "mono" }, x.task_id)),
      h("p", {}, "State: ", stateCell(x.state), ` · attempt ${x.attempt_number + 1} · job ${x.job_id}`,
        x.worker_pid ? ` · pid ${x.worker_pid}` : ""),
      x.error_type ? h("p", { class: "error" }, `Error: ${x.error_type}`) : null,
      x.error_message ? h("pre", { id: "task-traceback" }, x.error_message) : null,
      h("h2", {}, "Story"),
      table([["Time", (s) => fmtTime(s.time_ms)], ["Step", (s) => s.step], ["Detail", (s) => s.detail]], r.story, null, "task-story")));
  };
  const load = async () => {
    const q = new URLSearchParams({ limit: "500" });
    if (sel.value) q.set("state", sel.value);
    if (name.value.trim()) q.set("name", name.value.trim());
    if (job.value.trim()) q.set("job", job.value.trim());
    const r = await api(`/api/state/tasks?${q}`);
    count.textContent = `${r.tasks.length} of ${r.total} shown`;
    replace(body, table([
      ["Task", (t) => h("span", { class: "mono" }, short(t.task_id))],
      ["Name", (t) => t.name],
      ["Type", (t) => t.type],
      ["State", (t) => stateCell(t.state)],
      ["Job", (t) => t.job_id],
      ["Error", (t) => t.error_type || ""],
      ["Created", (t) => fmtTime(t.creation_time_ms)],
      ["Ran for", (t) => fmtDur(t.start_time_ms, t.end_time_ms)],
    ], r.tasks, (t) => show(t).catch(note), "tasks-table"));
  };
  for (const el of [sel, name, job]) el.addEventListener("change", () => load().catch(note));
  every(2000, load);
  void open;
};

pages["placement-groups"] = (page) => {
  const body = h("div", { id: "pgs" });
  page.append(h("h1", {}, "Placement groups"), body);
  every(3000, async () => {
    const r = await api("/api/state/placement_groups");
    replace(body, table([
      ["Group", (g) => h("span", { class: "mono" }, short(g.placement_group_id))],
      ["Name", (g) => g.name],
      ["State", (g) => stateCell(g.state)],
      ["Strategy", (g) => g.strategy],
      ["Job", (g) => g.creator_job_id],
      ["Bundles", (g) => g.bundles.map((b) => h("div", {}, `#${b.index} ${JSON.stringify(b.resources)} on ${short(b.node_id) || "(not placed)"}`))],
    ], r.placement_groups, null, "pgs-table"));
  });
};

pages.objects = (page) => {
  const nodes = h("div", { id: "object-nodes" });
  const owners = h("div", { id: "object-owners" });
  const missing = h("p", { class: "muted" });
  page.append(h("h1", {}, "Objects and memory"), h("h2", {}, "Per node"), nodes, h("h2", {}, "By owner"), owners, missing);
  every(5000, async () => {
    const [r, o] = await Promise.all([api("/api/state/objects"), api("/api/state/overview")]);
    const cap = Object.fromEntries(o.nodes.map((n) => [n.node_id, n.store_capacity]));
    replace(nodes, table([
      ["Node", (n) => h("span", { class: "mono" }, short(n.node_id))],
      ["IP", (n) => n.ip],
      ["Objects in store", (n) => n.objects],
      ["Referenced in store", (n) => [bar(n.store_bytes, cap[n.node_id] || 0), ` ${fmtBytes(n.store_bytes)} / ${fmtBytes(cap[n.node_id] || 0)}`]],
      ["Store used", (n) => (n.used === undefined ? "" : fmtBytes(n.used))],
      ["Pinned", (n) => (n.pinned_bytes === undefined ? "" : fmtBytes(n.pinned_bytes))],
      ["Spilled", (n) => (n.spilled_bytes === undefined ? "" : `${fmtBytes(n.spilled_bytes)} (${n.spilled_objects} objects)`)],
    ], r.nodes, null, "object-nodes-table"));
    replace(owners, table([
      ["Process", (p) => `${p.driver ? "driver" : "worker"} pid ${p.pid}`],
      ["Node", (p) => h("span", { class: "mono" }, short(p.node_id))],
      ["References", (p) => p.refs],
      ["Bytes", (p) => fmtBytes(p.bytes)],
      ["By type", (p) => Object.entries(p.by_type).map(([k, v]) => `${k}: ${v}`).join(", ")],
    ], r.owners, null, "object-owners-table"));
    missing.textContent = r.missing.length ? `Did not answer: ${r.missing.join("; ")}` : "";
  });
};

pages.logs = (page) => {
  const files = h("div", { id: "log-files" });
  const viewer = h("div", { id: "log-viewer" });
  page.append(h("h1", {}, "Logs"), files, viewer);
  let reading = null;
  const open = (f) => {
    reading = `${f.node_id}/${f.name}`;
    const key = reading;
    const pre = h("pre", { id: "log-text" });
    const followBox = h("input", { type: "checkbox", id: "log-follow", checked: true });
    replace(viewer, h("div", { class: "detail" }, h("h2", {}, `${f.name} on ${short(f.node_id)} `),
      h("label", {}, followBox, " follow"), pre));
    let offset = -1, inode = 0;
    every(1000, async () => {
      if (reading !== key || (offset >= 0 && !followBox.checked)) return;
      const q = new URLSearchParams({ node: f.node_id, name: f.name, offset: String(offset), inode: String(inode), tail: "500" });
      const c = await api(`/api/state/logs/read?${q}`);
      if (c.rotated) pre.textContent = "";
      if (c.text) { pre.textContent += c.text; pre.scrollTop = pre.scrollHeight; }
      offset = c.offset; inode = c.inode;
    });
  };
  const load = async () => {
    try {
      const r = await api("/api/state/logs");
      const byNode = {};
      for (const f of r.files) (byNode[f.node_id] = byNode[f.node_id] || []).push(f);
      replace(files, Object.entries(byNode).map(([node, fs]) => [
        h("h2", {}, `Node ${short(node)}`),
        table([
          ["File", (f) => h("span", { class: "mono" }, f.name)],
          ["Worker", (f) => (f.pid ? `pid ${f.pid}` : "")],
          ["Job", (f) => f.job_id || ""],
          ["Size", (f) => fmtBytes(f.size)],
          ["Modified", (f) => fmtTime(f.mtime * 1000)],
        ], fs, open, `log-files-${short(node)}`)]));
    } catch (e) {
      if (!(e instanceof HttpError) || e.status === 401) throw e;
      replace(files, h("p", { class: "muted", id: "logs-unavailable" }, `Logs are not available: ${e.message}`));
    }
  };
  load().catch(note);
  every(10000, load);
};

// Dask's task stream: one row per worker, a bar per task from its start to
// its end (to now while it runs), coloured by function name.
function colorOf(name) {
  let x = 0;
  for (const c of name) x = (x * 31 + c.charCodeAt(0)) >>> 0;
  return `hsl(${x % 360}, 65%, 50%)`;
}

pages.timeline = (page) => {
  const canvas = h("canvas", { id: "stream", width: "1200", height: "360" });
  const legend = h("div", { class: "legend", id: "stream-legend" });
  const info = h("p", { class: "muted", id: "stream-info" });
  page.append(h("h1", {}, "Task timeline"), h("p", { class: "muted" }, "Tasks of the last minute, one row per worker, drawn live."), canvas, legend, info);
  every(1000, async () => {
    const r = await api("/api/state/timeline?window_s=60");
    const ctx = canvas.getContext("2d");
    const W = canvas.width = canvas.clientWidth || 1200, H = canvas.height;
    ctx.clearRect(0, 0, W, H);
    const rows = [...new Set(r.bars.map((b) => b.worker))].sort();
    const t0 = r.since_ms, t1 = r.now_ms, left = 110;
    const rowH = Math.max(8, Math.min(40, (H - 20) / Math.max(1, rows.length)));
    const x = (t) => left + ((t - t0) / Math.max(1, t1 - t0)) * (W - left - 5);
    ctx.font = "11px monospace";
    ctx.fillStyle = "#6b7280";
    rows.forEach((w, i) => ctx.fillText(w, 2, 14 + i * rowH + rowH / 2));
    const names = new Set();
    for (const b of r.bars) {
      const i = rows.indexOf(b.worker);
      names.add(b.name);
      ctx.fillStyle = b.state === "FAILED" ? "#b91c1c" : colorOf(b.name);
      const a = x(Math.max(b.start_ms, t0)), e = x(b.end_ms || t1);
      ctx.fillRect(a, 4 + i * rowH, Math.max(1.5, e - a), rowH - 3);
    }
    replace(legend, [...names].sort().map((n) => h("span", {}, h("i", { style: `background:${colorOf(n)}` }), n)));
    info.textContent = `${r.bars.length} tasks on ${rows.length} workers`;
    canvas.dataset.bars = String(r.bars.length);
  });
};

pages.audit = (page) => {
  const action = h("input", { id: "audit-action", placeholder: "action prefix (e.g. auth.)" });
  const body = h("div", { id: "audit" });
  page.append(h("h1", {}, "Audit log"), h("div", { class: "filters" }, action), body);
  every(3000, async () => {
    try {
      const r = await api(`/api/audit?limit=300&action=${encodeURIComponent(action.value)}`);
      replace(body, table([
        ["Time", (a) => new Date(a.time * 1000).toLocaleString()],
        ["Principal", (a) => `${a.principal} (${a.role})`],
        ["Action", (a) => a.action],
        ["Target", (a) => a.target],
        ["Namespace", (a) => a.namespace],
        ["Outcome", (a) => h("span", { class: a.outcome === "ok" ? "state-FINISHED" : "state-FAILED" }, a.outcome)],
        ["Peer", (a) => a.peer],
        ["Detail", (a) => a.detail],
      ], r.records, null, "audit-table"));
    } catch (e) {
      if (!(e instanceof HttpError) || e.status !== 403) throw e;
      replace(body, h("p", { class: "error", id: "audit-refused" }, `The audit log is for admins: ${e.message}`));
    }
  });
};

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login-form").addEventListener("submit", login);
  document.getElementById("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  boot();
});
