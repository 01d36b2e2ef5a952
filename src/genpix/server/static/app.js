// genpix web UI: plain JavaScript over the /sdapi/v1 API (no build step, nothing from outside).
"use strict";

const API = "/sdapi/v1";
const $ = (id) => document.getElementById(id);

async function call(method, path, body) {
  return fetchJSON(method, API + path, body);
}

async function fetchJSON(method, url, body) {
  const response = await fetch(url, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    let detail = data && data.detail !== undefined ? data.detail : response.statusText;
    if (Array.isArray(detail)) detail = detail.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("\n");
    throw new Error(`${response.status}: ${detail}`);
  }
  return data;
}

function showError(error) {
  $("error").textContent = error ? String(error.message || error) : "";
  $("error").hidden = !error;
}

async function loadModels() {
  const [models, options] = await Promise.all([call("GET", "/sd-models"), call("GET", "/options")]);
  const select = $("model");
  select.replaceChildren(...models.map((m) => new Option(m.title, m.title)));
  select.value = options.sd_model_checkpoint;
}

async function loadSamplers() {
  const [samplers, schedulers] = await Promise.all([call("GET", "/samplers"), call("GET", "/schedulers")]);
  $("sampler_name").replaceChildren(new Option("(model default)", ""),
    ...samplers.map((s) => new Option(s.name, s.name)));
  $("scheduler").replaceChildren(...schedulers.map((s) => new Option(s.label, s.name)));
  $("scheduler").value = "automatic";
}

// ---- Fast: the model's fast preset (GET /genpix/fast-preset: pipelines/fast.py, as `genpix generate --fast`)
// put into the form, and its less-work settings sent with each txt2img request while the box is ticked

const FAST_FIELDS = ["steps", "sampler_name", "scheduler", "cfg_scale"];
let fastSettings = null; // the preset's override_settings while Fast is on
let beforeFast = null; // the form's values before Fast, and the preset's values put in their place

async function applyFast() {
  if (!$("fast").checked) return leaveFast();
  const params = new URLSearchParams({ model: $("model").value, prompt: $("prompt").value });
  try {
    const preset = await fetchJSON("GET", `/genpix/fast-preset?${params}`);
    if (!$("fast").checked) return;
    const before = beforeFast ? beforeFast.before : Object.fromEntries(FAST_FIELDS.map((id) => [id, $(id).value]));
    for (const id of FAST_FIELDS) {
      if (preset[id] !== undefined) $(id).value = preset[id];
      else if (beforeFast && $(id).value === beforeFast.applied[id]) $(id).value = before[id]; // the last model's
    }
    beforeFast = { before, applied: Object.fromEntries(FAST_FIELDS.map((id) => [id, $(id).value])) };
    fastSettings = preset.override_settings;
    $("fast-status").textContent = fastSummary(preset);
  } catch (error) {
    $("fast").checked = false;
    leaveFast();
    showError(error);
  }
}

function leaveFast() {
  // the fields the user has not changed since get their values back
  if (beforeFast) {
    for (const id of FAST_FIELDS) if ($(id).value === beforeFast.applied[id]) $(id).value = beforeFast.before[id];
  }
  fastSettings = beforeFast = null;
  $("fast-status").textContent = "";
}

function fastSummary(preset) {
  const less = preset.override_settings;
  const schedule = preset.scheduler !== "automatic" ? ` ${$("scheduler").selectedOptions[0].text}` : "";
  return [`${preset.steps} steps, ${preset.sampler_name}${schedule}`,
          preset.cfg_scale !== undefined ? `CFG ${preset.cfg_scale}` : "",
          less.deepcache_interval ? `DeepCache every ${less.deepcache_interval}` : "",
          less.token_merging_ratio ? `token merging ${less.token_merging_ratio}` : "",
          less.tiny_decode ? "tiny decoder" : ""].filter(Boolean).join(", ");
}

async function loadStyles() {
  // sd-webui's styles (--styles-file); hidden when there are none
  const styles = await call("GET", "/prompt-styles");
  $("styles").replaceChildren(...styles.map((s) => new Option(s.name, s.name)));
  $("styles-box").hidden = styles.length === 0;
}

async function loadLoras() {
  // the server's LoRA folder (--lora-dir): choosing one inserts its tag into the prompt, as sd-webui's cards do
  const loras = await call("GET", "/loras");
  $("loras").replaceChildren(new Option("(insert a LoRA)", ""), ...loras.map((l) => new Option(l.name, l.name)));
  $("loras-box").hidden = loras.length === 0;
}

