// The live page: the stream's timeline over /ws (resumed with since), an uploaded recording's
// timeline with its audio (POST /label), the browser's microphone through /ingest.
"use strict";
(function () {
 function main() {
  const { LABELS, NEGATIVE, params, el, colour, pct, clock, clockTenths, withToken, wsURL, setColours } = window.EmoCommon;
  const $ = (id) => document.getElementById(id);

  // ---- a timeline view: one row per channel, segments on top, window labels / silence below ----
  // opts: { zoomable: scroll box whose inner width is zoom x 100 %, playhead: a line per lane,
  //         onSeek(t): a click on a lane (a segment: its start) }
  class TimelineView {
    constructor(root, nowRoot, opts) {
      this.root = root; this.nowRoot = nowRoot; this.opts = opts || {};
      this.view = 0;               // seconds shown from the end; 0: everything
      this.zoom = 1;
      this.playhead = null;        // seconds, or null: none drawn
      this.reset();
    }
    reset(labels) {
      this.labels = labels || this.labels || LABELS;
      this.rows = new Map(); this.order = [];
      this.t1 = 0; this.hop = null; this.segments = 0; this.windows = 0; this.alerts = 0;
      this.root.textContent = ""; if (this.nowRoot) this.nowRoot.textContent = "";
      this.axis = el("div", "axis"); this.axis.dataset.testid = "axis";
      this.rowsBox = el("div");
      if (this.opts.zoomable) {
        this.scroller = el("div", "tl-scroll"); this.scroller.dataset.testid = "timeline-scroll";
        this.inner = el("div", "tl-inner"); this.inner.append(this.rowsBox, this.axis);
        this.scroller.append(this.inner); this.root.append(this.scroller);
        this.inner.style.width = (this.zoom * 100) + "%";
      } else this.root.append(this.rowsBox, this.axis);
      this.dirty = true;
    }
    setZoom(z) {
      const old = this.zoom; this.zoom = Math.max(1, Math.min(256, z));
      if (!this.inner) return;
      // keep the playhead (or the middle of what is shown) where it is on screen
      const sc = this.scroller, w0 = sc.scrollWidth, focusX = this.playhead != null && this.t1 > 0
        ? this.playhead / this.t1 * w0 - sc.scrollLeft : sc.clientWidth / 2;
      const frac = (sc.scrollLeft + focusX) / Math.max(1, w0);
      this.inner.style.width = (this.zoom * 100) + "%";
      sc.scrollLeft = Math.max(0, frac * sc.scrollWidth - focusX);
      if (old !== this.zoom) { this.dirty = true; this.render(); }
    }
    setChannels(names) { (names || []).forEach((n, i) => this.row(i, n)); }
    row(ch, name) {
      const key = String(ch);
      let r = this.rows.get(key);
      if (!r) {
        name = name || (ch === 0 ? "mix" : `ch${ch + 1}`);
        const wrap = el("div", "tl-row"); wrap.dataset.testid = "row"; wrap.dataset.channel = name;
        const lane = el("div", "lane"); lane.dataset.testid = "lane";
        wrap.append(el("div", "rname", name), lane);
        this.rowsBox.append(wrap);
        r = { key, name, wrap, lane, runs: [], segs: [], marks: [], now: null, last: null, head: null };
        if (this.opts.playhead) {
          r.head = el("div", "playhead hidden"); r.head.dataset.testid = "playhead"; lane.append(r.head);
        }
        if (this.opts.onSeek) lane.addEventListener("click", (e) => this.clicked(e, lane));
        if (this.nowRoot) r.now = this.makeNow(name);
        this.rows.set(key, r); this.order.push(r);
      } else if (name && name !== r.name) {
        r.name = name; r.wrap.dataset.channel = name; r.wrap.firstChild.textContent = name;
        if (r.now) r.now.name.textContent = name;
      }
      return r;
    }
    clicked(e, lane) {
      const seg = e.target.closest(".seg");
      let t;
      if (seg) t = Number(seg.dataset.start);
      else {
        const box = lane.getBoundingClientRect(), [t0, span] = this.range();
        t = t0 + (e.clientX - box.left) / Math.max(1, box.width) * span;
      }
      this.opts.onSeek(Math.max(0, Math.min(t, this.t1)));
    }
    makeNow(name) {
      const box = el("div", "chan"); box.dataset.testid = "current"; box.dataset.channel = name;
      const nm = el("div", "chan-name", name);
      const big = el("div", "big"); const sw = el("span", "swatch");
      const lab = el("span", "label", "waiting"); lab.dataset.testid = "current-label";
      const conf = el("span", "conf"); conf.dataset.testid = "current-confidence";
      const at = el("span", "at"); at.dataset.testid = "current-time";
      // telephone audio is normalised from the model's telephone prior: say so beside the label
      const band = el("span", "band"); band.dataset.testid = "current-band";
      band.title = "heard as telephone-band audio (nothing above 4 kHz)";
      big.append(sw, lab, conf, band, at);
      const bars = el("div", "bars"); bars.dataset.testid = "probs"; const fills = {};
      for (const l of this.labels) {
        const tr = el("div", "track"); const f = el("div", "fill"); f.style.background = colour(l);
        f.dataset.testid = "prob-bar"; f.dataset.label = l; tr.append(f);
        const p = el("span", "pct"); fills[l] = { f, p };
        bars.append(el("span", "name", l), tr, p);
      }
      box.append(nm, big, bars); this.nowRoot.append(box);
      return { box, name: nm, sw, lab, conf, band, at, fills };
    }
    window(m) {
      const r = this.row(m.channel || 0, m.channel_name);
      const hop = this.hop || Math.max(0.01, m.end - m.start);
      // each window stands for the hop-long slice at its centre, so the strip has no overlaps
      const mid = (m.start + m.end) / 2, b = mid + hop / 2;
      const a = r.runs.length ? Math.max(0, mid - hop / 2) : m.start;   // the first one from its start
      const label = m.speech ? m.label : null;
      const last = r.runs[r.runs.length - 1];
      if (last && last.label === label && a <= last.end + hop * 0.51) { last.end = Math.max(last.end, b); last.n += 1; }
      else r.runs.push({ start: a, end: b, label, node: null, n: 1 });
      r.last = m; this.windows += 1; this.t1 = Math.max(this.t1, m.end);
      if (r.now) this.showNow(r, m);
      this.dirty = true;
    }
    showNow(r, m) {
      const n = r.now, speech = m.speech && m.label;
      n.lab.textContent = speech ? m.label : "silence";
      n.lab.dataset.label = speech ? m.label : "";
      n.conf.textContent = speech ? pct(m.confidence) : "";
      n.at.textContent = `${clock(m.start)}–${clock(m.end)}`;
      n.band.dataset.band = m.band || "";
      n.band.textContent = m.band === "telephone" ? "telephone" : "";
      n.sw.style.background = colour(speech ? m.label : null);
      n.box.dataset.label = speech ? m.label : "";
      for (const l of this.labels) {
        const p = speech && m.probs ? (m.probs[l] || 0) : 0;
        n.fills[l].f.style.width = (p * 100).toFixed(1) + "%"; n.fills[l].p.textContent = speech ? pct(p) : "";
      }
    }
    finish() {       // the stream is over: the last window's strip reaches its end
      for (const r of this.order) { const u = r.runs[r.runs.length - 1]; if (u && r.last) u.end = Math.max(u.end, r.last.end); }
      this.dirty = true;
    }
    segment(m) {
      const r = this.row(m.channel || 0, m.channel_name);
      r.segs.push({ start: m.start, end: m.end, label: m.label, confidence: m.confidence, node: null });
      this.segments += 1; this.t1 = Math.max(this.t1, m.end); this.dirty = true;
    }
    alert(m) {
      const r = this.row(m.channel || 0, m.channel_name);
      r.marks.push({ start: m.start, label: m.label, rule: m.rule, node: null });
      this.alerts += 1; this.dirty = true;
    }
    setView(seconds) { this.view = seconds; this.dirty = true; this.render(); }
    range() {
      const t1 = Math.max(this.t1, 1e-3);
      const t0 = this.view > 0 ? Math.max(0, t1 - this.view) : 0;
      return [t0, Math.max(t1 - t0, this.view > 0 ? this.view : 1e-3), t1];
    }
    setPlayhead(t) {
      this.playhead = t;
      const [t0, span] = this.range();
      for (const r of this.order) {
        if (!r.head) continue;
        r.head.classList.toggle("hidden", t == null);
        if (t != null) r.head.style.left = ((t - t0) / span * 100).toFixed(3) + "%";
      }
      // zoomed in and playing: keep the playhead in sight
      const sc = this.scroller;
      if (t != null && sc && this.zoom > 1 && this.following && this.order.length) {
        const lane = this.order[0].lane.getBoundingClientRect(), box = sc.getBoundingClientRect();
        const x = lane.left - box.left + sc.scrollLeft + (t - t0) / span * lane.width;   // in the scroller
        const name = lane.left - box.left + sc.scrollLeft - (this.inner.offsetLeft || 0);
        if (x < sc.scrollLeft + name + 20 || x > sc.scrollLeft + sc.clientWidth - 20) sc.scrollLeft = Math.max(0, x - name - sc.clientWidth / 4);
      }
    }
    render() {
      if (!this.dirty) return;
      this.dirty = false;
      const [t0, span, t1] = this.range();
      const place = (node, a, b) => {
        if (b < t0) { node.style.display = "none"; return; }
        node.style.display = "";
        const x = (Math.max(a, t0) - t0) / span * 100, w = (Math.min(b, t1) - Math.max(a, t0)) / span * 100;
        node.style.left = x.toFixed(3) + "%"; node.style.width = Math.max(w, 0).toFixed(3) + "%";
      };
      const laneW = this.order.length ? this.order[0].lane.clientWidth || 600 : 600;
      for (const r of this.order) {
        for (const u of r.runs) {
          if (!u.node) { u.node = el("div", u.label ? "win" : "sil"); u.node.dataset.testid = u.label ? "window-run" : "silence";
            if (u.label) { u.node.style.background = colour(u.label); u.node.dataset.label = u.label; }
            r.lane.append(u.node); }
          u.node.dataset.start = u.start.toFixed(3); u.node.dataset.end = u.end.toFixed(3); u.node.dataset.windows = u.n;
          place(u.node, u.start, u.end);
        }
        for (const s of r.segs) {
          if (!s.node) {
            s.node = el("div", "seg", s.label); s.node.dataset.testid = "segment"; s.node.dataset.label = s.label;
            s.node.dataset.channel = r.name; s.node.dataset.start = s.start; s.node.dataset.end = s.end;
            if (s.confidence != null) s.node.dataset.confidence = s.confidence;
            s.node.style.background = colour(s.label);
            r.lane.append(s.node);
          }
          place(s.node, s.start, s.end);
          s.node.classList.toggle("narrow", (Math.min(s.end, t1) - Math.max(s.start, t0)) / span * laneW < 38);
        }
        for (const k of r.marks) {
          if (!k.node) { k.node = el("div", "alert-mark"); k.node.dataset.testid = "alert-marker";
            k.node.dataset.label = k.label || ""; k.node.dataset.rule = k.rule || ""; k.node.dataset.start = k.start;
            r.lane.append(k.node); }
          place(k.node, k.start, k.start + span / 400);
        }
      }
      if (this.playhead != null) this.setPlayhead(this.playhead);
      // the time axis: about six ticks per screen width, at round steps
      this.axis.textContent = "";
      const steps = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];
      const step = steps.find((s) => span / s <= 6 * this.zoom) || 14400;
      for (let t = Math.ceil(t0 / step) * step; t <= t0 + span + 1e-6; t += step) {
        const tick = el("span", null, step < 1 ? clockTenths(t) : clock(t));
        tick.style.left = ((t - t0) / span * 100) + "%"; this.axis.append(tick);
      }
    }
  }

  // ---- hover: one tooltip for every timeline (segments, window runs, silence, alert marks) ----
  const tip = $("tooltip");
  function tipText(n) {
    const d = n.dataset, times = `${clockTenths(Number(d.start))}–${clockTenths(Number(d.end))}`;
    if (n.classList.contains("seg")) {
      const c = d.confidence != null ? ` · confidence ${pct(Number(d.confidence))}` : "";
      return [["b", d.label], ["span", ` · segment ${times} (${(Number(d.end) - Number(d.start)).toFixed(1)} s)${c}`]];
    }
    if (n.classList.contains("win")) return [["b", d.label], ["span", ` · ${d.windows} window${d.windows === "1" ? "" : "s"} ${times}`]];
    if (n.classList.contains("sil")) return [["span", `no speech ${times}`]];
    if (n.classList.contains("alert-mark")) return [["span", `alert ${d.rule}: `], ["b", d.label], ["span", ` from ${clockTenths(Number(d.start))}`]];
    return null;
  }
  document.addEventListener("mouseover", (e) => {
    const n = e.target.closest && e.target.closest(".lane .seg, .lane .win, .lane .sil, .lane .alert-mark");
    const parts = n && tipText(n);
    if (!parts) { tip.classList.add("hidden"); return; }
    tip.textContent = ""; for (const [tag, text] of parts) tip.append(el(tag, null, text));
    tip.dataset.label = n.dataset.label || ""; tip.dataset.kind = n.className.split(" ")[0];
    tip.classList.remove("hidden");
    const box = n.getBoundingClientRect(), w = tip.offsetWidth;
    tip.style.left = Math.max(4, Math.min(window.innerWidth - w - 4, (e.clientX || box.left) - w / 2)) + "px";
    tip.style.top = Math.max(4, box.top - tip.offsetHeight - 6) + "px";
  });
  document.addEventListener("scroll", () => tip.classList.add("hidden"), true);

  // ---- state for tests and for the curious: window.emostream ----
  const live = new TimelineView($("live-timeline"), $("live-now"));
  const state = window.emostream = {
    connection: "connecting", lastSeq: -1, stream: params.get("stream") || "", source: null,
    started: null, ended: false, messages: 0, reconnects: 0, restarts: 0, gaps: 0, errors: [],
    get segments() { return live.segments; }, get windows() { return live.windows; },
    get alerts() { return live.alerts; }, get channels() { return live.order.map((r) => r.name); },
    upload: null, mic: { state: "off", stream: null, segments: 0, windows: 0, sent: 0, sampleRate: null },
    view: live,
  };

  function legend() {
    const box = $("legend"); box.textContent = "";
    for (const l of live.labels) { const s = el("span"); const i = el("i"); i.style.background = colour(l); s.append(i, l); box.append(s); }
    const s = el("span"); const i = el("i"); i.style.background = "var(--silence)"; s.append(i, "silence"); box.append(s);
  }
  legend();

  function setConn(s, text) {
    state.connection = s; const p = $("conn"); p.dataset.state = s; p.textContent = text || s;
  }
  function setTitle(ended) {        // the card says what the stream is: live, or over
    const t = $("live-title"); t.textContent = ended ? "Ended" : "Live"; t.dataset.state = ended ? "ended" : "live";
  }

  let ws = null, retry = 0, retryTimer = null, frame = 0;
  function schedule() {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0; live.render(); micView.render();
      // the live view may be showing the microphone's own stream (an ingest-only server): once is enough
      const same = state.mic.stream && state.source === `ingest:${state.mic.stream}`;
      $("mic-card").classList.toggle("hidden", !state.mic.stream || same);
    });
  }

  function connect() {
    clearTimeout(retryTimer);
    const extra = {};
    if (state.lastSeq >= 0) extra.since = String(state.lastSeq);
    if (state.stream) extra.stream = state.stream;
    setConn(retry ? "reconnecting" : "connecting", retry ? "reconnecting…" : "connecting…");
    const sock = ws = new WebSocket(wsURL("/ws", extra));
    sock.onopen = () => { retry = 0; setConn(state.ended ? "ended" : "live", state.ended ? "ended" : "live"); };
    let first = true;
    sock.onmessage = (ev) => {
      if (sock !== ws) return;
      let m; try { m = JSON.parse(ev.data); } catch (e) { return; }
      // asked for what follows lastSeq, the server answers from an earlier seq: it is a new run of
      // the stream (the server restarted), so start the timeline over
      if (first && typeof m.seq === "number") {
        first = false;
        if (state.lastSeq >= 0 && m.seq <= state.lastSeq) { resubscribe(); return; }
      }
      onMessage(m);
    };
    sock.onclose = () => {
      if (sock !== ws) return;
      ws = null;
      // after the end too: the server went away, and a restarted one may bring a new run
      const wait = Math.min(state.ended ? 10000 : 5000, 300 * Math.pow(2, retry)); retry += 1; state.reconnects += 1;
      if (state.ended) setConn("offline", "ended · server gone");
      else setConn("reconnecting", `reconnecting in ${Math.ceil(wait / 1000)} s`);
      retryTimer = setTimeout(connect, wait);
    };
  }

  function restart() {
    state.lastSeq = -1; state.ended = false; state.restarts += 1;
    live.reset(); $("live-alerts").textContent = ""; setTitle(false);
  }
  function resubscribe() {      // a new run of the stream: its whole timeline, from the start
    restart(); retry = 0;
    if (ws) { const old = ws; ws = null; old.close(); }
    connect();
  }

  function onMessage(m) {
    state.messages += 1;
    if (typeof m.seq === "number") {
      if (m.seq <= state.lastSeq) return;            // already have it (replay overlap)
      if (state.lastSeq >= 0 && m.seq > state.lastSeq + 1) state.gaps += 1;
      state.lastSeq = m.seq;
    }
    switch (m.type) {
      case "hello":
        // a different source, or the same one started anew (hello's "started", when the server sends it)
        if ((state.source && m.source && m.source !== state.source) ||
            (state.started != null && m.started != null && m.started !== state.started)) {
          state.source = m.source || null; state.started = m.started != null ? m.started : null;
          resubscribe(); return;
        }
        if (m.started != null) state.started = m.started;
        if (setColours(m.colors)) state.colours = { ...m.colors };
        if (!live.windows && !live.segments) live.reset(m.labels);
        else live.labels = m.labels || live.labels;
        live.hop = m.hop || null; live.setChannels(m.channels);
        state.source = m.source || null;
        $("live-source").textContent = String(m.source || "").split(/[\\/]/).pop(); $("live-source").title = m.source || "";
        legend(); break;
      case "window": live.window(m); break;
      case "segment": live.segment(m); break;
      case "alert": live.alert(m); addAlert(m); break;
      case "end": state.ended = true; live.finish(); setConn("ended", "ended"); setTitle(true); break;
      case "error":
        state.errors.push(m.message);
        if (/no (default )?stream/.test(m.message || "")) setConn("offline", "no stream yet");
        break;
    }
    schedule();
  }

  function addAlert(m) {
    const li = el("li"); li.dataset.testid = "alert"; li.dataset.label = m.label || "";
    li.append(el("span", null, `${clock(m.start)} · ${m.channel_name || "ch" + ((m.channel || 0) + 1)} · `),
      el("b", null, m.label || ""), el("span", "muted", ` (${m.rule || "alert"})`));
    $("live-alerts").prepend(li);
  }

  // test hook: drop the connection as a network failure would (the page must resume with since)
  state.dropConnection = () => { if (ws) ws.close(4000, "test drop"); };

  // ---- the stream picker (GET /streams) ----
  async function loadStreams() {
    try {
      const r = await fetch(withToken("/streams")); if (!r.ok) return;
      const list = await r.json(); const sel = $("stream-select");
      const ids = list.map((s) => s.id || s.stream || s.name).filter(Boolean);
      const want = state.stream;
      sel.textContent = ""; sel.append(new Option("default", ""));
      for (const id of ids) sel.append(new Option(id, id));
      if (want && !ids.includes(want)) sel.append(new Option(want, want));
      sel.value = want;
    } catch (e) { /* the page works without the list */ }
  }
  $("stream-select").addEventListener("change", (e) => {
    state.stream = e.target.value; retry = 0; state.source = null; state.started = null; restart();
    if (ws) { const old = ws; ws = null; old.close(); }
    connect();
  });
  $("stream-select").addEventListener("focus", loadStreams);
  $("live-view").addEventListener("change", (e) => live.setView(Number(e.target.value)));

  // ---- upload: POST /label; the recording plays under its timeline ----
  const audio = $("upload-audio");
  const upView = new TimelineView($("upload-timeline"), null, {
    zoomable: true, playhead: true,
    onSeek: (t) => { state.upload && (state.upload.seeks += 1); seek(t); },
  });
  let audioURL = null, headFrame = 0;
  function seek(t) {
    if (!audio.src) return;
    audio.currentTime = t; upView.setPlayhead(t); showPos();
    if (audio.paused) audio.play().catch(() => {});
  }
  function showPos() {
    $("upload-pos").textContent = `${clockTenths(audio.currentTime || 0)} / ${clock(audio.duration || upView.t1 || 0)}`;
    if (state.upload) state.upload.time = audio.currentTime || 0;
  }
  function followAudio() {          // the playhead moves with the audio, one step per frame while it plays
    headFrame = 0;
    upView.following = !audio.paused; upView.setPlayhead(audio.currentTime || 0); showPos();
    if (!audio.paused) headFrame = requestAnimationFrame(followAudio);
  }
  for (const t of ["play", "seeked", "timeupdate", "pause", "loadedmetadata"])
    audio.addEventListener(t, () => { if (!headFrame) followAudio(); });
  function setZoom(z) { upView.setZoom(z); $("zoom-level").textContent = `${upView.zoom}×`; if (state.upload) state.upload.zoom = upView.zoom; }
  $("zoom-in").addEventListener("click", () => setZoom(upView.zoom * 2));
  $("zoom-out").addEventListener("click", () => setZoom(upView.zoom / 2));
  $("zoom-fit").addEventListener("click", () => setZoom(1));
  $("upload-timeline").addEventListener("wheel", (e) => {     // ctrl + wheel (or a pinch) zooms
    if (!e.ctrlKey) return;
    e.preventDefault(); setZoom(e.deltaY < 0 ? upView.zoom * 2 : upView.zoom / 2);
  }, { passive: false });

  // the headline: the emotion with the most speech time, and its share of the speech time (all
  // channels, from the segments: the time a label holds, not one window's confidence)
  function headline(result) {
    const secs = {}; let total = 0;
    for (const sg of result.segments || []) {
      if (!sg.label) continue;
      const d = Math.max(0, sg.end - sg.start); secs[sg.label] = (secs[sg.label] || 0) + d; total += d;
    }
    let best = null; for (const k of Object.keys(secs)) if (best == null || secs[k] > secs[best]) best = k;
    return { label: best, share: best ? secs[best] / total : 0, speech: total };
  }

  // downloads: the server renders the result with the same writers as `label -f FORMAT`
  const FORMATS = [["json", "JSON"], ["jsonl", "JSONL"], ["csv", "CSV"], ["vtt", "WebVTT"], ["srt", "SRT"],
    ["audacity", "Audacity labels"], ["textgrid", "Praat TextGrid"]];
  const downloads = $("upload-card").querySelector(".downloads");
  for (const [fmt, name] of FORMATS) {
    const b = el("button", "secondary small", name); b.type = "button"; b.dataset.testid = "download"; b.dataset.format = fmt;
    b.addEventListener("click", () => download(fmt, b)); downloads.append(b);
  }
  async function download(fmt, button) {
    const up = state.upload; if (!up || !up.result) return;
    button.disabled = true; up.downloads[fmt] = { state: "busy" };
    try {
      const r = await fetch(withToken("/render", { format: fmt }), { method: "POST", body: JSON.stringify(up.result),
        headers: { "Content-Type": "application/json" } });
      if (!r.ok) { const e = await r.json().catch(() => ({})); throw new Error(e.error || `HTTP ${r.status}`); }
      const blob = await r.blob();
      const cd = r.headers.get("Content-Disposition") || "", m = /filename="?([^";]+)"?/.exec(cd);
      const base = up.name.replace(/\.[^.]+$/, "");
      const a = el("a"); a.href = URL.createObjectURL(blob); a.download = m ? m[1] : `${base}.${fmt}`;
      document.body.append(a); a.click(); a.remove(); setTimeout(() => URL.revokeObjectURL(a.href), 10000);
      up.downloads[fmt] = { state: "done", bytes: blob.size, name: a.download };
    } catch (e) {
      up.downloads[fmt] = { state: "error", error: e.message };
      const st = $("upload-status"); st.className = "note err"; st.textContent = `${fmt}: ${e.message}`;
    } finally { button.disabled = false; }
  }

  async function upload(file) {
    if (!file) return;
    const status = $("upload-status");
    status.className = "note"; status.textContent = `Labelling ${file.name} (${(file.size / 1e6).toFixed(1)} MB)…`;
    state.upload = { state: "busy", name: file.name };
    const form = new FormData(); form.append("file", file, file.name);
    let body;
    try {
      const r = await fetch(withToken("/label"), { method: "POST", body: form });
      body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
      if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    } catch (e) {
      status.className = "note err"; status.dataset.state = "error"; status.textContent = `${file.name}: ${e.message}`;
      state.upload = { state: "error", name: file.name, error: e.message }; return;
    }
    status.dataset.state = "done"; status.textContent = "";
    showResult(file.name, body, file);
  }
  function showResult(name, res, file) {
    const labels = (res.model && res.model.labels) || LABELS;
    upView.reset(labels); upView.hop = null; upView.playhead = null; upView.zoom = 1;
    // the windows' spacing: the step between two windows of one channel (channels interleave)
    const ws0 = (res.windows || [])[0];
    const ws1 = ws0 && (res.windows || []).find((w) => (w.channel || 0) === (ws0.channel || 0) && w.start > ws0.start);
    if (ws0 && ws1) upView.hop = Math.max(0.01, ws1.start - ws0.start);
    const names = res.channels || [];
    upView.setChannels(names);
    const nameOf = (c) => names[c] || (c === 0 ? "mix" : `ch${c + 1}`);
    for (const w of res.windows || []) upView.window({ ...w, channel_name: w.channel_name || nameOf(w.channel || 0) });
    for (const s of res.segments || []) upView.segment({ ...s, channel_name: s.channel_name || nameOf(s.channel || 0) });
    for (const a of res.alerts || []) upView.alert({ ...a, channel_name: a.channel_name || nameOf(a.channel || 0) });
    upView.finish();
    if (res.duration) upView.t1 = Math.max(upView.t1, res.duration);
    upView.dirty = true; upView.render();
    const o = headline(res), box = $("upload-overall");
    box.dataset.label = o.label || ""; box.dataset.share = o.share.toFixed(4);
    box.querySelector(".label").textContent = o.label || "no speech";
    box.querySelector(".swatch").style.background = colour(o.label);
    $("upload-share").textContent = o.label ? `${pct(o.share)} of the speech time (${o.speech.toFixed(1)} s)` : "";
    $("upload-name").textContent = name;
    const nseg = (res.segments || []).length, nwin = (res.windows || []).length;
    $("upload-meta").textContent = `${clock(res.duration || 0)} · ${nseg} segment${nseg === 1 ? "" : "s"} · ` +
      `${(res.windows || []).filter((w) => w.speech).length} of ${nwin} windows with speech`;
    // the alerts, each with a button that plays its stretch (from a second before it)
    const ul = $("upload-alerts"); ul.textContent = "";
    for (const a of res.alerts || []) {
      const li = el("li"); li.dataset.testid = "upload-alert"; li.dataset.label = a.label || "";
      const play = el("button", "secondary small", "▶ listen"); play.type = "button"; play.dataset.testid = "play-alert";
      play.addEventListener("click", () => { if (state.upload) state.upload.seeks += 1; seek(Math.max(0, a.start - 1)); });
      li.append(el("span", null, `${clock(a.start)}–${clock(a.end != null ? a.end : a.start)} · ${a.channel_name || nameOf(a.channel || 0)} · `),
        el("b", null, a.label || ""), el("span", "muted", ` (${a.rule || "alert"})`), play);
      ul.append(li);
    }
    if (audioURL) URL.revokeObjectURL(audioURL);
    audioURL = file ? URL.createObjectURL(file) : null;
    if (audioURL) audio.src = audioURL; else audio.removeAttribute("src");
    $("upload-card").classList.remove("hidden");
    setZoom(1); showPos();
    state.upload = { state: "done", name, label: o.label, share: o.share, speech: o.speech,
      segments: (res.segments || []).length, windows: (res.windows || []).length, result: res,
      time: 0, seeks: 0, zoom: 1, downloads: {}, view: upView, audio };
  }
  $("file").addEventListener("change", (e) => { upload(e.target.files[0]); e.target.value = ""; });
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => { const f = e.dataTransfer && e.dataTransfer.files[0]; if (f) upload(f); });
  // a file dropped anywhere else must not navigate away from the page
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  // ---- microphone: getUserMedia -> 16 kHz pcm_s16le -> /ingest?stream=ID ----
  const micView = new TimelineView($("mic-timeline"), $("mic-now"));
  const OUT_RATE = 16000;
  let mic = null;
  const WORKLET = `class Tap extends AudioWorkletProcessor {
    process(inputs) { const ch = inputs[0] && inputs[0][0]; if (ch) this.port.postMessage(ch.slice(0)); return true; }
  }
  registerProcessor("emostream-tap", Tap);`;

  class Downsampler {            // box-filter decimation: average the input samples of each output sample
    constructor(inRate, outRate) { this.step = inRate / outRate; this.pos = 0; this.acc = 0; this.n = 0; }
    push(x) {
      const out = new Int16Array(Math.ceil(x.length / this.step) + 2); let k = 0;
      for (let i = 0; i < x.length; i++) {
        this.acc += x[i]; this.n += 1; this.pos += 1;
        if (this.pos >= this.step) {
          this.pos -= this.step;
          const v = Math.max(-1, Math.min(1, this.acc / this.n));
          out[k++] = v < 0 ? v * 32768 : v * 32767; this.acc = 0; this.n = 0;
        }
      }
      return out.subarray(0, k);
    }
  }

  function micStatus(s, text) { state.mic.state = s; const m = $("mic-status"); m.dataset.state = s; m.textContent = text; }

  async function startMic() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      micStatus("error", "This browser gives microphone access only on https:// or localhost pages."); return;
    }
    const btn = $("mic-button"); btn.disabled = true;
    micStatus("starting", "Asking for the microphone…");
    let media, ctx, src;
    const AC = window.AudioContext || window.webkitAudioContext;
    try {
      media = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: false,
        noiseSuppression: false, autoGainControl: false } });
      // a 16 kHz context lets the browser resample (with a proper filter); browsers that refuse a
      // microphone in a context at another rate get the native rate and the box-filter downsampler
      try {
        if (params.get("mic_rate") === "native") throw new Error("native rate asked");
        ctx = new AC({ sampleRate: OUT_RATE }); src = ctx.createMediaStreamSource(media);
      } catch (e) {
        if (ctx) ctx.close().catch(() => {});
        ctx = new AC(); src = ctx.createMediaStreamSource(media);
      }
      if (ctx.state === "suspended") await ctx.resume();
    } catch (e) {
      btn.disabled = false; micStatus("error", `No microphone: ${e.message || e.name}`); return;
    }
    const id = "mic-" + Math.random().toString(36).slice(2, 10);
    const down = new Downsampler(ctx.sampleRate, OUT_RATE);
    const sock = new WebSocket(wsURL("/ingest", { stream: id }));
    sock.binaryType = "arraybuffer";
    mic = { media, ctx, sock, id, pending: [], pendingLen: 0, node: null, src, stopping: false };
    Object.assign(state.mic, { stream: id, sampleRate: ctx.sampleRate, sent: 0, segments: 0, windows: 0 });
    micView.reset(); $("mic-stream").textContent = id; schedule();
    const send = (f32) => {
      if (!mic || mic.stopping || sock.readyState !== 1) return;
      const pcm = down.push(f32); if (!pcm.length) return;
      mic.pending.push(pcm); mic.pendingLen += pcm.length;
      if (mic.pendingLen >= OUT_RATE / 10) {          // ~100 ms a frame
        const buf = new Int16Array(mic.pendingLen); let o = 0;
        for (const p of mic.pending) { buf.set(p, o); o += p.length; }
        mic.pending = []; mic.pendingLen = 0;
        sock.send(buf.buffer); state.mic.sent += buf.length;
      }
    };
    sock.onopen = async () => {
      sock.send(JSON.stringify({ type: "start", sample_rate: OUT_RATE, channels: 1, encoding: "pcm_s16le" }));
      try {
        if (ctx.audioWorklet) {
          const url = URL.createObjectURL(new Blob([WORKLET], { type: "text/javascript" }));
          await ctx.audioWorklet.addModule(url); URL.revokeObjectURL(url);
          mic.node = new AudioWorkletNode(ctx, "emostream-tap");
          mic.node.port.onmessage = (e) => send(e.data);
        } else {
          mic.node = ctx.createScriptProcessor(4096, 1, 1);
          mic.node.onaudioprocess = (e) => send(e.inputBuffer.getChannelData(0));
        }
        const mute = ctx.createGain(); mute.gain.value = 0;      // keep the graph pulling, play nothing
        mic.src.connect(mic.node); mic.node.connect(mute); mute.connect(ctx.destination);
      } catch (e) { micStatus("error", `Audio capture failed: ${e.message}`); stopMic(); return; }
      btn.disabled = false; btn.textContent = "Stop microphone"; btn.classList.add("secondary");
      micStatus("live", `Listening at ${ctx.sampleRate} Hz, sent as 16 kHz · stream ${id}`);
    };
    sock.onmessage = (ev) => {
      let m; try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.type === "hello") { micView.labels = m.labels || micView.labels; micView.hop = m.hop || null; micView.setChannels(m.channels); }
      else if (m.type === "window") { micView.window(m); state.mic.windows = micView.windows; }
      else if (m.type === "segment") { micView.segment(m); state.mic.segments = micView.segments; }
      else if (m.type === "alert") micView.alert(m);
      else if (m.type === "end") micView.finish(), micStatus("ended", `Stopped · ${micView.windows} windows, ${micView.segments} segments`);
      else if (m.type === "error") micStatus("error", `Server: ${m.message}`);
      schedule();
    };
    sock.onclose = () => { if (mic && mic.sock === sock) release(); };
  }

  function release() {
    if (!mic) return;
    const m = mic; mic = null;
    try { m.media.getTracks().forEach((t) => t.stop()); } catch (e) {}
    try { m.ctx.close(); } catch (e) {}
    const btn = $("mic-button"); btn.disabled = false; btn.textContent = "Use my microphone"; btn.classList.remove("secondary");
    if (state.mic.state === "live" || state.mic.state === "stopping") micStatus("ended", `Stopped · ${micView.windows} windows, ${micView.segments} segments`);
  }

  function stopMic() {
    if (!mic) return;
    mic.stopping = true; micStatus("stopping", "Finishing…");
    try { mic.media.getTracks().forEach((t) => t.stop()); } catch (e) {}
    if (mic.sock.readyState === 1) {
      if (mic.pendingLen) { const buf = new Int16Array(mic.pendingLen); let o = 0;
        for (const p of mic.pending) { buf.set(p, o); o += p.length; } mic.sock.send(buf.buffer); state.mic.sent += buf.length; }
      mic.sock.send(JSON.stringify({ type: "stop" }));   // the server finishes the timeline, then closes
    } else release();
  }
  $("mic-button").addEventListener("click", () => (mic ? stopMic() : startMic()));
  state.startMic = startMic; state.stopMic = stopMic; state.Downsampler = Downsampler;

  loadStreams();
  connect();
 }
  // the loader adds this script while the page is still parsing: wait for the elements
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", main); else main();
})();
