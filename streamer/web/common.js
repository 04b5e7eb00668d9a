// Shared by the live page (index.html) and the wallboard (wallboard.html): colours, times, the
// token of the page's own address passed on to every request, small DOM helpers.
"use strict";
(function () {
  const LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"];
  // the emotions a call centre watches (the summary's NEGATIVE_LABELS)
  const NEGATIVE = new Set(["angry", "fearful", "sad", "disgust"]);
  const params = new URLSearchParams(location.search);
  const TOKEN = params.get("token");
  // colours by label: the server's (hello "colors", one source of truth with the PNG plot) once a
  // hello brings them; until then the stylesheet's, and a hashed hue for labels of another model
  const served = {};

  function setColours(map) {
    if (!map || typeof map !== "object") return false;
    let changed = false;
    for (const [k, v] of Object.entries(map)) {
      if (typeof v === "string" && /^#[0-9a-fA-F]{3,8}$/.test(v) && served[k] !== v) {
        served[k] = v; changed = true;
        if (/^[A-Za-z][A-Za-z0-9_-]*$/.test(k)) document.documentElement.style.setProperty(`--${k}`, v);
      }
    }
    return changed;
  }
  function hashColour(s) { let h = 0; for (const c of s) h = (h * 31 + c.charCodeAt(0)) % 360; return `hsl(${h} 55% 52%)`; }
  function colour(label) {
    if (!label) return "var(--silence)";
    const ident = /^[A-Za-z][A-Za-z0-9_-]*$/.test(label);
    // a CSS variable where possible, so nodes drawn before the server's colours arrive follow them
    if (served[label]) return ident ? `var(--${label})` : served[label];
    // a model label whose colour is still on its way (a variable, filled in when it comes)
    return LABELS.includes(label) ? `var(--${label}, ${hashColour(label)})` : hashColour(label);
  }
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls;
    if (text != null) e.textContent = text; return e; };
  function pct(p) { return p == null ? "" : Math.round(p * 100) + "%"; }
  function clock(t) {
    t = Math.max(0, t); const h = Math.floor(t / 3600), m = Math.floor(t / 60) % 60, s = Math.floor(t % 60);
    const ss = String(s).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
  }
  function clockTenths(t) {         // 1:02.4: for hover texts, where a second is too coarse
    const whole = Math.floor(Math.max(0, t));
    return `${clock(whole)}.${Math.floor((Math.max(0, t) - whole) * 10 + 1e-6)}`;
  }
  function withToken(path, extra) {
    const q = new URLSearchParams(extra || {});
    if (TOKEN) q.set("token", TOKEN);
    const s = q.toString();
    return s ? `${path}${path.includes("?") ? "&" : "?"}${s}` : path;
  }
  function wsURL(path, extra) {
    return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${withToken(path, extra)}`;
  }
  // the colours as the server defines them, before anything is drawn (nodes use CSS variables,
  // so whatever was drawn before the answer takes the colours when they come)
  const coloursReady = fetch(withToken("/colors.json")).then((r) => (r.ok ? r.json() : null)).then((c) => {
    if (!c) return;
    setColours(c.colors);
    if (typeof c.silence === "string") document.documentElement.style.setProperty("--silence", c.silence);
  }).catch(() => {});
  // the header's links keep the token too
  const navLinks = () => { for (const a of document.querySelectorAll("header nav a")) a.href = withToken(a.getAttribute("href")); };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", navLinks); else navLinks();
  window.EmoCommon = { coloursReady, LABELS, NEGATIVE, params, TOKEN, setColours, colour, hashColour, el, pct, clock,
    clockTenths, withToken, wsURL };
})();
