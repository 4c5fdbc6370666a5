// The reader's viewer and rating panel (a Streamlit components-v2 module, run in the page).
//
// Reading integrity lives here and on the server (mame_eval/studies/reading.py):
// * one physical key press or click = at most one rating: auto-repeat events and a key still
//   held from before never rate, a press while a rating is being saved or the next case is
//   loading never rates, and a press before the case has been on screen for min_view_ms never
//   rates -- every such press is acknowledged on screen instead of being dropped silently;
// * a rating names the display it was made on (view + episode); the server stores it only for
//   the case that is on this reader's screen, checks the token, the minimum viewing time (its
//   own clock) and the time limit, and answers with the next display or a notice;
// * no answer within a few seconds is said on screen; after 20 s the page asks to be reloaded.
//
// The module is imported once per page; its state (held keys, the display shown, a pending
// rating) therefore survives Streamlit reruns and even a reconnect after a server restart.

const S = {
  ctx: null,        // {data, setTriggerValue, root}
  key: null,        // display identity "view:episode" of what is drawn
  state: "idle",    // idle | loading | ready | saving | stalled | revoked
  shownAt: 0,       // performance.now() when the current case became visible
  pending: null,    // {press, value, t}
  noticeId: null,
  down: new Set(),  // keys physically held
  timers: {},
  deadline: null,   // performance.now() when the time limit runs out
  log: [],          // timings for tests and the load benchmark: window.__mameReader
};
const V = { img: null, gray: null, w: 0, h: 0, s: 1, x: 0, y: 0, fitted: true,
  level: 127.5, window: 256, invert: false, loupe: false, dragMode: "pan",
  drag: null, pointer: null, disp: null, lutKey: "" };
const PRESETS = {
  full: { level: 127.5, window: 256, label: "full range" },
  dense: { level: 175, window: 130, label: "dense tissue" },
  fatty: { level: 90, window: 150, label: "fatty tissue" },
  contrast: { level: 128, window: 110, label: "high contrast" },
};

window.__mameReader = window.__mameReader || { log: S.log };
// what tests and the load benchmark read: the state machine and the viewer's geometry
window.__mameReader.state = () => {
  const c = S.ctx && S.ctx.root.querySelector("canvas.img");
  const st = S.ctx && S.ctx.root.querySelector(".stage");
  return { state: S.state, key: S.key, s: V.s, x: V.x, y: V.y, w: V.w, h: V.h, dpr: dpr(),
    level: V.level, window: V.window, invert: V.invert, loupe: V.loupe, timeUp: !!S.timeUp,
    canvas: c ? [c.width, c.height] : null,
    stage: st ? [st.clientWidth, st.clientHeight] : null };
};

function $(sel) { return S.ctx.root.querySelector(sel); }
function now() { return performance.now(); }
function rid() { return Math.random().toString(36).slice(2) + now().toFixed(0); }
function record(kind, extra) {
  S.log.push(Object.assign({ kind, t: now(), key: S.key }, extra || {}));
  if (S.log.length > 5000) S.log.splice(0, 1000);
}

// ------------------------------------------------------------------ notices

function setNotice(kind, text, opts) {
  const el = $(".notice");
  if (!el) return;
  S.noticeAt = now();
  S.noticeKind = kind;
  el.className = "notice " + kind;
  el.textContent = text;
  if (opts && opts.reload) {
    const b = document.createElement("button");
    b.textContent = "Reload the page";
    b.className = "reload";
    b.onclick = () => window.location.reload();
    el.appendChild(document.createElement("br"));
    el.appendChild(b);
  }
  clearTimeout(S.timers.notice);
  if (opts && opts.ttl) S.timers.notice = setTimeout(() => { el.textContent = ""; el.className = "notice"; }, opts.ttl);
}

let lastFlash = 0;
function flash(kind, text) {
  // a press that cannot be taken: said in the panel and over the image, never silently dropped
  record("refused", { why: kind });
  const t = now();
  setNotice("warn", text, { ttl: 2500 });
  const toast = $(".toast");
  if (toast && t - lastFlash > 150) {
    toast.textContent = text;
    toast.classList.add("on");
    clearTimeout(S.timers.toast);
    S.timers.toast = setTimeout(() => toast.classList.remove("on"), 1600);
  }
  lastFlash = t;
}

