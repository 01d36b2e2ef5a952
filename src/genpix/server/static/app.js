// genpix web UI: plain JavaScript over the /sdapi/v1 API (no build step, nothing from outside).
"use strict";

const API = "/sdapi/v1";
const $ = (id) => document.getElementById(id);

async function call(method, path, body) {
  const response = await fetch(API + path, {
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
  const samplers = await call("GET", "/samplers");
  $("sampler_name").replaceChildren(new Option("(model default)", ""),
    ...samplers.map((s) => new Option(s.name, s.name)));
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
    override_settings: { sd_model_checkpoint: $("model").value },
    override_settings_restore_afterwards: false,
  };
  for (const id of ["steps", "cfg_scale", "seed", "width", "height", "batch_size", "n_iter"]) {
    const value = numberField(id);
    if (value !== undefined) body[id] = value;
  }
  return body;
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
    const result = await call("POST", "/txt2img", payload());
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
  $("model").addEventListener("change", switchModel);
  $("lightbox").addEventListener("click", (event) => {
    if (event.target.id !== "download") $("lightbox").hidden = true;
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) generate();
  });
  Promise.all([loadModels(), loadSamplers()]).catch(showError);
});
