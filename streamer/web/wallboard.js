// The calls wallboard: every live stream of the server in a grid, from one WebSocket
// (/ws?streams=all: a "streams" list, then every stream's hello/window/segment/alert/end with its
// "stream" id). Messages only update plain objects; the grid is redrawn twice a second, touching
// only the cards that changed and moving cards only when the order changed (100 calls send about
// 100-200 messages a second; the page must stay light).
"use strict";
(function () {
 function main() {
  const { NEGATIVE, el, colour, pct, clock, withToken, wsURL, setColours } = window.EmoCommon;
  const $ = (id) => document.getElementById(id);
  const MINUTE = 60;            // the negative share covers this much of each channel's latest audio (s)
  const FRESH_MS = 30000;       // an alert this recent highlights its call
  const ENDED_KEEP_MS = 60000;  // an ended call stays on the board, dimmed, this long
  const RENDER_MS = 500;
  const LATEST = 8;             // the newest alerts of all calls, listed above the grid
  const latest = [];            // {id, label, channel_name, start, wall}, newest first
  let latestDirty = false;
  const grid = $("grid");
  const calls = new Map();      // stream id -> call
  let orderDirty = true, ws = null, retry = 0;

  const state = window.wallboard = {
    latest: () => latest.map((x) => x.id),
    connection: "connecting", messages: 0, renders: 0, cardRenders: 0, reconnects: 0, errors: [],
    get count() { return calls.size; },
    order: () => [...grid.children].map((n) => n.dataset.stream),
    calls: () => [...calls.values()].map((c) => ({ id: c.id, live: c.live, alerts: c.alerts, source: c.source,
      channels: c.chans.filter(Boolean).map((h) => ({ name: h.name, label: h.label, confidence: h.confidence, band: h.band,
        negative: h.nSpeech ? h.nNeg / h.nSpeech : null, windows: h.windows })) })),
  };

  function setConn(s, text) { state.connection = s; const p = $("conn"); p.dataset.state = s; p.textContent = text || s; }

  function getCall(id) {
    let c = calls.get(id);
    if (!c) {
      c = { id, source: null, started: null, live: true, endedAt: null, chans: [], alerts: 0,
        alertWall: null, lastAlert: null, dirty: true, node: null, parts: null, shown: {} };
      calls.set(id, c); orderDirty = true;
    }
    return c;
  }
  function getChan(c, idx, name) {
    let h = c.chans[idx];
    if (!h) {
      h = c.chans[idx] = { name: name || (idx === 0 ? "mix" : `ch${idx + 1}`), label: null, confidence: null,
        band: null, speech: false, ring: [], head: 0, nSpeech: 0, nNeg: 0, windows: 0 };
      if (c.parts) c.parts.rebuild = true;
    } else if (name && name !== h.name) { h.name = name; if (c.parts) c.parts.rebuild = true; }
    return h;
  }

  function onWindow(c, m) {
    const h = getChan(c, m.channel || 0, m.channel_name);
    const label = m.speech ? m.label : null;
    h.label = label; h.confidence = label ? m.confidence : null; h.windows += 1; h.band = m.band || null;
    // the last minute of this channel's windows, as a queue with running counts
    const neg = !!label && NEGATIVE.has(label);
    h.ring.push({ end: m.end, speech: !!label, neg });
    if (label) { h.nSpeech += 1; if (neg) h.nNeg += 1; }
    while (h.head < h.ring.length && h.ring[h.head].end <= m.end - MINUTE) {
      const old = h.ring[h.head++];
      if (old.speech) { h.nSpeech -= 1; if (old.neg) h.nNeg -= 1; }
    }
    if (h.head > 256) { h.ring = h.ring.slice(h.head); h.head = 0; }
    c.dirty = true;
  }

  function onMessage(m) {
    state.messages += 1;
    if (m.type === "streams") { snapshot(m.streams || []); return; }
    if (m.type === "error" && !m.stream) { state.errors.push(m.message); return; }
    const id = m.stream; if (typeof id !== "string") return;
    const c = getCall(id);
    switch (m.type) {
      case "hello":
        if (c.started != null && m.started != null && m.started !== c.started) {   // the same id, a new call
          c.chans = []; c.alerts = 0; c.alertWall = null; c.lastAlert = null; if (c.parts) c.parts.rebuild = true;
        }
        c.source = m.source || c.source; c.started = m.started != null ? m.started : c.started;
        c.live = true; c.endedAt = null;
        (m.channels || []).forEach((n, i) => getChan(c, i, n));
        if (setColours(m.colors)) for (const k of calls.values()) k.dirty = true;
        c.dirty = true; break;
      case "window": onWindow(c, m); break;
      case "alert":
        c.alerts += 1; c.alertWall = Date.now(); c.lastAlert = m; c.dirty = true; orderDirty = true;
        latest.unshift({ id, label: m.label, channel_name: m.channel_name, start: m.start, wall: c.alertWall });
        latest.length = Math.min(latest.length, LATEST); latestDirty = true; break;
      case "end": c.live = false; c.endedAt = Date.now(); c.dirty = true; orderDirty = true; break;
    }
  }

  function snapshot(list) {      // on every (re)connect: the server's live streams
    const seen = new Set();
    for (const s of list) {
      if (!s || typeof s.id !== "string") continue;
      seen.add(s.id);
      const c = getCall(s.id);
      c.source = s.source || c.source; c.started = s.started != null ? s.started : c.started;
      c.live = s.live !== false;
      (s.channels || []).forEach((n, i) => getChan(c, i, n));
      for (const cur of s.current || []) {
        const h = getChan(c, cur.channel || 0, cur.channel_name);
        h.label = cur.speech ? cur.label : null; h.confidence = cur.speech ? cur.confidence : null;
        h.band = cur.band || null;
      }
      if (typeof s.alerts === "number" && s.alerts >= c.alerts) {
        c.alerts = s.alerts;
        if (s.last_alert && !c.lastAlert) {
          c.lastAlert = s.last_alert;
          // when it fired, on the wall clock: the stream's start plus the alert's end in stream time
          c.alertWall = c.started != null ? (c.started + (s.last_alert.end || s.last_alert.start || 0)) * 1000 : 0;
          latest.push({ id: c.id, label: s.last_alert.label, channel_name: s.last_alert.channel_name,
            start: s.last_alert.start, wall: c.alertWall });
          latest.sort((x, y) => y.wall - x.wall); latest.length = Math.min(latest.length, LATEST); latestDirty = true;
        }
      }
      c.dirty = true;
    }
    // a call that was live and is no longer listed ended while the board was away: shown as ended
    for (const c of calls.values()) if (!seen.has(c.id) && c.live) { c.live = false; c.endedAt = Date.now(); c.dirty = true; }
    orderDirty = true; render();
  }

  // ---- drawing ----
  function build(c) {
    const a = el("a", "call"); a.href = withToken("/", { stream: c.id }); a.dataset.testid = "call"; a.dataset.stream = c.id;
    const head = el("div", "call-head"); const id = el("span", "id", c.id); id.title = c.id;
    const st = el("span", "st", "live"); st.dataset.testid = "call-state"; head.append(id, st);
    const rows = el("div", "rows");
    const foot = el("div", "call-foot"); const badge = el("span", "badge", "0 alerts"); badge.dataset.testid = "alert-count";
    const last = el("span", "last"); last.dataset.testid = "last-alert"; foot.append(badge, last);
    a.append(head, rows, foot);
    c.node = a; c.parts = { st, rows, badge, last, chans: [], rebuild: true, src: id };
    return a;
  }
  function buildRows(c) {
    const p = c.parts; p.rows.textContent = ""; p.chans = [];
    for (const h of c.chans) {
      if (!h) continue;
      const row = el("div", "ch"); row.dataset.testid = "call-channel"; row.dataset.channel = h.name;
      const now = el("span", "now"); const sw = el("i", "sw"); const lb = el("span", "lb", "–"); const cf = el("span", "cf");
      lb.dataset.testid = "call-label"; cf.dataset.testid = "call-confidence"; now.append(sw, lb, cf);
      const neg = el("span", "neg"); const tr = el("span", "track"); const fill = el("span", "fill"); tr.append(fill);
      fill.dataset.testid = "neg-bar"; const np = el("span", "np"); np.dataset.testid = "neg-share"; neg.append(tr, np);
      // a channel heard as telephone audio (its own prior): a small mark after its name
      // (the name gives way to the mark when the cell is narrow: the name is cut, never the mark)
      const cn = el("span", "cn"); const tel = el("small", "tel"); tel.dataset.testid = "call-band";
      tel.title = "telephone-band audio"; cn.append(el("span", "nm", h.name), tel);
      row.append(cn, now, neg); p.rows.append(row);
      p.chans.push({ h, row, sw, lb, cf, fill, np, tel, shown: {} });
    }
    p.rebuild = false;
  }
  function put(shown, key, value, apply) { if (shown[key] !== value) { shown[key] = value; apply(value); } }

  function renderCall(c, now) {
    if (!c.node) build(c);
    const p = c.parts;
    if (p.rebuild) buildRows(c);
    c.node.title = c.source ? `${c.id} · ${c.source}` : c.id;
    put(c.shown, "state", c.live ? "live" : "ended", (v) => { c.node.dataset.state = v; p.st.textContent = v; });
    put(c.shown, "alerts", c.alerts, (v) => { c.node.dataset.alerts = v; p.badge.textContent = `${v} alert${v === 1 ? "" : "s"}`; });
    const la = c.lastAlert, lastText = la ? `${la.label || ""}|${la.channel_name || ""}|${la.start}` : "";
    put(c.shown, "last", lastText, () => {
      p.last.textContent = "";
      if (la) p.last.append(el("b", null, la.label || "alert"),
        el("span", null, ` · ${la.channel_name || "mix"} · at ${clock(la.start || 0)}`));
    });
    for (const r of p.chans) {
      const h = r.h, share = h.nSpeech ? h.nNeg / h.nSpeech : null;
      put(r.shown, "label", h.label || "", (v) => {
        r.lb.textContent = v || "silence"; r.row.dataset.label = v; r.sw.style.background = colour(v || null);
      });
      put(r.shown, "conf", h.confidence == null ? "" : pct(h.confidence), (v) => { r.cf.textContent = v; });
      put(r.shown, "band", h.band || "", (v) => { r.row.dataset.band = v; r.tel.textContent = v === "telephone" ? "tel" : ""; });
      put(r.shown, "neg", share == null ? "" : share.toFixed(2), (v) => {
        r.fill.style.width = v === "" ? "0" : (Number(v) * 100).toFixed(0) + "%"; r.fill.dataset.share = v;
        r.np.textContent = v === "" ? "–" : pct(Number(v));
      });
    }
    c.dirty = false; state.cardRenders += 1;
  }

  function sortKey(a, b) {       // the most recent alert first; calls without one after, oldest first
    const x = a.alertWall, y = b.alertWall;
    if (x != null || y != null) { if (x == null) return 1; if (y == null) return -1; if (x !== y) return y - x; }
    if (a.live !== b.live) return a.live ? -1 : 1;
    return (a.started || 0) - (b.started || 0) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  }

  function render() {
    const now = Date.now();
    let live = 0, alerting = 0;
    for (const [id, c] of calls) {
      if (!c.live && c.endedAt != null && now - c.endedAt > ENDED_KEEP_MS) {
        if (c.node) c.node.remove(); calls.delete(id); orderDirty = true; continue;
      }
      if (c.live) live += 1;
      const fresh = c.alertWall != null && now - c.alertWall < FRESH_MS ? "1" : "0";
      if (fresh === "1") alerting += 1;
      if (c.dirty || !c.node) renderCall(c, now);
      put(c.shown, "fresh", fresh, (v) => { c.node.dataset.fresh = v; });
    }
    if (orderDirty) {
      orderDirty = false;
      const want = [...calls.values()].sort(sortKey).map((c) => c.node);
      const have = grid.children;
      let same = have.length === want.length;
      for (let i = 0; same && i < want.length; i++) same = have[i] === want[i];
      if (!same) for (const n of want) grid.append(n);     // append moves a node: the new order
    }
    if (latestDirty) {
      latestDirty = false;
      const box = $("latest"); for (const a of [...box.querySelectorAll("a")]) a.remove();
      for (const x of latest) {
        const a = el("a"); a.href = withToken("/", { stream: x.id }); a.dataset.testid = "latest-alert"; a.dataset.stream = x.id;
        a.append(el("span", null, `${x.id} · ${x.channel_name || "mix"} · `), el("b", null, x.label || "alert"),
          el("span", null, ` at ${clock(x.start || 0)}`));
        box.append(a);
      }
      $("no-alerts").classList.toggle("hidden", latest.length > 0);
    }
    $("n-live").textContent = live; $("n-alerting").textContent = alerting;
    $("empty").classList.toggle("hidden", calls.size > 0);
    state.renders += 1;
  }
  setInterval(render, RENDER_MS);

  function connect() {
    setConn(retry ? "reconnecting" : "connecting", retry ? "reconnecting…" : "connecting…");
    const sock = ws = new WebSocket(wsURL("/ws", { streams: "all" }));
    sock.onopen = () => { retry = 0; setConn("live", "live"); };
    sock.onmessage = (ev) => {
      if (sock !== ws) return;
      let m; try { m = JSON.parse(ev.data); } catch (e) { return; }
      onMessage(m);
    };
    sock.onclose = () => {
      if (sock !== ws) return;
      ws = null; state.reconnects += 1;
      const wait = Math.min(5000, 300 * Math.pow(2, retry)); retry += 1;
      setConn("reconnecting", `reconnecting in ${Math.ceil(wait / 1000)} s`);
      setTimeout(connect, wait);
    };
  }
  // test hook: drop the connection as a network failure would (the board must come back whole)
  state.dropConnection = () => { if (ws) ws.close(4000, "test drop"); };
  connect();
 }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", main); else main();
})();