// ------------------------------------------------------------------ rating

function scaleButton(value) { return $(`.scale button[data-value="${value}"]`); }

function press(value, via) {
  const D = S.ctx.data;
  if (S.state === "revoked") return;
  if (S.state === "saving") {
    flash("busy", "Saving your rating: wait for the next case, then press again.");
    return;
  }
  if (S.state === "stalled") {
    flash("stalled", "The server did not answer: reload the page before rating.");
    return;
  }
  if (S.state !== "ready") {
    flash("loading", "The next case is still loading: wait until it appears, then rate it.");
    return;
  }
  const shown = now() - S.shownAt;
  if (shown < D.min_view_ms) {
    flash("early", `Too early: this case appeared ${(shown / 1000).toFixed(1)} s ago. ` +
      `Look at it for at least ${(D.min_view_ms / 1000).toFixed(1)} s, then rate.`);
    return;
  }
  S.state = "saving";
  S.pending = { press: rid(), value, t: now() };
  record("press", { value, via, shown_ms: Math.round(shown) });
  const b = scaleButton(value);
  if (b) b.classList.add("saving");
  S.ctx.root.classList.add("busy");
  setNotice("info", "Saving your rating …");
  clearTimeout(S.timers.slow); clearTimeout(S.timers.dead);
  S.timers.slow = setTimeout(() => {
    if (S.state === "saving") setNotice("warn", "Still saving: the server is slow to answer …");
  }, 4000);
  S.timers.dead = setTimeout(() => {
    if (S.state !== "saving") return;
    S.state = "stalled";  // resending goes on: a reconnect still completes the press
    record("stalled");
    setNotice("error", "No answer from the server for 20 s: your last rating is not confirmed " +
      "yet (it is sent again when the connection returns). Reload the page to continue; " +
      "every stored rating is kept and the page opens at your first unrated case.",
    { reload: true });
  }, 20000);
  S.pending.payload = {
    view: D.view, episode: D.episode, score: value, press: S.pending.press, via,
    shown_ms: Math.round(shown),
  };
  S.ctx.setTriggerValue("rate", S.pending.payload);
  // a press sent while the connection was down is lost by the page: send the same press
  // again until answered (the server handles a press id once, and a case is rated once)
  clearInterval(S.timers.resend);
  S.timers.resend = setInterval(() => {
    if ((S.state !== "saving" && S.state !== "stalled") || !S.pending || !S.pending.payload) {
      clearInterval(S.timers.resend);
      return;
    }
    record("resend", { press: S.pending.press });
    S.ctx.setTriggerValue("rate", S.pending.payload);
  }, 5000);
}

function navigate(to) {
  const D = S.ctx.data;
  if (S.state === "saving" || S.state === "loading") {
    flash("busy", "Wait until the current action is finished.");
    return;
  }
  S.state = "saving";
  S.pending = { press: rid(), value: null, t: now() };
  S.ctx.setTriggerValue("nav", { to, view: D.view, press: S.pending.press });
}

function onKeyDown(e) {
  if (!S.ctx || !S.ctx.root.isConnected) return;
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.composedPath ? e.composedPath()[0] : e.target;
  if (t && (t.tagName === "TEXTAREA" || t.isContentEditable ||
      (t.tagName === "INPUT" && t.type !== "range"))) return;
  const D = S.ctx.data;
  const entry = (D.scale || []).find((p) => p.key === e.key);
  if (entry) {
    e.preventDefault();
    if (e.repeat || S.down.has(e.code)) {
      // auto-repeat of a held key: never a rating
      if (!e.repeat || now() - lastFlash > 1200) {
        flash("held", "Key held down: release it and press again to rate this case.");
      } else record("refused", { why: "repeat" });
      return;
    }
    S.down.add(e.code);
    press(entry.value, "key");
    return;
  }
  if (e.repeat && !"+=-".includes(e.key)) return;
  const k = e.key.toLowerCase();
  if (k === "+" || k === "=") zoomBy(1.25);
  else if (k === "-") zoomBy(0.8);
  else if (k === "f") fit();
  else if (k === "i") toggle("invert");
  else if (k === "m") toggle("loupe");
  else if (k === "w") toggle("mode");
  else if (k === "r") reset();
  else if (k === "h" || k === "?") toggleHelp();
  else if (k === "escape") toggleHelp(false);
  else return;
  e.preventDefault();
}
function onKeyUp(e) { S.down.delete(e.code); }
function onBlur() { S.down.clear(); }