function insertLora() {
  const name = $("loras").value;
  if (!name) return;
  const prompt = $("prompt");
  prompt.value = (prompt.value.trim() ? prompt.value.trimEnd() + " " : "") + `<lora:${name}:1>`;
  $("loras").value = "";
}

async function switchModel() {
  const title = $("model").value;
  $("model-status").textContent = "loading…";
  $("generate").disabled = true;
  try {
    await call("POST", "/options", { sd_model_checkpoint: title });
    $("model-status").textContent = "";
    showError(null);
  } catch (error) {
    $("model-status").textContent = "";
    showError(error);
  } finally {
    $("generate").disabled = false;
  }
}

function numberField(id) {
  const text = $(id).value.trim();
  return text === "" ? undefined : Number(text);
}

function payload() {
  const body = {
    prompt: $("prompt").value,
    negative_prompt: $("negative_prompt").value,
    sampler_name: $("sampler_name").value || undefined,
    scheduler: $("scheduler").value === "automatic" ? undefined : $("scheduler").value,
    override_settings: { sd_model_checkpoint: $("model").value },
    override_settings_restore_afterwards: false,
  };
  if (fastSettings && tab === "txt2img") { // for this request only: the server's /options keep their values
    Object.assign(body.override_settings, fastSettings);
    body.override_settings_restore_afterwards = true;
  }
  const styles = [...$("styles").selectedOptions].map((option) => option.value);
  if (styles.length) body.styles = styles;
  for (const id of ["steps", "cfg_scale", "seed", "width", "height", "batch_size", "n_iter"]) {
    const value = numberField(id);
    if (value !== undefined) body[id] = value;
  }
  return body;
}

// ---- tabs: txt2img, img2img, inpaint, outpaint share the form above; PNG info has its own panel

let tab = "txt2img";

function showTab(name) {
  tab = name;
  for (const button of document.querySelectorAll("#tabs [data-tab]")) {
    button.setAttribute("aria-selected", String(button.dataset.tab === name));
  }
  for (const element of document.querySelectorAll("[data-tabs]")) {
    element.hidden = !element.dataset.tabs.split(" ").includes(name);
  }
}

// ---- the picture img2img, inpaint and outpaint start from, and the inpainting mask drawn over it

let picture = null; // a data: URL

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

async function loadPicture() {
  const file = $("init-file").files[0];
  if (!file) return;
  const url = await readFile(file);
  const img = $("init-image");
  await new Promise((resolve, reject) => {
    img.onload = resolve;
    img.onerror = () => reject(new Error(`${file.name} is not a picture this browser can show`));
    img.src = url;
  });
  picture = url;
  const canvas = $("mask-canvas");
  canvas.width = img.naturalWidth; // the mask has the picture's own pixels; CSS scales both alike
  canvas.height = img.naturalHeight;
  $("brush_size").value = Math.max(1, Math.round(Math.min(img.naturalWidth, img.naturalHeight) / 10));
  $("canvas-box").hidden = false;
}

function canvasPoint(event) {
  const canvas = $("mask-canvas");
  const box = canvas.getBoundingClientRect();
  const clamp = (v, size) => Math.min(size - 1, Math.max(0, Math.floor(v)));
  return { x: clamp((event.clientX - box.left) * canvas.width / box.width, canvas.width),
           y: clamp((event.clientY - box.top) * canvas.height / box.height, canvas.height) };
}

function paint(from, to) {
  // square brush dabs at every pixel step from `from` to `to`: whole pixels, no antialiased edges
  const context = $("mask-canvas").getContext("2d");
  const size = Math.max(1, numberField("brush_size") || 1);
  const half = Math.floor(size / 2);
  const count = Math.max(Math.abs(to.x - from.x), Math.abs(to.y - from.y), 1);
  context.fillStyle = "#e86b1c";
  for (let i = 0; i <= count; i++) {
    const x = Math.round(from.x + (to.x - from.x) * i / count);
    const y = Math.round(from.y + (to.y - from.y) * i / count);
    context.fillRect(x - half, y - half, size, size);
  }
}

