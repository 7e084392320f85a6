// trio-ingest live dashboard: polls /api/snapshot every second and draws the
// graph (SVG, layered layout) and charts (canvas). No libraries, no build step.
"use strict";

(function () {
  var POLL_MS = 1000;
  var WINDOW_S = 300; // charts show the last 5 minutes
  var NODE_W = 200, NODE_H = 82, GAP_X = 150, GAP_Y = 26, PAD = 16;
  var PALETTE = ["#2f6fdb", "#1f9d55", "#d64545", "#d98b00", "#8e44ad", "#16a2b8", "#c0392b", "#7f8c8d"];
  var SVG_NS = "http://www.w3.org/2000/svg";

  var previous = null;
  var layoutKey = null;
  var layout = null;
  var history = [];
  var edgeColors = {};

  // -- formatting -----------------------------------------------------------
  function fmtCount(n) { return Math.round(n || 0).toLocaleString("en-US"); }
  function fmtRate(r) {
    r = r || 0;
    if (r >= 1e6) return (r / 1e6).toFixed(2) + "M/s";
    if (r >= 1e4) return (r / 1e3).toFixed(1) + "k/s";
    if (r >= 10) return Math.round(r).toLocaleString("en-US") + "/s";
    return r.toFixed(1) + "/s";
  }
  function fmtSeconds(s) {
    if (!s || s <= 0) return "-";
    if (s < 1e-3) return Math.round(s * 1e6) + "µs";
    if (s < 1) return (s * 1e3).toFixed(1) + "ms";
    return s.toFixed(2) + "s";
  }
  function fmtElapsed(s) {
    s = Math.floor(s || 0);
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    var mm = (h ? String(m).padStart(2, "0") : String(m));
    return (h ? h + ":" : "") + mm + ":" + String(sec).padStart(2, "0");
  }
  function fmtAxis(v, unit) {
    if (unit === "s") return fmtSeconds(v) === "-" ? "0" : fmtSeconds(v);
    if (unit === "%") return Math.round(v * 100) + "%";
    if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (v >= 1e3) return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + "k";
    return String(Math.round(v * 10) / 10);
  }

  // -- rates between two snapshots (run averages for the first one) ---------
  function Rates(cur, prev) {
    this.cur = cur;
    this.prev = prev;
    this.span = 0;
    if (prev && cur.time > prev.time && cur.elapsed >= prev.elapsed) this.span = cur.time - prev.time;
  }
  Rates.prototype.of = function (now, before) {
    if (this.span > 0 && before !== undefined && before !== null) return Math.max(now - before, 0) / this.span;
    return this.cur.elapsed > 0 ? now / this.cur.elapsed : 0;
  };
  Rates.prototype.node = function (name, field) {
    var before = this.prev && this.prev.nodes[name] ? this.prev.nodes[name][field] : null;
    return this.of(this.cur.nodes[name][field], before);
  };
  Rates.prototype.edge = function (name, field) {
    var before = this.prev && this.prev.edges[name] ? this.prev.edges[name][field] : null;
    return this.of(this.cur.edges[name][field], before);
  };
  Rates.prototype.total = function (field) {
    return this.of(this.cur[field], this.prev ? this.prev[field] : null);
  };

  // -- layout: layers by longest path from the sources, barycentre ordering --
  function computeLayout(graph) {
    var nodes = graph.nodes, links = graph.links;
    var byName = {}, ups = {}, layer = {};
    nodes.forEach(function (n) { byName[n.name] = n; ups[n.name] = []; });
    links.forEach(function (l) { if (ups[l.to] && byName[l.from]) ups[l.to].push(l.from); });
    function depth(name, seen) {
      if (layer[name] !== undefined) return layer[name];
      if (seen[name]) return 0; // a cycle cannot happen in a valid graph; be safe anyway
      seen[name] = true;
      var d = 0;
      ups[name].forEach(function (u) { d = Math.max(d, depth(u, seen) + 1); });
      layer[name] = d;
      return d;
    }
    var maxLayer = 0;
    nodes.forEach(function (n) {
      if (n.kind !== "dead_letter") maxLayer = Math.max(maxLayer, depth(n.name, {}));
    });
    nodes.forEach(function (n) { if (n.kind === "dead_letter") layer[n.name] = maxLayer; });
    var columns = [];
    for (var i = 0; i <= maxLayer; i++) columns.push([]);
    nodes.forEach(function (n) { if (n.kind !== "dead_letter") columns[layer[n.name]].push(n.name); });
    // two barycentre sweeps reduce crossings
    for (var sweep = 0; sweep < 2; sweep++) {
      for (var c = 1; c < columns.length; c++) {
        var index = {};
        columns[c - 1].forEach(function (name, k) { index[name] = k; });
        var weight = {};
        columns[c].forEach(function (name, k) {
          var us = ups[name].filter(function (u) { return index[u] !== undefined; });
          weight[name] = us.length ? us.reduce(function (a, u) { return a + index[u]; }, 0) / us.length : k;
        });
        columns[c].sort(function (a, b) { return weight[a] - weight[b]; });
      }
    }
    nodes.forEach(function (n) { if (n.kind === "dead_letter") columns[maxLayer].push(n.name); });
    var tallest = Math.max.apply(null, columns.map(function (col) { return col.length; }));
    var height = PAD * 2 + tallest * NODE_H + (tallest - 1) * GAP_Y;
    var pos = {};
    columns.forEach(function (col, c) {
      var colHeight = col.length * NODE_H + (col.length - 1) * GAP_Y;
      var top = (height - colHeight) / 2;
      col.forEach(function (name, k) {
        pos[name] = { x: PAD + c * (NODE_W + GAP_X), y: top + k * (NODE_H + GAP_Y) };
      });
    });
    return {
      pos: pos, byName: byName,
      width: PAD * 2 + columns.length * NODE_W + (columns.length - 1) * GAP_X,
      height: height
    };
  }

  function el(tag, attrs, text) {
    var node = document.createElementNS(SVG_NS, tag);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) node.setAttribute(k, attrs[k]);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fillColor(ratio) { return ratio < 0.5 ? "#1f9d55" : ratio < 0.9 ? "#d98b00" : "#d64545"; }

  function renderGraph(snap, rates) {
    var graph = snap.graph;
    var key = JSON.stringify(graph);
    if (key !== layoutKey) { layout = computeLayout(graph); layoutKey = key; }
    var svg = el("svg", { viewBox: "0 0 " + layout.width + " " + layout.height, role: "img",
                          "aria-label": "pipeline graph" });
    svg.style.maxHeight = Math.max(layout.height, 160) + "px";
    // labels go on top of the node boxes, so a long one is never hidden under a node
    var linkLayer = el("g", {}), nodeLayer = el("g", {}), labelLayer = el("g", {});
    svg.appendChild(linkLayer);
    svg.appendChild(nodeLayer);
    svg.appendChild(labelLayer);
    var pos = layout.pos;

    function curve(a, b, cls, width) {
      var x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
      if (x2 <= x1) { x1 = a.x + NODE_W / 2; y1 = a.y + NODE_H; x2 = b.x + NODE_W / 2; y2 = b.y; }
      var mx = (x1 + x2) / 2;
      var d = x2 > x1 ? "M" + x1 + "," + y1 + " C" + mx + "," + y1 + " " + mx + "," + y2 + " " + x2 + "," + y2
                      : "M" + x1 + "," + y1 + " L" + x2 + "," + y2;
      linkLayer.appendChild(el("path", { d: d, "class": "link " + cls, "stroke-width": width }));
      return { x: (x1 + x2) / 2, y: (y1 + y2) / 2 };
    }

    graph.links.forEach(function (l) {
      var a = pos[l.from], b = pos[l.to];
      if (!a || !b) return;
      var edge = l.edge && snap.edges[l.edge];
      var rate = edge ? rates.edge(l.edge, "events_through") : 0;
      var width = 1.5 + Math.min(6, Math.log10(1 + rate));
      var mid = curve(a, b, edge ? "" : "fused", width);
      if (l.port) {
        labelLayer.appendChild(el("text", { x: a.x + NODE_W + 6, y: mid.y - 4 + (b.y - a.y) / 4, "class": "port-label" }, l.port));
      }
      if (edge) {
        // the gauge sits just before the node the edge feeds: one per edge, never stacked
        var ratio = edge.capacity > 0 ? Math.min(edge.depth / edge.capacity, 1) : 0;
        var bw = 64, bh = 8, bx = b.x - bw - 14, by = b.y + NODE_H / 2 - bh - 6;
        if (b.x <= a.x + NODE_W) { bx = mid.x - bw / 2; by = mid.y - bh / 2; }
        linkLayer.appendChild(el("rect", { x: bx, y: by, width: bw, height: bh, rx: 2, "class": "depth-bg" }));
        linkLayer.appendChild(el("rect", { x: bx, y: by, width: Math.max(ratio * bw, edge.depth ? 2 : 0), height: bh, rx: 2, fill: fillColor(ratio) }));
        var label = fmtCount(edge.depth) + "/" + fmtCount(edge.capacity);
        labelLayer.appendChild(el("text", { x: bx + bw, y: by - 4, "text-anchor": "end", "class": "depth-label", "data-edge": l.edge }, label));
        // backpressure as people read it: share of time full, average senders waiting
        var full = rates.edge(l.edge, "full_seconds"), waiting = rates.edge(l.edge, "blocked_seconds");
        if (full > 0.005 || waiting > 0.005) {
          labelLayer.appendChild(el("text", { x: bx + bw, y: by + bh + 12, "text-anchor": "end", "class": "depth-label bp-label",
                                              "data-edge-full": full.toFixed(3), "data-edge-waiting": waiting.toFixed(3) },
                                    "full " + Math.round(Math.min(full, 1) * 100) + "% · " + waiting.toFixed(1) + " waiting"));
        }
      } else {
        labelLayer.appendChild(el("text", { x: mid.x, y: mid.y - 6, "text-anchor": "middle", "class": "depth-label" }, "fused"));
      }
    });

    var dead = graph.nodes.filter(function (n) { return n.kind === "dead_letter"; })[0];
    graph.nodes.forEach(function (n) {
      var stats = snap.nodes[n.name];
      if (dead && stats && stats.dead_lettered > 0 && n.name !== dead.name && pos[dead.name]) {
        curve(pos[n.name], pos[dead.name], "dead", 1.5);
      }
    });

    graph.nodes.forEach(function (n) {
      var p = pos[n.name];
      var stats = snap.nodes[n.name];
      if (!p) return;
      var failing = stats && (stats.dead_lettered > 0 || stats.errors > 0) && n.kind !== "dead_letter";
      var g = el("g", { "class": "node " + n.role + " " + n.kind + (failing ? " failing" : ""),
                        transform: "translate(" + p.x + "," + p.y + ")", "data-node": n.name });
      g.appendChild(el("rect", { width: NODE_W, height: NODE_H, rx: 8 }));
      g.appendChild(el("text", { x: 12, y: 20, "class": "name" }, n.name));
      g.appendChild(el("text", { x: 12, y: 36, "class": "kind" },
                       n.kind + (n.fused_into ? " · fused into " + n.fused_into : "")));
      if (stats) {
        var rin = rates.node(n.name, "events_in"), rout = rates.node(n.name, "events_out");
        g.appendChild(el("text", { x: 12, y: 54, "class": "rate", "data-node-rate": rout.toFixed(3) },
                         "in " + fmtRate(rin) + "  out " + fmtRate(rout)));
        var alert = [];
        if (stats.errors) alert.push("errors " + fmtCount(stats.errors));
        if (stats.dead_lettered) alert.push("dead " + fmtCount(stats.dead_lettered));
        if (stats.filtered) alert.push("filtered " + fmtCount(stats.filtered));
        var line = alert.length ? alert.join(" · ") : "batch p99 " + fmtSeconds(stats.latency.p99);
        g.appendChild(el("text", { x: 12, y: 72, "class": alert.length && (stats.errors || stats.dead_lettered) ? "alert" : "kind" }, line));
      }
      nodeLayer.appendChild(g);
    });
    var holder = document.getElementById("graph");
    holder.replaceChildren(svg);
  }

  // -- charts ---------------------------------------------------------------
  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 1.25, 1.5, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v) return steps[i] * p;
    return 10 * p;
  }

  function drawChart(canvas, series, points, unit) {
    var dpr = window.devicePixelRatio || 1;
    var w = canvas.clientWidth || 300, h = canvas.clientHeight || 200;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    var ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    // legend rows first: they decide where the plot starts
    ctx.font = "11px system-ui, sans-serif";
    var legend = [], lx = 54, ly = 10;
    series.forEach(function (s) {
      var last = null;
      for (var k = points.length - 1; k >= 0; k--) {
        var v = points[k].values[s.key];
        if (v !== null && v !== undefined) { last = v; break; }
      }
      var label = s.label + (last !== null ? " " + (unit === "s" ? fmtSeconds(last) : unit === "%" ? Math.round(last * 100) + "%" : fmtRate(last)) : "");
      var width = ctx.measureText(label).width + 14;
      if (lx + width > w - 10 && lx > 54) { lx = 54; ly += 15; }
      legend.push({ s: s, label: label, x: lx, y: ly });
      lx += width + 16;
    });
    var left = 54, right = 10, top = ly + 14, bottom = 22;
    var pw = w - left - right, ph = h - top - bottom;
    var tEnd = points.length ? points[points.length - 1].t : 0;
    var tFirst = points.length ? points[0].t : 0;
    // the time axis grows from one minute to WINDOW_S as history accumulates
    var span = Math.min(WINDOW_S, Math.max(60, Math.ceil((tEnd - tFirst) / 60) * 60));
    var tStart = tEnd - span;
    var max = 0;
    points.forEach(function (p) {
      series.forEach(function (s) { var v = p.values[s.key]; if (v !== null && v !== undefined && v > max) max = v; });
    });
    var yMax = unit === "%" && max <= 1 ? 1 : niceMax(max * 1.1); // a share tops out at 100%
    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = "#e6eaf0";
    ctx.fillStyle = "#6b7385";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (var i = 0; i <= 4; i++) {
      var y = top + ph - (ph * i) / 4;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + pw, y); ctx.stroke();
      ctx.fillText(fmtAxis((yMax * i) / 4, unit), left - 6, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    var step = span <= 60 ? 10 : span <= 180 ? 30 : 60;
    for (var ago = span; ago >= 0; ago -= step) {
      var x = left + pw * (1 - ago / span);
      var text = ago === 0 ? "now" : ago % 60 === 0 ? "-" + ago / 60 + "m" : "-" + ago + "s";
      ctx.fillText(text, x, top + ph + 6);
    }
    series.forEach(function (s) {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = s.width || 2;
      ctx.setLineDash(s.dash || []);
      ctx.beginPath();
      var drawing = false;
      points.forEach(function (p) {
        var v = p.values[s.key];
        if (v === null || v === undefined || p.t < tStart) { drawing = false; return; }
        var x = left + pw * ((p.t - tStart) / span), y = top + ph - ph * Math.min(v / yMax, 1);
        if (drawing) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        drawing = true;
      });
      ctx.stroke();
      ctx.setLineDash([]);
    });
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    legend.forEach(function (item) {
      ctx.fillStyle = item.s.color;
      ctx.fillRect(item.x, item.y - 2, 10, 3);
      ctx.fillStyle = "#1d2330";
      ctx.fillText(item.label, item.x + 14, item.y);
    });
  }

  function renderCharts(snap) {
    var edgeSeries = Object.keys(snap.edges).map(function (name, k) {
      if (!edgeColors[name]) edgeColors[name] = PALETTE[Object.keys(edgeColors).length % PALETTE.length];
      return { key: "bp:" + name, label: name, color: edgeColors[name] };
    });
    drawChart(document.getElementById("chart-throughput"), [
      { key: "received", label: "received", color: "#2f6fdb" },
      { key: "delivered", label: "delivered", color: "#1f9d55" },
      { key: "dead", label: "dead-lettered", color: "#d64545" }
    ], history, "/s");
    drawChart(document.getElementById("chart-latency"), [
      { key: "latency", label: "mean", color: "#8e44ad" },
      { key: "p99", label: "p99 (run)", color: "#d98b00", dash: [5, 4], width: 1.5 }
    ], history, "s");
    drawChart(document.getElementById("chart-backpressure"), edgeSeries, history, "%");
  }

  // -- header, totals and table ---------------------------------------------
  function setText(id, text, cls) {
    var node = document.getElementById(id);
    node.textContent = text;
    if (cls !== undefined) node.className = "value " + cls;
  }

  function renderTotals(snap, rates) {
    var pill = document.getElementById("state");
    pill.textContent = snap.state;
    pill.className = "pill " + snap.state;
    document.getElementById("elapsed").textContent = "elapsed " + fmtElapsed(snap.elapsed);
    var throughput = rates.total("delivered") + rates.total("dead_lettered") + rates.total("filtered");
    setText("t-throughput", fmtRate(throughput));
    setText("t-received", fmtCount(snap.received));
    setText("t-delivered", fmtCount(snap.delivered));
    setText("t-dead", fmtCount(snap.dead_lettered), snap.dead_lettered ? "bad" : "");
    setText("t-filtered", fmtCount(snap.filtered));
    setText("t-inflight", fmtCount(snap.in_flight));
    setText("t-retries", fmtCount(snap.retries));
    setText("t-latency", fmtSeconds(snap.latency.p50) + " / " + fmtSeconds(snap.latency.p99));
  }

  function renderTable(snap, rates) {
    var body = document.querySelector("#nodes-table tbody");
    var rows = [];
    var order = snap.graph.nodes.map(function (n) { return n.name; }).filter(function (n) { return snap.nodes[n]; });
    Object.keys(snap.nodes).forEach(function (n) { if (order.indexOf(n) < 0) order.push(n); });
    order.forEach(function (name) {
      var s = snap.nodes[name];
      var tr = document.createElement("tr");
      function cell(text, cls) { var td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); }
      cell(name, "name");
      cell(s.kind);
      cell(fmtRate(rates.node(name, "events_in")));
      cell(fmtRate(rates.node(name, "events_out")));
      cell(fmtCount(s.events_in));
      cell(fmtCount(s.events_out));
      cell(fmtCount(s.errors), s.errors ? "bad" : "");
      cell(fmtCount(s.retries), s.retries ? "warn" : "");
      cell(fmtCount(s.dead_lettered), s.dead_lettered ? "bad" : "");
      cell(fmtCount(s.filtered));
      cell(fmtSeconds(s.latency.p50));
      cell(fmtSeconds(s.latency.p99));
      rows.push(tr);
    });
    body.replaceChildren.apply(body, rows);
  }

  function record(snap, rates) {
    if (previous && snap.elapsed < previous.elapsed) history = []; // a new run
    var point = { t: snap.time, values: {} };
    point.values.received = rates.total("received");
    point.values.delivered = rates.total("delivered");
    point.values.dead = rates.total("dead_lettered");
    var lat = snap.latency, plat = previous ? previous.latency : null;
    var dc = plat ? lat.count - plat.count : lat.count;
    var ds = plat ? lat.sum - plat.sum : lat.sum;
    point.values.latency = dc > 0 ? ds / dc : null;
    point.values.p99 = lat.count ? lat.p99 : null;
    Object.keys(snap.edges).forEach(function (name) {
      // share of the time the edge was full: 0..100%, whatever the number of senders
      point.values["bp:" + name] = Math.min(rates.edge(name, "full_seconds"), 1);
    });
    history.push(point);
    while (history.length && history[0].t < snap.time - WINDOW_S) history.shift();
  }

  function update(snap) {
    var rates = new Rates(snap, previous);
    record(snap, rates);
    renderTotals(snap, rates);
    renderGraph(snap, rates);
    renderCharts(snap);
    renderTable(snap, rates);
    previous = snap;
    document.body.setAttribute("data-updates", String((Number(document.body.getAttribute("data-updates")) || 0) + 1));
  }

  // the server keeps the last minutes: an operator opening the page during an
  // incident sees what led to it, not a chart that starts now
  function loadHistory() {
    return fetch("/api/history", { cache: "no-store" })
      .then(function (res) { return res.ok ? res.json() : []; })
      .then(function (points) {
        var before = null;
        points.forEach(function (p) {
          if (!p.edges) return;
          if (before) {
            previous = before;
            record(p, new Rates(p, before));
          }
          before = p;
        });
        previous = null; // the first live snapshot takes rates against its own run
        document.body.setAttribute("data-history", String(history.length));
      })
      .catch(function () { document.body.setAttribute("data-history", "0"); });
  }

  function poll() {
    fetch("/api/snapshot", { cache: "no-store" })
      .then(function (res) {
        if (!res.ok) throw new Error("HTTP " + res.status);
        return res.json();
      })
      .then(function (snap) {
        document.getElementById("banner").hidden = true;
        update(snap);
      })
      .catch(function (err) {
        var banner = document.getElementById("banner");
        banner.textContent = "cannot reach the pipeline (" + err.message + "); retrying";
        banner.hidden = false;
        var pill = document.getElementById("state");
        pill.textContent = "offline";
        pill.className = "pill offline";
      })
      .then(function () { setTimeout(poll, POLL_MS); });
  }

  window.addEventListener("resize", function () { if (previous) renderCharts(previous); });
  loadHistory().then(poll);
})();