// ------------------------------------------------------------------ drawing

function dpr() { return window.devicePixelRatio || 1; }

function lut() {
  const key = `${V.level}|${V.window}|${V.invert}`;
  if (V.lutKey === key && V.disp) return;
  V.lutKey = key;
  const table = new Uint8ClampedArray(256);
  const lo = V.level - V.window / 2;
  for (let v = 0; v < 256; v++) {
    let o = ((v - lo) / V.window) * 255;
    o = Math.max(0, Math.min(255, o));
    table[v] = V.invert ? 255 - o : o;
  }
  const n = V.w * V.h, out = V.dispData.data, g = V.gray;
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    const o = table[g[i]];
    out[j] = o; out[j + 1] = o; out[j + 2] = o; out[j + 3] = 255;
  }
  V.disp.getContext("2d").putImageData(V.dispData, 0, 0);
}

function stageSize() {
  const st = $(".stage");
  return [st.clientWidth * dpr(), st.clientHeight * dpr()];
}

function draw() {
  const c = $("canvas.img");
  if (!c) return;
  const [W, H] = stageSize();
  if (c.width !== Math.round(W) || c.height !== Math.round(H)) {
    c.width = Math.round(W); c.height = Math.round(H);
    if (V.fitted) fitNoDraw();
  }
  const g = c.getContext("2d");
  g.setTransform(1, 0, 0, 1, 0, 0);
  g.fillStyle = "#000";
  g.fillRect(0, 0, c.width, c.height);
  if (!V.disp || S.timeUp) { drawLoupe(); return; }
  lut();
  // beyond one image pixel per device pixel: show pixels, never the browser's smoothing
  g.imageSmoothingEnabled = V.s < 1;
  g.imageSmoothingQuality = "high";
  g.drawImage(V.disp, V.x, V.y, V.w * V.s, V.h * V.s);
  $(".zoom").textContent = `${Math.round(V.s * 100)}%`;
  $(".wl").textContent = `L ${Math.round(V.level)} W ${Math.round(V.window)}${V.invert ? " inv" : ""}`;
  drawLoupe();
}
let rafPending = false;
function redraw() {
  if (rafPending) return;
  rafPending = true;
  requestAnimationFrame(() => { rafPending = false; draw(); });
}

function drawLoupe() {
  const l = $("canvas.loupe");
  if (!l) return;
  if (!V.loupe || !V.pointer || !V.disp || S.timeUp) { l.style.display = "none"; return; }
  const size = 240, r = dpr();
  l.style.display = "block";
  l.width = size * r; l.height = size * r;
  const [px, py] = V.pointer;  // css px inside the stage
  l.style.left = `${px - size / 2}px`; l.style.top = `${py - size / 2}px`;
  const zoom = Math.max(3 * V.s, 2);                      // device px per image px
  const ix = (px * r - V.x) / V.s, iy = (py * r - V.y) / V.s;   // image coordinates
  const half = (size * r) / 2 / zoom;
  const g = l.getContext("2d");
  g.imageSmoothingEnabled = false;
  g.fillStyle = "#000"; g.fillRect(0, 0, l.width, l.height);
  g.drawImage(V.disp, ix - half, iy - half, 2 * half, 2 * half, 0, 0, l.width, l.height);
}

