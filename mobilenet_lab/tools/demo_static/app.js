// Draw-a-digit page: pointer drawing (mouse, pen, touch), picture drop, live predictions.
// The page's state is on <body data-state="loading|ready|busy|done|error" data-predictions="N">.
"use strict";

(() => {
  const LINE_WIDTH = 18;      // pixels of the 280x280 pad: MNIST-like strokes after scaling
  const THROTTLE_MS = 120;    // at most one prediction request per this interval while drawing

  const pad = document.getElementById("pad");
  const ctx = pad.getContext("2d");
  const dropZone = document.getElementById("drop-zone");
  const fileInput = document.getElementById("file");
  const bars = document.getElementById("bars");
  const el = (id) => document.getElementById(id);

  let drawing = false;
  let last = null;
  let hasInk = false;
  let inFlight = false;       // a request is on its way
  let wanted = false;         // the pad changed while it was
  let lastSent = 0;
  let timer = null;
  let generation = 0;         // bumped by Clear: answers about an older drawing are dropped
  let predictions = 0;
  let maxBytes = 8 * 1024 * 1024;  // the server's limit, replaced by /api/info's

  function setState(state, message) {
    document.body.dataset.state = state;
    el("status").textContent = message || "";
  }

  function clearPad() {
    generation += 1;
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, pad.width, pad.height);
    hasInk = false;
    el("prediction").textContent = "\u2013";
    el("confidence").textContent = "";
    el("input-img").removeAttribute("src");
    el("cam-img").removeAttribute("src");
    for (const li of bars.children) {
      li.classList.remove("top");
      li.querySelector(".bar").style.width = "0%";
      li.querySelector(".bar-value").textContent = "";
    }
    setState("ready", "Draw a digit.");
  }

  function buildBars(classes) {
    bars.replaceChildren(...classes.map((name) => {
      const li = document.createElement("li");
      li.innerHTML = '<span class="bar-label"></span><span class="bar-track"><span class="bar"></span></span>' +
        '<span class="bar-value"></span>';
      li.querySelector(".bar-label").textContent = name;
      return li;
    }));
  }

  function showResult(data) {
    predictions += 1;
    document.body.dataset.predictions = String(predictions);
    el("prediction").textContent = data.label;
    el("confidence").textContent = `${(100 * data.probs[data.index]).toFixed(1)}% sure`;
    data.probs.forEach((p, i) => {
      const li = bars.children[i];
      if (!li) return;
      li.classList.toggle("top", i === data.index);
      li.querySelector(".bar").style.width = `${(100 * p).toFixed(1)}%`;
      li.querySelector(".bar-value").textContent = `${(100 * p).toFixed(1)}%`;
    });
    el("input-img").src = data.input_png;
    el("cam-img").src = data.cam_png;
    setState("done", `answered in ${data.ms} ms`);
  }

  // Send a picture (a Blob or File) to the server and show the answer.
  async function post(blob) {
    const mine = generation;
    inFlight = true;
    lastSent = performance.now();
    setState("busy", "thinking\u2026");
    try {
      const response = await fetch("api/predict", {
        method: "POST",
        headers: { "Content-Type": blob.type || "application/octet-stream" },
        body: blob,
      });
      const data = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
      if (mine !== generation) return;
      if (!response.ok) throw new Error(data.error || `the server answered ${response.status}`);
      showResult(data);
    } catch (err) {
      if (mine === generation) setState("error", err.message || String(err));
    } finally {
      inFlight = false;
      if (wanted) {
        wanted = false;
        requestPrediction();
      }
    }
  }

  // Ask for a prediction of the pad: now, after the throttle interval, or after the request in flight.
  function requestPrediction() {
    if (!hasInk) return;
    if (inFlight) {
      wanted = true;
      return;
    }
    const wait = THROTTLE_MS - (performance.now() - lastSent);
    if (wait > 0) {
      if (!timer) timer = setTimeout(() => { timer = null; requestPrediction(); }, wait);
      return;
    }
    inFlight = true;  // reserved until toBlob calls back
    pad.toBlob((blob) => { inFlight = false; post(blob); }, "image/png");
  }

  function pointAt(ev) {
    const r = pad.getBoundingClientRect();
    return { x: (ev.clientX - r.left) * pad.width / r.width, y: (ev.clientY - r.top) * pad.height / r.height };
  }

  function strokeTo(p) {
    ctx.beginPath();
    ctx.moveTo(last.x, last.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
    last = p;
  }

  pad.addEventListener("pointerdown", (ev) => {
    ev.preventDefault();
    pad.setPointerCapture(ev.pointerId);
    drawing = true;
    hasInk = true;
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = LINE_WIDTH;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    last = pointAt(ev);
    strokeTo({ x: last.x + 0.01, y: last.y });  // a tap leaves a dot
    requestPrediction();
  });
  pad.addEventListener("pointermove", (ev) => {
    if (!drawing) return;
    const events = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [ev];
    for (const e of (events.length ? events : [ev])) strokeTo(pointAt(e));
    requestPrediction();
  });
  const endStroke = () => {
    if (!drawing) return;
    drawing = false;
    requestPrediction();
  };
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  // A dropped or chosen picture: shown on the pad, and its own bytes (full size) sent to the model.
  function openFile(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      setState("error", `${file.name} is not a picture (${file.type})`);
      return;
    }
    if (file.size > maxBytes) {
      setState("error", `${file.name} has ${file.size.toLocaleString()} bytes, more than ` +
        `${maxBytes.toLocaleString()}: choose a smaller picture`);
      return;
    }
    clearPad();
    hasInk = true;
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => {
      const scale = Math.min(pad.width / img.width, pad.height / img.height);
      const w = img.width * scale, h = img.height * scale;
      ctx.drawImage(img, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
      URL.revokeObjectURL(url);
    };
    img.onerror = () => URL.revokeObjectURL(url);
    img.src = url;
    post(file);
  }

  fileInput.addEventListener("change", () => { openFile(fileInput.files[0]); fileInput.value = ""; });
  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (ev) => { ev.preventDefault(); dropZone.classList.add("dragging"); });
  }
  document.addEventListener("dragleave", (ev) => {
    if (ev.target === document.documentElement || !ev.relatedTarget) dropZone.classList.remove("dragging");
  });
  document.addEventListener("drop", (ev) => {
    ev.preventDefault();
    dropZone.classList.remove("dragging");
    openFile(ev.dataTransfer && ev.dataTransfer.files[0]);
  });
  el("clear").addEventListener("click", clearPad);
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") clearPad(); });

  clearPad();
  setState("loading", "loading the model\u2026");
  fetch("api/info")
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`the server answered ${r.status}`))))
    .then((info) => {
      el("model-info").textContent = `${info.description} \u2014 ${info.model}`;
      buildBars(info.classes);
      maxBytes = info.max_bytes;
      setState("ready", "Draw a digit.");
    })
    .catch((err) => setState("error", `cannot reach the server: ${err.message}`));
})();
