/* The insights-audit viewer: pages over the public API, with the token a person gave.
   No framework and no build step; every piece of data goes into the page as text. */
"use strict";

(() => {
  const BASE = "/api/v2/insights/kpis/audit-logs";
  const TOKEN_KEY = "insights-audit-token";
  const OVERSIGHT = ["Opsera Administrator", "Administrator", "Auditor", "Security Manager"];
  const TYPES = ["dashboard", "kpi", "mapping", "stream", "token", "import"];
  const LIVE_ROWS = 500;
  const view = document.getElementById("view");
  const nav = document.getElementById("nav");
  let me = null;
  let live = null;

  // A viewer link carries its token in the fragment: keep it for this tab only, and take it
  // out of the address bar (and so out of history and bookmarks) at once.
  const fromLink = location.hash.match(/^#token=([^&]+)/);
  if (fromLink) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(fromLink[1]));
    history.replaceState(null, "", location.pathname + "#/overview");
  }

  // ---- small helpers -------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
      else if (name === "class") element.className = value;
      else element.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      element.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return element;
  }

  const number = (value) => (value === null || value === undefined ? "–" : Number(value).toLocaleString());
  const when = (value) => (value ? new Date(value).toLocaleString() : "never");
  const day = (date) => date.toISOString().slice(0, 10);

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, options = {}) {
    const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}`, ...(options.headers || {}) };
    let response;
    try {
      response = await fetch(BASE + path, { headers, signal: options.signal });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "");
    }
    if (!response.ok) {
      let message = "";
      try {
        message = (await response.json()).message || "";
      } catch (_) {
        message = "";
      }
      throw new ApiError(response.status, message);
    }
    return options.raw ? response : response.json();
  }

  function sentence(error) {
    switch (error.status) {
      case 0: return "The service cannot be reached. Check the connection and try again.";
      case 401: return "Your sign-in is no longer valid: the token expired or was revoked. Sign in again.";
      case 403: return "Your token's roles do not allow this. Ask an administrator of your organisation for access.";
      case 404: return "Nothing was found by that name in your organisation.";
      case 429: return "The service is busy. Try again in a moment.";
      case 400: return `The service could not use that request: ${error.message || "bad input"}.`;
      default:
        if (error.status >= 500) return `The service could not answer (status ${error.status}). Try again later.`;
        return error.message || "Something went wrong.";
    }
  }

  function fail(container, error) {
    if (error && error.name === "AbortError") return;
    if (!(error instanceof ApiError)) console.warn(error);
    container.replaceChildren(h("p", { class: "error", role: "alert" }, sentence(error)));
    if (error.status === 401) signOut(sentence(error));
  }

  function card(title, ...extra) {
    const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    const id = `h-${title.toLowerCase().replace(/[^a-z]+/g, "-")}`;
    const element = h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), extra, body);
    return { element, body };
  }

  function table(caption, columns, rows, options = {}) {
    if (!rows.length) return h("p", { class: "muted" }, options.empty || "Nothing yet.");
    const head = h("tr", {}, columns.map((column) => h("th", { scope: "col", class: column.num ? "num" : null }, column.label)));
    const body = rows.map((row) => {
      const cells = columns.map((column) => h("td", { class: column.num ? "num" : null }, column.cell(row)));
      const attrs = options.onpick
        ? { class: "pick", tabindex: "0", onclick: () => options.onpick(row), onkeydown: (event) => { if (event.key === "Enter") options.onpick(row); } }
        : {};
      return h("tr", attrs, cells);
    });
    return h("div", { class: "table-wrap" }, h("table", {}, h("caption", { class: "skip" }, caption), h("thead", {}, head), h("tbody", {}, body)));
  }

  const dashboardLink = (row) => h("a", { href: `#/dashboard/${encodeURIComponent(row.dashboardId)}` }, row.name || row.dashboardId);

  async function into(container, load, render) {
    try {
      container.replaceChildren(render(await load));
    } catch (error) {
      fail(container, error);
    }
  }

  function download(response, fallback) {
    return response.blob().then((blob) => {
      const disposition = response.headers.get("Content-Disposition") || "";
      const named = disposition.match(/filename="([^"]+)"/);
      const name = named ? named[1] : fallback;
      const link = h("a", { href: URL.createObjectURL(blob), download: name, hidden: true }, name);
      document.body.append(link);
      link.click();
      setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
    });
  }

  function chart(container, days, description) {
    const style = getComputedStyle(document.documentElement);
    const color = (name) => style.getPropertyValue(name).trim();
    const xs = days.map((item) => Date.parse(`${item.date}T00:00:00Z`) / 1000);
    const size = () => ({ width: Math.max(260, container.clientWidth - 8), height: 240 });
    const axis = { stroke: color("--fg"), grid: { stroke: color("--line"), width: 1 }, ticks: { stroke: color("--line"), width: 1 } };
    const plot = new uPlot(
      {
        ...size(),
        tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"),
        scales: { x: { time: true }, y: { range: (_, min, max) => [0, Math.max(1, max)] } },
        series: [
          { label: "Day (UTC)" },
          { label: "Views", stroke: color("--views"), width: 2, points: { show: days.length <= 31 } },
          { label: "Unique viewers", stroke: color("--viewers"), width: 2, dash: [6, 4], points: { show: days.length <= 31 } },
        ],
        axes: [axis, { ...axis, size: 50 }],
        legend: { show: false },
      },
      [xs, days.map((item) => item.views), days.map((item) => item.uniqueViewers)],
      container,
    );
    container.setAttribute("role", "img");
    container.setAttribute("aria-label", description);
    new ResizeObserver(() => plot.setSize(size())).observe(container);
    return plot;
  }

  function chartBlock(days, description) {
    const holder = h("div", { class: "chart" });
    const legend = h(
      "p",
      { class: "legend-note muted" },
      h("span", { class: "swatch-views" }, "━ views"),
      " and ",
      h("span", { class: "swatch-viewers" }, "╍ unique viewers"),
      " per day (UTC)",
    );
    const numbers = h(
      "details",
      {},
      h("summary", {}, "The numbers of each day"),
      table("Views per day", [
        { label: "Day", cell: (row) => row.date },
        { label: "Views", num: true, cell: (row) => number(row.views) },
        { label: "Unique viewers", num: true, cell: (row) => number(row.uniqueViewers) },
      ], days),
    );
    const block = h("div", {}, holder, legend, numbers);
    requestAnimationFrame(() => chart(holder, days, description));
    return block;
  }

  function figures(pairs) {
    return h("div", { class: "figures" }, pairs.map(([label, value]) => h("div", { class: "figure" }, h("span", { class: "muted" }, label), h("strong", {}, value))));
  }

  function hashQuery() {
    const at = location.hash.indexOf("?");
    return new URLSearchParams(at >= 0 ? location.hash.slice(at + 1) : "");
  }

  function heading(title) {
    document.title = `${title} · Insights Audit`;
    return h("h1", {}, title);
  }

  const isOverseer = () => me && me.roles.some((role) => OVERSIGHT.includes(role));

  // ---- pages -----------------------------------------------------------------------------

  function overview() {
    const recent = card("My recently viewed");
    const picker = h(
      "select",
      { id: "popular-window", onchange: () => loadPopular() },
      [["", "All time"], ["7", "Last 7 days"], ["30", "Last 30 days"], ["90", "Last 90 days"]].map(([value, label]) => h("option", { value }, label)),
    );
    const popular = card("Most viewed", h("label", { class: "inline" }, "Window", picker));
    const trending = card("Trending this week");
    const recommended = card("Recommended for me");
    view.replaceChildren(heading("Overview"), h("div", { class: "grid" }, recent.element, popular.element, trending.element, recommended.element));
    const loadPopular = () => {
      const days = picker.value ? `&days=${picker.value}` : "";
      into(popular.body, api(`/dashboard/most-viewed?limit=10${days}`), (body) => table("Most viewed dashboards", [
        { label: "Dashboard", cell: dashboardLink },
        { label: "Views", num: true, cell: (row) => number(row.viewCount) },
        { label: "Viewers", num: true, cell: (row) => number(row.uniqueViewers) },
      ], body.data, { empty: "No views in this window." }));
    };
    into(recent.body, api("/dashboard/recently-viewed?limit=10"), (body) => table("My recently viewed dashboards", [
      { label: "Dashboard", cell: dashboardLink },
      { label: "My views", num: true, cell: (row) => number(row.viewCount) },
      { label: "Last viewed", cell: (row) => when(row.lastViewedAt) },
    ], body.data, { empty: "You have not viewed a dashboard yet." }));
    loadPopular();
    into(trending.body, api("/dashboard/trending?days=7&limit=10"), (body) => table("Trending dashboards", [
      { label: "Dashboard", cell: dashboardLink },
      { label: "This week", num: true, cell: (row) => number(row.recentViews) },
      { label: "Week before", num: true, cell: (row) => number(row.previousViews) },
    ], body.data, { empty: "Nothing is rising this week." }));
    into(recommended.body, api("/dashboard/recommended?limit=10"), (body) => table("Dashboards recommended for me", [
      { label: "Dashboard", cell: dashboardLink },
      { label: "Why", cell: (row) => (row.reason === "similar" ? "viewed by people who view yours" : "popular in your organisation") },
    ], body.data, { empty: "No recommendations yet." }));
  }

  function dashboard(id) {
    const query = hashQuery();
    const days = query.get("days") || "30";
    const title = heading(`Dashboard ${id}`);
    const picker = h(
      "select",
      { id: "stats-days", onchange: () => { location.hash = `#/dashboard/${encodeURIComponent(id)}?days=${picker.value}`; } },
      ["7", "30", "90", "365"].map((value) => h("option", { value, selected: value === days }, `Last ${value} days`)),
    );
    const usage = card("Views per day", h("label", {}, "Period", picker));
    const viewers = card("Top viewers (all time)");
    const related = card("Viewers of this dashboard also viewed");
    const trail = card("Audit trail");
    const detail = h("div", { "aria-live": "polite" });
    view.replaceChildren(title, usage.element, h("div", { class: "grid" }, viewers.element, related.element), trail.element, detail);
    into(usage.body, api(`/dashboard/${encodeURIComponent(id)}/stats?days=${days}`), (body) => {
      const stats = body.data;
      title.textContent = stats.name || `Dashboard ${id}`;
      document.title = `${title.textContent} · Insights Audit`;
      viewers.body.replaceChildren(table("Top viewers", [
        { label: "User", cell: (row) => row.userEmail || row.userId },
        { label: "Views", num: true, cell: (row) => number(row.viewCount) },
        { label: "Last viewed", cell: (row) => when(row.lastViewedAt) },
      ], stats.topViewers, { empty: "Nobody has viewed it yet." }));
      return h(
        "div",
        {},
        figures([
          ["Views (all time)", number(stats.totalViews)],
          ["Viewers (all time)", number(stats.uniqueViewers)],
          [`Views in ${stats.period.days} days`, number(stats.period.views)],
          [`Viewers in ${stats.period.days} days`, number(stats.period.uniqueViewers)],
        ]),
        chartBlock(stats.dailyViews, `Views and unique viewers per day over the last ${stats.period.days} days`),
      );
    });
    into(related.body, api(`/dashboard/${encodeURIComponent(id)}/related?limit=10`), (body) => table("Related dashboards", [
      { label: "Dashboard", cell: dashboardLink },
      { label: "Shared viewers", num: true, cell: (row) => number(row.sharedViewers) },
    ], body.data, { empty: "No overlap with other dashboards in the last 90 days." }));
    trailPage(trail.body, `/dashboard/${encodeURIComponent(id)}?limit=20`, detail);
  }

  function entryColumns() {
    return [
      { label: "When", cell: (row) => when(row.createdAt) },
      { label: "Type", cell: (row) => row.type },
      { label: "Action", cell: (row) => row.action },
      { label: "User", cell: (row) => row.userEmail || row.userId },
    ];
  }

  function showEntry(detail, id) {
    detail.replaceChildren(h("p", { class: "muted" }, "Loading the entry…"));
    into(detail, api(`/${encodeURIComponent(id)}`), (body) => {
      const entry = body.data;
      const section = h(
        "section",
        { class: "card", "aria-labelledby": "entry-title", tabindex: "-1" },
        h("h2", { id: "entry-title" }, `Entry ${entry.id}`),
        figures([["Action", entry.action], ["Type", entry.type], ["By", entry.userEmail || entry.userId], ["When", when(entry.createdAt)]]),
        h("p", {}, "Target ", h("code", {}, entry.targetId), entry.type === "dashboard" ? [" · ", dashboardLink({ dashboardId: entry.targetId })] : null),
        h("h3", {}, "Details"),
        h("pre", { class: "json" }, JSON.stringify(entry.details, null, 2)),
        h("details", {}, h("summary", {}, "The whole entry"), h("pre", { class: "json" }, JSON.stringify(entry, null, 2))),
      );
      requestAnimationFrame(() => section.focus());
      return section;
    });
  }

  function trailPage(container, path, detail) {
    const pages = [null];
    const load = () => {
      const cursor = pages[pages.length - 1];
      const url = cursor ? `${path}&cursor=${encodeURIComponent(cursor)}` : path;
      into(container, api(url), (body) => {
        const next = body.pagination && body.pagination.nextCursor;
        const actions = h(
          "div",
          { class: "actions" },
          h("button", { type: "button", class: "quiet", disabled: pages.length === 1, onclick: () => { pages.pop(); load(); } }, "Newer"),
          h("button", { type: "button", class: "quiet", disabled: !next, onclick: () => { pages.push(next); load(); } }, "Older"),
          h("span", { class: "muted" }, `Page ${pages.length}`),
        );
        return h("div", {}, table("Entries, newest first", entryColumns(), body.data, { empty: "No entries.", onpick: (row) => showEntry(detail, row.id) }), actions);
      });
    };
    load();
  }

  function searchForm(query) {
    const text = (name, label, extra = {}) => h("label", {}, label, h("input", { name, value: query.getAll(name).join(", "), ...extra }));
    const local = (value) => (value ? new Date(value).toISOString().slice(0, 16) : "");
    return h(
      "form",
      { class: "filters", id: "search-form", "aria-label": "Search filters" },
      h("fieldset", {}, h("legend", {}, "Types"), TYPES.map((type) => h("label", {}, h("input", { type: "checkbox", name: "type", value: type, checked: query.getAll("type").includes(type) }), type))),
      text("action", "Actions (comma-separated; a prefix ends in *)", { placeholder: "settings.*" }),
      text("userId", "Users (comma-separated ids)"),
      text("targetId", "Target id"),
      h("label", {}, "Since (UTC)", h("input", { type: "datetime-local", name: "since", value: local(query.get("since")) })),
      h("label", {}, "Until (UTC)", h("input", { type: "datetime-local", name: "until", value: local(query.get("until")) })),
      text("q", "Words", { type: "search" }),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Search")),
    );
  }

  function formQuery(form) {
    const data = new FormData(form);
    const query = new URLSearchParams();
    for (const type of data.getAll("type")) query.append("type", type);
    for (const name of ["action", "userId"]) {
      for (const value of String(data.get(name) || "").split(",").map((part) => part.trim()).filter(Boolean)) query.append(name, value);
    }
    for (const name of ["targetId", "q"]) {
      const value = String(data.get(name) || "").trim();
      if (value) query.set(name, value);
    }
    for (const name of ["since", "until"]) {
      const value = String(data.get(name) || "");
      if (value) query.set(name, `${value}:00Z`);
    }
    return query;
  }

  function search() {
    const query = hashQuery();
    const form = searchForm(query);
    const results = card("Entries");
    const integrity = card("Integrity of the trail");
    const detail = h("div", { "aria-live": "polite" });
    const exports = h(
      "div",
      { class: "actions" },
      h("span", { class: "muted" }, "Export what the filters keep:"),
      ["csv", "ndjson"].map((format) => h("button", {
        type: "button",
        class: "quiet",
        onclick: (event) => exportFile(event.target, query, format),
      }, format === "csv" ? "CSV" : "NDJSON")),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      location.hash = `#/search?${formQuery(form)}`;
    });
    view.replaceChildren(heading("Search the trail"), form, exports, results.element, detail, integrity.element);
    const path = `?${new URLSearchParams([...query, ["limit", "25"]])}`;
    trailPage(results.body, path, detail);
    into(integrity.body, api("/integrity"), (body) => {
      const status = body.data;
      const good = status.status === "verified";
      return h(
        "div",
        {},
        h("p", { class: good ? "ok" : status.status === "failed" ? "error" : "muted" }, {
          verified: "Verified: every sealed entry matches its signed checkpoint.",
          failed: `Failed: ${status.reason || "an entry does not match its checkpoint"}.`,
          no_data: "Nothing sealed yet.",
        }[status.status] || status.status),
        figures([
          ["Entries checked", number(status.checked)],
          ["Not sealed yet", number(status.unsealed)],
          ["Latest checkpoint", status.checkpoint ? when(status.checkpoint.sealedAt || status.checkpoint.createdAt) : "none"],
        ]),
      );
    });
  }

  async function exportFile(button, query, format) {
    button.disabled = true;
    const note = h("span", { class: "muted", role: "status" }, "Preparing the file…");
    button.after(note);
    try {
      const response = await api(`/export?${new URLSearchParams([...query, ["format", format]])}`, { raw: true });
      await download(response, `audit-logs.${format}`);
      note.textContent = "Downloaded.";
    } catch (error) {
      note.textContent = sentence(error);
      note.className = "error";
    } finally {
      button.disabled = false;
    }
  }

  function stopLive() {
    if (live) live.abort();
    live = null;
  }

  function livePage() {
    const query = hashQuery();
    const type = h("select", { id: "live-type", onchange: () => { location.hash = type.value ? `#/live?type=${type.value}` : "#/live"; } },
      h("option", { value: "" }, "All types"), TYPES.map((value) => h("option", { value, selected: query.get("type") === value }, value)));
    const status = h("span", { class: "muted", role: "status" }, "Connecting…");
    const pause = h("button", { type: "button", "aria-pressed": "false" }, "Pause");
    const follow = h("span", { class: "muted" }, "");
    const rows = h("tbody", {});
    const log = h("div", { class: "live-log", tabindex: "0", "aria-label": "Entries as they arrive" },
      h("table", {}, h("caption", { class: "skip" }, "Entries as they arrive, newest last"),
        h("thead", {}, h("tr", {}, entryColumns().map((column) => h("th", { scope: "col" }, column.label)))), rows));
    const detail = h("div", { "aria-live": "polite" });
    view.replaceChildren(heading("Live"), h("div", { class: "actions" }, h("label", {}, "Type", type), pause, status, follow), log, detail);
    let paused = false;
    let held = [];
    let stuck = true;
    log.addEventListener("scroll", () => {
      stuck = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      follow.textContent = stuck ? "" : "Auto-scroll stopped: scroll to the bottom to follow again.";
    });
    const add = (entries) => {
      for (const entry of entries) {
        rows.append(h("tr", { class: "pick", tabindex: "0", onclick: () => showEntry(detail, entry.id), onkeydown: (event) => { if (event.key === "Enter") showEntry(detail, entry.id); } },
          entryColumns().map((column) => h("td", {}, column.cell(entry)))));
      }
      while (rows.children.length > LIVE_ROWS) rows.firstChild.remove();
      if (stuck) log.scrollTop = log.scrollHeight;
    };
    pause.addEventListener("click", () => {
      paused = !paused;
      pause.textContent = paused ? "Resume" : "Pause";
      pause.setAttribute("aria-pressed", String(paused));
      if (!paused) {
        add(held);
        held = [];
      }
    });
    const controller = new AbortController();
    live = controller;
    let lastId = "";
    const connect = async () => {
      while (!controller.signal.aborted) {
        try {
          const headers = lastId ? { "Last-Event-ID": lastId } : {};
          const response = await api(`/stream${type.value ? `?type=${type.value}` : ""}`, { raw: true, signal: controller.signal, headers });
          status.textContent = "Connected: new entries appear below.";
          const reader = response.body.getReader();
          const decoder = new TextDecoder();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += decoder.decode(value, { stream: true });
            const blocks = buffer.split("\n\n");
            buffer = blocks.pop();
            const entries = [];
            for (const block of blocks) {
              let id = "";
              let data = "";
              for (const line of block.split("\n")) {
                if (line.startsWith("id: ")) id = line.slice(4);
                else if (line.startsWith("data: ")) data += line.slice(6);
              }
              if (data) {
                entries.push(JSON.parse(data));
                lastId = id || lastId;
              }
            }
            if (!entries.length) continue;
            if (paused) {
              held = held.concat(entries).slice(-LIVE_ROWS);
              status.textContent = `Paused: ${held.length} new entries waiting.`;
            } else {
              add(entries);
            }
          }
        } catch (error) {
          if (controller.signal.aborted) return;
          if (error instanceof ApiError && [401, 403].includes(error.status)) {
            fail(status, error);
            return;
          }
        }
        if (controller.signal.aborted) return;
        status.textContent = "Reconnecting…";
        await new Promise((resolve) => setTimeout(resolve, 2000));
      }
    };
    connect();
  }

  function report() {
    const query = hashQuery();
    const today = new Date();
    const monthAgo = new Date(Date.now() - 29 * 86400000);
    const from = h("input", { type: "date", id: "report-from", value: query.get("from") || day(monthAgo) });
    const to = h("input", { type: "date", id: "report-to", value: query.get("to") || day(today) });
    const form = h("form", { class: "filters", "aria-label": "Report period" },
      h("label", {}, "From (UTC)", from), h("label", {}, "To (UTC, inclusive)", to),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Show")));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      location.hash = `#/report?from=${from.value}&to=${to.value}`;
    });
    const since = `${from.value}T00:00:00Z`;
    const until = new Date(Date.parse(`${to.value}T00:00:00Z`) + 86400000).toISOString();
    const period = `since=${encodeURIComponent(since)}&until=${encodeURIComponent(until)}`;
    const csv = h("button", { type: "button", class: "quiet", onclick: async () => {
      try {
        await download(await api(`/reports/usage?${period}&format=csv`, { raw: true }), `usage-${from.value}-${to.value}.csv`);
      } catch (error) {
        fail(body, error);
      }
    } }, "Download CSV");
    const print = h("button", { type: "button", class: "quiet", onclick: () => window.print() }, "Print");
    const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    view.replaceChildren(heading("Usage report"), form, h("div", { class: "actions" }, csv, print), body);
    into(body, api(`/reports/usage?${period}`), (answer) => {
      const usage = answer.data;
      const top = (rows) => rows.slice(0, 100);
      return h(
        "div",
        {},
        h("p", {}, `From ${usage.since.slice(0, 10)} to ${to.value} (UTC).`),
        figures([["Views", number(usage.views)], ["Viewers", number(usage.uniqueViewers)], ["Dashboards viewed", number(usage.activeDashboards)]]),
        h("section", { class: "card" }, h("h2", {}, "Views per day"), chartBlock(usage.dailyViews, "Views and unique viewers per day of the report's period")),
        h("div", { class: "grid" },
          h("section", { class: "card" }, h("h2", {}, "Dashboards"), table("Dashboards by views", [
            { label: "Dashboard", cell: dashboardLink },
            { label: "Views", num: true, cell: (row) => number(row.views) },
            { label: "Viewers", num: true, cell: (row) => number(row.uniqueViewers) },
          ], top(usage.dashboards), { empty: "No views in this period." })),
          h("section", { class: "card" }, h("h2", {}, "Viewers"), table("Viewers by views", [
            { label: "User", cell: (row) => row.userEmail || row.userId },
            { label: "Views", num: true, cell: (row) => number(row.views) },
            { label: "Dashboards", num: true, cell: (row) => number(row.dashboards) },
          ], top(usage.users), { empty: "Nobody viewed a dashboard in this period." }))),
        h("section", { class: "card" }, h("h2", {}, "Dashboards nobody viewed"), table("Dashboards without views", [
          { label: "Dashboard", cell: dashboardLink },
          { label: "Last viewed", cell: (row) => when(row.lastViewedAt) },
        ], top(usage.staleDashboards), { empty: "Every known dashboard was viewed." })),
      );
    });
  }

  // ---- sign-in and routing ---------------------------------------------------------------

  function signIn(message) {
    stopLive();
    me = null;
    nav.hidden = true;
    document.getElementById("who").textContent = "";
    document.getElementById("sign-out").hidden = true;
    const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
    const form = h("form", { "aria-label": "Sign in" },
      h("label", { for: "token" }, "API token"), input,
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Sign in")));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      start();
    });
    document.title = "Sign in · Insights Audit";
    view.replaceChildren(h("div", { class: "signin" },
      h("h1", {}, "Sign in"),
      message ? h("p", { class: "error", role: "alert" }, message) : null,
      h("p", {}, "Paste an API token of your organisation, or open a viewer link an administrator gave you. The token stays in this tab only and is forgotten when it closes."),
      form));
    input.focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    history.replaceState(null, "", location.pathname);
    signIn(typeof message === "string" ? message : "");
  }

  const PAGES = { overview, dashboard, search, live: livePage, report };

  function route() {
    if (!me) return;
    stopLive();
    const [path] = location.hash.replace(/^#\/?/, "").split("?");
    const [name, ...rest] = path.split("/");
    const page = PAGES[name] ? name : "overview";
    for (const link of nav.querySelectorAll("a")) {
      if (link.dataset.page === page) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    if (nav.querySelector(`a[data-page="${page}"][data-oversight]`) && !isOverseer()) {
      view.replaceChildren(heading("Not available"), h("p", { class: "error", role: "alert" },
        "This page is for auditors and administrators; your token's roles do not include them."));
      return;
    }
    PAGES[page](...rest.map(decodeURIComponent));
  }

  async function start() {
    if (!sessionStorage.getItem(TOKEN_KEY)) {
      signIn("");
      return;
    }
    try {
      me = (await api("/me")).data;
    } catch (error) {
      if (error.status === 401) signOut("That token is not valid or has expired. Paste another one, or ask for a new viewer link.");
      else fail(view, error);
      return;
    }
    nav.hidden = false;
    for (const link of nav.querySelectorAll("a[data-oversight]")) link.hidden = !isOverseer();
    document.getElementById("who").textContent = `${me.userEmail || me.userId} · ${me.org}`;
    document.getElementById("sign-out").hidden = false;
    if (!location.hash.startsWith("#/")) history.replaceState(null, "", `${location.pathname}#/overview`);
    route();
  }

  document.getElementById("sign-out").addEventListener("click", () => signOut(""));
  window.addEventListener("hashchange", () => {
    route();
    document.getElementById("main").focus({ preventScroll: true });
  });
  start();
})();