function fitNoDraw() {
  const [W, H] = stageSize();
  if (!V.w || !W || !H) return;
  V.s = Math.min(W / V.w, H / V.h);
  V.x = (W - V.w * V.s) / 2; V.y = (H - V.h * V.s) / 2;
  V.fitted = true;
}
function fit() { fitNoDraw(); redraw(); }
function zoomAt(f, cx, cy) {
  const ns = Math.min(64, Math.max(0.02, V.s * f));
  V.x = cx - ((cx - V.x) * ns) / V.s; V.y = cy - ((cy - V.y) * ns) / V.s; V.s = ns;
  V.fitted = false; redraw();
}
function zoomBy(f) { const [W, H] = stageSize(); zoomAt(f, W / 2, H / 2); }
function oneToOne() { zoomBy(1 / V.s); }
function setWL(level, window) {
  V.level = Math.max(0, Math.min(255, level));
  V.window = Math.max(1, Math.min(512, window));
  const lv = $("input.lv"), ww = $("input.ww");
  if (lv) lv.value = String(Math.round(V.level));
  if (ww) ww.value = String(Math.round(V.window));
  redraw();
}
function reset() { V.invert = false; syncToggles(); setWL(127.5, 256); fit(); }
function toggle(what) {
  if (what === "invert") V.invert = !V.invert;
  else if (what === "loupe") V.loupe = !V.loupe;
  else if (what === "mode") V.dragMode = V.dragMode === "pan" ? "wl" : "pan";
  syncToggles(); redraw();
}
function syncToggles() {
  const set = (act, on, text) => {
    const b = $(`button[data-act="${act}"]`);
    if (!b) return;
    b.classList.toggle("on", on);
    if (text) b.textContent = text;
  };
  set("invert", V.invert);
  set("loupe", V.loupe);
  set("mode", V.dragMode === "wl", V.dragMode === "wl" ? "drag: W/L" : "drag: pan");
}

function loadImage(D, onShown) {
  V.disp = null; V.gray = null;
  if (!D.image) { onShown(); return; }
  const img = new Image();
  const token = S.key;
  img.onload = () => {
    if (token !== S.key) return;  // a newer display arrived meanwhile
    V.w = img.naturalWidth; V.h = img.naturalHeight;
    const off = document.createElement("canvas");
    off.width = V.w; off.height = V.h;
    const g = off.getContext("2d", { willReadFrequently: true });
    g.drawImage(img, 0, 0);
    const rgba = g.getImageData(0, 0, V.w, V.h).data;
    V.gray = new Uint8Array(V.w * V.h);
    for (let i = 0, j = 0; i < V.gray.length; i++, j += 4) V.gray[i] = rgba[j];
    V.dispData = g.createImageData(V.w, V.h);
    V.disp = off; V.lutKey = "";
    fitNoDraw(); draw();
    // visible once the browser has painted the frame holding it
    requestAnimationFrame(() => requestAnimationFrame(() => { if (token === S.key) onShown(); }));
  };
  img.onerror = () => { if (token === S.key) setNotice("error", "The image could not be shown: reload the page.", { reload: true }); };
  img.src = D.image;
}

// ------------------------------------------------------------------ layout

function layout() {
  const root = S.ctx.root;
  const top = root.getBoundingClientRect().top;
  const h = Math.max(320, Math.floor(window.innerHeight - Math.max(0, top) - 10));
  root.style.height = `${h}px`;
  redraw();
}