function enableMaskDrawing() {
  const canvas = $("mask-canvas");
  let last = null;
  canvas.addEventListener("mousedown", (event) => {
    last = canvasPoint(event);
    paint(last, last);
  });
  canvas.addEventListener("mousemove", (event) => {
    if (last === null) return;
    const point = canvasPoint(event);
    paint(last, point);
    last = point;
  });
  window.addEventListener("mouseup", () => { last = null; });
  $("clear-mask").addEventListener("click", () => {
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  });
}

function maskPicture() {
  // the painted pixels white, the rest black: sd-webui's mask (white = repaint)
  const canvas = $("mask-canvas");
  const { width, height } = canvas;
  const painted = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  const mask = new ImageData(width, height);
  let any = false;
  for (let i = 0; i < painted.length; i += 4) {
    const value = painted[i + 3] > 0 ? 255 : 0;
    any = any || value > 0;
    mask.data.set([value, value, value, 255], i);
  }
  if (!any) throw new Error("draw a mask over the picture first: the brush paints what to repaint");
  const out = document.createElement("canvas");
  out.width = width;
  out.height = height;
  out.getContext("2d").putImageData(mask, 0, 0);
  return out.toDataURL("image/png");
}

function generationRequest() {
  // [route, body] for the current tab; outpainting is sd-webui's "Poor man's outpainting" img2img script
  const body = payload();
  if (tab === "txt2img") return ["/txt2img", body];
  if (picture === null) throw new Error(`upload a picture for ${tab} first`);
  body.init_images = [picture];
  body.denoising_strength = numberField("denoising_strength");
  const blur = numberField("mask_blur");
  const fill = Number($("inpainting_fill").value);
  if (tab === "inpaint") {
    Object.assign(body, { mask: maskPicture(), mask_blur: blur, inpainting_fill: fill,
                          inpainting_mask_invert: Number($("inpainting_mask_invert").value) });
  } else if (tab === "outpaint") {
    const directions = [...document.querySelectorAll("#directions input:checked")].map((box) => box.value);
    if (directions.length === 0) throw new Error("tick at least one direction to outpaint");
    body.script_name = "Poor man's outpainting";
    body.script_args = [numberField("outpaint_pixels"), blur, fill, directions];
  }
  return ["/img2img", body];
}

// ---- PNG info: a picture's parameters, and "Send to txt2img"

let pngParameters = null;

async function readPNGInfo() {
  const file = $("png-file").files[0];
  if (!file) return;
  showError(null);
  pngParameters = null;
  $("send-to-txt2img").disabled = true;
  try {
    const url = await readFile(file);
    $("png-image").src = url;
    $("png-image").hidden = false;
    const info = await call("POST", "/png-info", { image: url });
    $("png-info-text").textContent = info.info || "this picture carries no parameters";
    if (info.info) {
      pngParameters = info.parameters;
      $("send-to-txt2img").disabled = false;
    }
  } catch (error) {
    $("png-info-text").textContent = "";
    showError(error);
  }
}

function sendToTxt2img() {
  const p = pngParameters;
  $("prompt").value = p.Prompt || "";
  $("negative_prompt").value = p["Negative prompt"] || "";
  for (const [id, key] of [["steps", "Steps"], ["cfg_scale", "CFG scale"], ["seed", "Seed"]]) {
    if (p[key] !== undefined) $(id).value = p[key];
  }
  if (p.Size) [$("width").value, $("height").value] = p.Size.split("x");
  const sampler = [...$("sampler_name").options].find((option) => option.value === p.Sampler);
  $("sampler_name").value = sampler ? sampler.value : "";
  const schedule = [...$("scheduler").options].find((option) => option.text === p["Schedule type"]);
  $("scheduler").value = schedule ? schedule.value : "automatic";
  showTab("txt2img");
}

let polling = null;

async function pollProgress() {
  try {
    const p = await call("GET", "/progress");
    $("progress").value = p.progress;
    if (p.current_image) {
      $("preview").src = "data:image/png;base64," + p.current_image;
      $("preview").hidden = false;
    }
  } catch (error) { /* the next poll tries again */ }
}

function showResults(images, info) {
  const gallery = $("gallery");
  gallery.replaceChildren();
  images.forEach((b64, i) => {
    const img = document.createElement("img");
    img.src = "data:image/png;base64," + b64;
    img.alt = `result ${i + 1}, seed ${info.all_seeds[i]}`;
    img.dataset.seed = info.all_seeds[i];
    img.dataset.infotext = info.infotexts[i];
    img.addEventListener("click", () => select(img, true));
    gallery.appendChild(img);
  });
  if (gallery.firstChild) select(gallery.firstChild, false);
  else $("infotext").textContent = info.interrupted ? "interrupted before any image was finished" : "";
}

