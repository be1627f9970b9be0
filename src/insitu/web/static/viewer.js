// The series viewer: asks the server for rendered JPEGs (WADO-RS); never sees pixel values.
(function () {
  "use strict";
  const root = document.getElementById("viewer");
  const instances = JSON.parse(root.dataset.instances);
  const base = "/dicomweb/studies/" + root.dataset.study + "/series/" + root.dataset.series;
  const frame = document.getElementById("frame");
  const stage = document.getElementById("stage");
  const slice = document.getElementById("slice");
  const sliceOut = document.getElementById("slice-out");
  const center = document.getElementById("center");
  const width = document.getElementById("width");
  const budget = document.getElementById("budget");
  const zoomOut = document.getElementById("zoom-out-value");
  let index = 0, preset = "", zoom = 1, pending = null, drag = null;

  function url() {
    const params = new URLSearchParams({ viewport: "1024,1024", quality: "85" });
    if (center.value !== "" && width.value !== "") {
      params.set("window", center.value + "," + width.value);
    } else if (preset) {
      params.set("preset", preset);
    }
    return base + "/instances/" + instances[index] + "/rendered?" + params;
  }

  async function show() {
    const wanted = url();
    pending = wanted;
    const answer = await fetch(wanted, { headers: { Accept: "image/jpeg" }, credentials: "same-origin" });
    if (pending !== wanted) return;  // a newer request is on its way
    if (!answer.ok) {
      const detail = (await answer.json()).detail;
      budget.textContent = detail;
      frame.alt = "Not shown: " + detail;
      return;
    }
    const left = answer.headers.get("X-Insitu-Frames-Left");
    budget.textContent = left === null ? "" : left + " frames left this hour";
    const old = frame.src;
    frame.src = URL.createObjectURL(await answer.blob());
    frame.alt = "Slice " + (index + 1) + " of " + instances.length;
    frame.dataset.slice = String(index + 1);
    if (old) URL.revokeObjectURL(old);
  }

  function go(to) {
    index = Math.max(0, Math.min(instances.length - 1, to));
    slice.value = String(index + 1);
    sliceOut.textContent = String(index + 1);
    show();
  }

  function setZoom(to) {
    zoom = Math.max(0.25, Math.min(4, to));
    frame.style.transform = "scale(" + zoom + ")";
    zoomOut.textContent = Math.round(zoom * 100) + " %";
  }

  slice.addEventListener("input", () => go(Number(slice.value) - 1));
  document.querySelectorAll("button.preset").forEach((button) => {
    button.addEventListener("click", () => {
      preset = button.dataset.preset;
      center.value = button.dataset.center || "";
      width.value = button.dataset.width || "";
      show();
    });
  });
  [center, width].forEach((field) => field.addEventListener("change", show));
  document.getElementById("zoom-in").addEventListener("click", () => setZoom(zoom * 1.25));
  document.getElementById("zoom-out").addEventListener("click", () => setZoom(zoom / 1.25));
  stage.addEventListener("wheel", (event) => {
    event.preventDefault();
    go(index + (event.deltaY > 0 ? 1 : -1));
  }, { passive: false });
  stage.addEventListener("keydown", (event) => {
    const presets = document.querySelectorAll("button.preset[data-preset]:not([data-preset=''])");
    if (event.key === "ArrowDown" || event.key === "PageDown") go(index + 1);
    else if (event.key === "ArrowUp" || event.key === "PageUp") go(index - 1);
    else if (event.key === "+" || event.key === "=") setZoom(zoom * 1.25);
    else if (event.key === "-") setZoom(zoom / 1.25);
    else if (/^[1-9]$/.test(event.key) && presets[Number(event.key) - 1]) presets[Number(event.key) - 1].click();
    else return;
    event.preventDefault();
  });
  stage.addEventListener("pointerdown", (event) => {
    if (center.value === "" || width.value === "") { center.value = "40"; width.value = "400"; }
    drag = { x: event.clientX, y: event.clientY, c: Number(center.value), w: Number(width.value) };
    stage.setPointerCapture(event.pointerId);
  });
  stage.addEventListener("pointermove", (event) => {
    if (!drag) return;
    width.value = String(Math.max(1, Math.round(drag.w + (event.clientX - drag.x) * 4)));
    center.value = String(Math.round(drag.c + (event.clientY - drag.y) * 2));
  });
  stage.addEventListener("pointerup", () => { if (drag) { drag = null; show(); } });
  go(0);
})();