function build(parent) {
  const root = document.createElement("div");
  root.className = "root";
  root.innerHTML = `
  <div class="stage" title="">
    <canvas class="img"></canvas><canvas class="loupe"></canvas>
    <div class="tools">
      <button data-act="zin" title="Zoom in (+ or mouse wheel)">+</button>
      <button data-act="zout" title="Zoom out (-)">&minus;</button>
      <button data-act="fit" title="Fit the whole image (F or double-click)">fit</button>
      <button data-act="one" title="One image pixel per screen pixel">1:1</button>
      <button data-act="mode" title="What a left drag does: pan or window/level (W); a right drag always sets window/level">drag: pan</button>
      <button data-act="invert" title="Invert the grey scale (I)">invert</button>
      <button data-act="loupe" title="Magnifier under the mouse (M)">loupe</button>
      <button data-act="reset" title="Reset zoom, window/level and invert (R)">reset</button>
    </div>
    <div class="info"><span class="zoom"></span> <span class="wl"></span> <span class="timer"></span></div>
    <div class="toast" role="alert"></div>
    <div class="timeup">Time is up for this case: please give your rating.</div>
    <div class="help" role="dialog" aria-label="Instructions">
      <button class="close" data-help="close" title="Close (Esc)">&times; close</button>
      <div class="helptext"></div>
    </div>
  </div>
  <div class="side">
    <div class="title"></div>
    <div class="count"><span class="k"></span><button class="helpbtn" data-help="toggle"
      title="Show the instructions again (H)">Instructions</button></div>
    <div class="bar"><div class="fill"></div></div>
    <div class="question"></div>
    <div class="review"></div>
    <div class="scale"></div>
    <div class="notice" role="status" aria-live="polite"></div>
    <div class="nav"></div>
    <div class="wlbox">
      <div class="wlrow"><span>Level</span><input class="lv" type="range" min="0" max="255" step="1"></div>
      <div class="wlrow"><span>Window</span><input class="ww" type="range" min="1" max="512" step="1"></div>
      <div class="presets"></div>
    </div>
    <div class="hint"></div>
  </div>`;
  parent.appendChild(root);
  const stage = root.querySelector(".stage");
  stage.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = stage.getBoundingClientRect();
    zoomAt(Math.exp(-e.deltaY * 0.0015), (e.clientX - r.left) * dpr(), (e.clientY - r.top) * dpr());
  }, { passive: false });
  stage.addEventListener("contextmenu", (e) => e.preventDefault());
  stage.addEventListener("pointerdown", (e) => {
    if (e.target.closest(".tools")) return;
    const wl = e.button === 2 || (e.button === 0 && (V.dragMode === "wl" || e.shiftKey));
    V.drag = { wl, x0: e.clientX, y0: e.clientY, x: V.x, y: V.y, level: V.level, window: V.window };
    stage.setPointerCapture(e.pointerId);
    stage.classList.add(wl ? "wldrag" : "drag");
  });
  stage.addEventListener("pointermove", (e) => {
    const r = stage.getBoundingClientRect();
    V.pointer = [e.clientX - r.left, e.clientY - r.top];
    const d = V.drag;
    if (d) {
      const dx = e.clientX - d.x0, dy = e.clientY - d.y0;
      if (d.wl) setWL(d.level - dy * 0.5, d.window + dx);
      else { V.x = d.x + dx * dpr(); V.y = d.y + dy * dpr(); V.fitted = false; }
    }
    redraw();
  });
  const end = () => { V.drag = null; stage.classList.remove("drag", "wldrag"); };
  stage.addEventListener("pointerup", end);
  stage.addEventListener("pointercancel", end);
  stage.addEventListener("pointerleave", () => { V.pointer = null; redraw(); });
  stage.addEventListener("dblclick", fit);
  root.querySelector(".tools").addEventListener("click", (e) => {
    const b = e.target.closest("button");
    if (!b) return;
    const act = b.dataset.act;
    if (act === "zin") zoomBy(1.25);
    else if (act === "zout") zoomBy(0.8);
    else if (act === "fit") fit();
    else if (act === "one") oneToOne();
    else if (act === "reset") reset();
    else toggle(act);
  });
  root.querySelector("input.lv").addEventListener("input", (e) => setWL(+e.target.value, V.window));
  root.querySelector("input.ww").addEventListener("input", (e) => setWL(V.level, +e.target.value));
  const presets = root.querySelector(".presets");
  for (const [name, p] of Object.entries(PRESETS)) {
    const b = document.createElement("button");
    b.textContent = p.label; b.dataset.preset = name;
    b.onclick = () => setWL(p.level, p.window);
    presets.appendChild(b);
  }
  root.querySelector(".scale").addEventListener("click", (e) => {
    const b = e.target.closest("button");
    if (b && b.dataset.value !== undefined) press(Number(b.dataset.value), "click");
  });
  root.addEventListener("click", (e) => {
    const b = e.target.closest("[data-help]");
    if (b) toggleHelp(b.dataset.help === "close" ? false : undefined);
  });
  root.querySelector(".nav").addEventListener("click", (e) => {
    const b = e.target.closest("button");
    if (b && b.dataset.to) navigate(b.dataset.to);
  });
  return root;
}

function toggleHelp(show) {
  const h = $(".help");
  const on = show === undefined ? !h.classList.contains("on") : show;
  h.classList.toggle("on", on);
}

