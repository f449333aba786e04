// The creator dashboard: fetch /v1/creators/{id}/stats with the token of the page's link, then render it.
// Every value from the API is written with textContent, never parsed as HTML: video titles are creator-supplied.
"use strict";

(function () {
  const COLORS = { views: "#2f6fed", purchases: "#f79009", commission: "#067647", funnel: "#7a5af8" };
  const ERRORS = {
    401: "This link has no valid token (missing, malformed or expired). Ask for a new dashboard link.",
    403: "This link belongs to another creator.",
    404: "There are no stats for this creator yet.",
  };

  const byId = (id) => document.getElementById(id);
  const percent = (v) => (v === null || v === undefined ? "–" : (v * 100).toFixed(1) + " %");
  const money = (v) => (v === null || v === undefined ? "–" : v.toFixed(2));
  const count = (v) => (v === null || v === undefined ? "–" : String(v));
  const FORMATS = { percent, money, count };

  /** The token from the link (#token=… keeps it out of server logs; ?token=… works too), then drop it from the address bar. */
  function takeToken() {
    const hash = new URLSearchParams(location.hash.slice(1));
    const query = new URLSearchParams(location.search);
    const token = hash.get("token") || query.get("token");
    query.delete("token");
    const rest = query.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
    return token;
  }

  /** The creator id of the page's path, /creators/{creator_id}. */
  function creatorId() {
    const parts = location.pathname.split("/").filter(Boolean);
    return decodeURIComponent(parts[parts.length - 1] || "");
  }

  /** The stats URL, passing the page's from/to through. */
  function statsUrl(creator) {
    const query = new URLSearchParams(location.search);
    const range = new URLSearchParams();
    for (const name of ["from", "to"]) {
      if (query.get(name)) range.set(name, query.get(name));
    }
    const suffix = range.toString() ? "?" + range.toString() : "";
    return "/v1/creators/" + encodeURIComponent(creator) + "/stats" + suffix;
  }

  function lookup(data, path) {
    return path.split(".").reduce((node, key) => (node === null || node === undefined ? node : node[key]), data);
  }

  /** Write a value into an element: formatted text, raw value in data-value (the tests read both). */
  function put(el, value, format) {
    el.textContent = (FORMATS[format] || count)(value);
    el.dataset.value = value === null || value === undefined ? "null" : String(value);
  }

  function cell(row, value, format, column) {
    const td = document.createElement("td");
    put(td, value, format);
    if (column) td.dataset.col = column;
    row.appendChild(td);
    return td;
  }

  function textCell(row, text, column) {
    const td = document.createElement("td");
    td.textContent = text;
    if (column) td.dataset.col = column;
    row.appendChild(td);
    return td;
  }

  function titleOf(video) {
    return video.title === null || video.title === undefined || video.title === "" ? video.video_id : video.title;
  }

  function fillFields(data) {
    for (const el of document.querySelectorAll("[data-field]")) {
      put(el, lookup(data, el.dataset.field), el.dataset.format);
    }
  }

  function fillVersus(id, item) {
    const box = byId(id);
    const title = box.querySelector(".title");
    const detail = box.querySelector(".detail");
    if (!item) {
      title.textContent = "Not enough viewers yet";
      detail.textContent = "";
      box.dataset.videoId = "";
      return;
    }
    box.dataset.videoId = item.video_id;
    title.textContent = titleOf(item);
    const lift = item.lift === null ? "" : " (" + item.lift.toFixed(2) + "× your average)";
    detail.textContent = percent(item.conversion.rate) + " of " + item.viewers + " viewers bought" + lift;
    detail.className = "detail " + item.vs_average;
  }

  function fillVideos(videos) {
    const body = byId("videos").querySelector("tbody");
    body.replaceChildren();
    videos.forEach((video, i) => {
      const tr = document.createElement("tr");
      tr.dataset.videoId = video.video_id;
      textCell(tr, String(i + 1));
      textCell(tr, titleOf(video), "title");
      cell(tr, video.impressions, "count", "impressions");
      cell(tr, video.views, "count", "views");
      cell(tr, video.viewers, "count", "viewers");
      cell(tr, video.purchases, "count", "purchases");
      cell(tr, video.conversion.rate, "percent", "conversion");
      cell(tr, video.gmv, "money", "gmv");
      cell(tr, video.commission.accrued, "money", "commission");
      cell(tr, video.cascade.reached_users, "count", "reach");
      body.appendChild(tr);
    });
  }

  function fillCascades(cascades, videos) {
    const titles = new Map(videos.map((v) => [v.video_id, titleOf(v)]));
    const body = byId("cascades").querySelector("tbody");
    body.replaceChildren();
    for (const c of cascades) {
      const tr = document.createElement("tr");
      tr.dataset.rootShareId = c.root_share_id;
      textCell(tr, c.root_share_id, "root");
      textCell(tr, titles.get(c.video_id) || c.video_id, "video");
      cell(tr, c.shares, "count", "shares");
      cell(tr, c.reached_users, "count", "reached_users");
      cell(tr, c.max_depth, "count", "max_depth");
      cell(tr, c.purchases, "count", "purchases");
      body.appendChild(tr);
    }
  }

  function funnelChart(totals) {
    const steps = [["Impressions", totals.impressions], ["Views", totals.views], ["Shares", totals.shares],
      ["Purchases", totals.purchases]];
    return new Chart(byId("funnel-chart"), {
      type: "bar",
      data: {
        labels: steps.map(([name, n]) => name + " (" + n + ")"),
        datasets: [{ label: "count", data: steps.map(([, n]) => n), backgroundColor: COLORS.funnel }],
      },
      options: {
        indexAxis: "y", animation: false, maintainAspectRatio: false,
        plugins: { legend: { display: false } },
        scales: { x: { type: "logarithmic", title: { display: true, text: "count (log scale)" } } },
      },
    });
  }

  function dailyChart(days) {
    const series = (key) => days.map((d) => d[key]);
    return new Chart(byId("daily-chart"), {
      data: {
        labels: series("date"),
        datasets: [
          { type: "line", label: "views", data: series("views"), borderColor: COLORS.views, yAxisID: "y" },
          { type: "bar", label: "purchases", data: series("purchases"), backgroundColor: COLORS.purchases,
            yAxisID: "y1" },
          { type: "line", label: "commission", data: series("commission"), borderColor: COLORS.commission,
            yAxisID: "y2" },
        ],
      },
      options: {
        animation: false, maintainAspectRatio: false, interaction: { mode: "index", intersect: false },
        scales: {
          y: { position: "left", beginAtZero: true, title: { display: true, text: "views" } },
          y1: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
            title: { display: true, text: "purchases" } },
          y2: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
            title: { display: true, text: "commission" } },
        },
      },
    });
  }

  function render(data) {
    byId("creator").textContent = data.creator_id;
    const from = data.range.from || "the beginning";
    const to = data.range.to || "now";
    byId("range").textContent = "From " + from + " to " + to + " (UTC; the end is excluded)";
    fillFields(data);
    fillVersus("best", data.best);
    fillVersus("worst", data.worst);
    fillVideos(data.videos);
    fillCascades(data.cascades, data.videos);
    byId("status").hidden = true;
    byId("content").hidden = false;  // charts measure their box: show it before drawing
    funnelChart(data.totals);
    dailyChart(data.daily);
    document.body.dataset.state = "ready";
  }

  function fail(message) {
    byId("status").hidden = true;
    byId("content").hidden = true;
    const box = byId("error");
    box.textContent = message;
    box.hidden = false;
    document.body.dataset.state = "error";
  }

  async function errorMessage(response) {
    if (ERRORS[response.status]) return ERRORS[response.status];
    if (response.status === 422) {
      const body = await response.json().catch(() => ({}));
      return typeof body.detail === "string" ? body.detail : "The date range is not valid.";
    }
    return "Your stats are unavailable right now (HTTP " + response.status + "). Try again in a moment.";
  }

  async function main() {
    const creator = creatorId();
    byId("creator").textContent = creator;
    const token = takeToken();
    if (!token) {
      fail("This link has no token. Open the dashboard with the link you were given (it ends in #token=…).");
      return;
    }
    let response;
    try {
      response = await fetch(statsUrl(creator), {
        headers: { Authorization: "Bearer " + token, Accept: "application/json" }, cache: "no-store",
      });
    } catch (err) {
      fail("Could not reach the server. Check your connection and reload.");
      return;
    }
    if (!response.ok) {
      fail(await errorMessage(response));
      return;
    }
    render(await response.json());
  }

  main().catch((err) => fail("Something went wrong while showing your stats: " + err.message));
})();