function select(img, enlarge) {
  for (const other of $("gallery").children) other.classList.toggle("selected", other === img);
  $("infotext").textContent = img.dataset.infotext;
  $("download").href = img.src;
  $("download").download = `genpix-${img.dataset.seed}.png`;
  if (enlarge) {
    $("lightbox-image").src = img.src;
    $("lightbox").hidden = false;
  }
}

async function generate() {
  showError(null);
  $("generate").disabled = true;
  $("interrupt").disabled = false;
  $("progress").value = 0;
  $("preview").hidden = true;
  $("progress-box").hidden = false;
  polling = setInterval(pollProgress, 400);
  try {
    const [route, body] = generationRequest();
    const result = await call("POST", route, body);
    showResults(result.images, JSON.parse(result.info));
  } catch (error) {
    showError(error);
  } finally {
    clearInterval(polling);
    $("progress-box").hidden = true;
    $("generate").disabled = false;
    $("interrupt").disabled = true;
  }
}

window.addEventListener("DOMContentLoaded", () => {
  $("generate").addEventListener("click", generate);
  $("interrupt").addEventListener("click", () => call("POST", "/interrupt").catch(showError));
  $("model").addEventListener("change", async () => {
    await switchModel(); // loaded by the server's job queue first, then asked for its preset
    if ($("fast").checked) await applyFast();
  });
  $("fast").addEventListener("change", applyFast);
  for (const button of document.querySelectorAll("#tabs [data-tab]")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  $("init-file").addEventListener("change", () => loadPicture().catch(showError));
  enableMaskDrawing();
  $("png-file").addEventListener("change", readPNGInfo);
  $("send-to-txt2img").addEventListener("click", sendToTxt2img);
  $("lightbox").addEventListener("click", (event) => {
    if (event.target.id !== "download") $("lightbox").hidden = true;
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) generate();
  });
  $("loras").addEventListener("change", insertLora);
  Promise.all([loadModels(), loadSamplers(), loadStyles(), loadLoras()]).catch(showError);
});

// ---- Extras: upscale a picture with /extra-single-image (sd-webui's Extras tab)

async function loadUpscalers() {
  const upscalers = await call("GET", "/upscalers");
  for (const id of ["extras-upscaler-1", "extras-upscaler-2"]) {
    $(id).replaceChildren(...upscalers.map((u) => new Option(`${u.name}${u.model_path ? ` (x${u.scale})` : ""}`, u.name)));
  }
  const model = upscalers.find((u) => u.model_path);
  $("extras-upscaler-1").value = model ? model.name : "Lanczos";
}

async function upscalePicture() {
  const file = $("extras-file").files[0];
  showError(null);
  if (!file) return showError(new Error("choose a picture to upscale first"));
  $("extras-run").disabled = true;
  try {
    const image = await readFile(file);
    const result = await call("POST", "/extra-single-image", {
      image,
      resize_mode: Number($("extras-mode").value),
      upscaling_resize: Number($("extras-scale").value),
      upscaling_resize_w: Number($("extras-width").value),
      upscaling_resize_h: Number($("extras-height").value),
      upscaling_crop: $("extras-crop").checked,
      upscaler_1: $("extras-upscaler-1").value,
      upscaler_2: $("extras-upscaler-2").value,
      extras_upscaler_2_visibility: Number($("extras-visibility").value),
    });
    const text = new DOMParser().parseFromString(result.html_info, "text/html").body.textContent;
    const img = document.createElement("img");
    img.src = "data:image/png;base64," + result.image;
    img.alt = "upscaled picture";
    img.dataset.seed = file.name.replace(/\.[^.]*$/, "") + "-upscaled";
    img.dataset.infotext = text;
    img.addEventListener("click", () => select(img, true));
    $("gallery").replaceChildren(img);
    select(img, false);
  } catch (error) {
    showError(error);
  } finally {
    $("extras-run").disabled = false;
  }
}

window.addEventListener("DOMContentLoaded", () => {
  $("extras-run").addEventListener("click", upscalePicture);
  loadUpscalers().catch(showError);
});