function renderPanel(D) {
  const root = S.ctx.root;
  $(".title").textContent = D.title || "";
  $(".k").textContent = `Case ${D.k} of ${D.n}`;
  const help = $(".helptext");
  if (help.dataset.src !== D.help) { help.dataset.src = D.help || ""; help.innerHTML = D.help || ""; }
  $(".fill").style.width = `${(100 * D.done) / Math.max(1, D.n)}%`;
  $(".question").textContent = D.question;
  $(".review").textContent = D.mode === "review"
    ? `You rated this case ${D.current} (${D.current_label}). Choose a rating to change it.` : "";
  const scale = $(".scale");
  const sig = JSON.stringify([D.scale, D.current, D.mode]);
  if (scale.dataset.sig !== sig) {
    scale.dataset.sig = sig;
    scale.innerHTML = "";
    for (const p of D.scale) {
      const b = document.createElement("button");
      b.dataset.value = String(p.value);
      b.className = "rate" + (D.current === p.value ? " current" : "");
      b.innerHTML = `<kbd></kbd><span></span>`;
      b.querySelector("kbd").textContent = p.key === null ? "" : p.key;
      b.querySelector("span").textContent = p.label;
      scale.appendChild(b);
    }
  }
  scale.querySelectorAll("button").forEach((b) => b.classList.remove("saving"));
  root.classList.remove("busy");
  const nav = $(".nav");
  nav.innerHTML = "";
  if (D.back) nav.insertAdjacentHTML("beforeend", `<button data-to="back">&larr; Previous case</button>`);
  if (D.mode === "review") nav.insertAdjacentHTML("beforeend", `<button data-to="next">Back to the next unrated case</button>`);
  $(".hint").textContent = D.hint;
  syncToggles();
  setWL(V.level, V.window);
}

function startTimer(D) {
  clearInterval(S.timers.tick);
  S.timeUp = false;
  $(".timeup").style.display = "none";
  const el = $(".timer");
  if (D.seconds_left === null || D.seconds_left === undefined) { S.deadline = null; el.textContent = ""; return; }
  S.deadline = now() + D.seconds_left * 1000;
  const tick = () => {
    const left = Math.max(0, Math.ceil((S.deadline - now()) / 1000));
    el.textContent = `time left ${left} s`;
    if (left <= 0) {
      S.timeUp = true;
      $(".timeup").style.display = "flex";
      clearInterval(S.timers.tick);
      redraw();
    }
  };
  tick();
  S.timers.tick = setInterval(tick, 250);
}

// ------------------------------------------------------------------ entry point

if (!window.__mameReaderListeners) {
  window.__mameReaderListeners = true;
  window.addEventListener("keydown", (e) => onKeyDown(e), true);
  window.addEventListener("keyup", (e) => onKeyUp(e), true);
  window.addEventListener("blur", onBlur);
  window.addEventListener("resize", () => { if (S.ctx && S.ctx.root.isConnected) { layout(); if (V.fitted) fit(); } });
}

export default function (component) {
  const { data, setTriggerValue, parentElement } = component;
  let root = parentElement.querySelector(".root");
  if (!root) root = build(parentElement);
  S.ctx = { data, setTriggerValue, root };
  const D = data;
  window.__mameReader.data = { view: D.view, episode: D.episode, k: D.k, n: D.n };
  layout();
  if (D.revoked) {
    S.state = "revoked";
    setNotice("error", D.revoked);
    return;
  }
  renderPanel(D);
  const key = `${D.view}:${D.episode}:${D.mode}`;
  if (key !== S.key) {
    // a new display: nothing can be rated until it is visible and min_view_ms has passed
    S.key = key;
    S.state = "loading";
    S.pending = null;
    clearTimeout(S.timers.slow); clearTimeout(S.timers.dead); clearInterval(S.timers.resend);
    // a refused press stays acknowledged on screen even when the next case arrives at once
    if (!(S.noticeKind === "warn" && now() - S.noticeAt < 2000)) setNotice("", "");
    startTimer(D);
    record("display", { view: D.view, k: D.k });
    loadImage(D, () => {
      S.shownAt = now();
      S.state = "ready";
      record("shown", { view: D.view, k: D.k });
    });
  } else if (S.pending && D.ack === S.pending.press) {
    // the same display again: the server refused the press (its notice says why)
    clearTimeout(S.timers.slow); clearTimeout(S.timers.dead); clearInterval(S.timers.resend);
    S.pending = null;
    S.state = "ready";
    setNotice("", "");
  }
  if (D.notice && D.notice.id !== S.noticeId) {
    S.noticeId = D.notice.id;
    setNotice(D.notice.kind, D.notice.text, D.notice.kind === "info" ? { ttl: 5000 } : null);
  }
}
