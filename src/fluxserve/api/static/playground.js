// The playground: forms built from /openapi.json, submitted through fal's queue, progress from the status stream.
"use strict";

const ENDPOINTS = { "fal-ai/flux/schnell": "Text to image", "fal-ai/flux/schnell/redux": "Redux (variations)" };
const $ = (id) => document.getElementById(id);
let openapi = null;
let current = "fal-ai/flux/schnell";
let snippetKind = "curl";

// The key lives in this tab's sessionStorage: gone when the tab closes, never shared with other tabs. Any page
// served from this origin could read it, which is why the server never serves an uploaded file as a page
// (api/routes/files.py: images by their bytes, everything else a sandboxed download).
const KEY_ITEM = "fluxserve-key";

function authHeaders() {
  const key = $("api-key").value.trim() || sessionStorage.getItem(KEY_ITEM) || "";
  if ($("api-key").value.trim()) sessionStorage.setItem(KEY_ITEM, key);
  return key ? { Authorization: `Key ${key}` } : {};
}

function resolve(schema) {
  if (schema && schema.$ref) return openapi.components.schemas[schema.$ref.split("/").pop()];
  return schema;
}

function inputSchema(app) {
  const body = openapi.paths[`/${app}`].post.requestBody.content["application/json"].schema;
  return resolve(body);
}

function fieldRow(name, prop, required) {
  const row = document.createElement("div");
  row.className = "field";
  row.dataset.field = name;
  const label = document.createElement("label");
  label.textContent = name + (required ? " *" : "");
  label.htmlFor = `f-${name}`;
  row.appendChild(label);
  if (prop.description) {
    const help = document.createElement("div");
    help.className = "help";
    const range = prop.minimum !== undefined ? ` (${prop.minimum}–${prop.maximum})` : "";
    help.textContent = prop.description + range + (prop.default !== undefined ? ` Default: ${JSON.stringify(prop.default)}.` : "");
    row.appendChild(help);
  }
  row.appendChild(control(name, prop));
  const error = document.createElement("div");
  error.className = "error";
  row.appendChild(error);
  return row;
}

function control(name, prop) {
  const options = prop.oneOf ? prop.oneOf.map(resolve) : null;
  const enumSchema = resolve(prop.allOf ? prop.allOf[0] : prop);
  if (options) return sizeControl(name, prop, options);
  if (enumSchema && enumSchema.enum) {
    const select = document.createElement("select");
    select.id = `f-${name}`;
    for (const value of enumSchema.enum) select.add(new Option(value, value, false, value === prop.default));
    return select;
  }
  const type = prop.type || (prop.anyOf || []).map((s) => s.type).find((t) => t && t !== "null");
  let input;
  if (type === "boolean") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = prop.default === true;
  } else if (type === "integer" || type === "number") {
    input = document.createElement("input");
    input.type = "number";
    if (prop.minimum !== undefined) input.min = prop.minimum;
    if (prop.maximum !== undefined) input.max = prop.maximum;
    input.step = type === "integer" ? "1" : "any";
    if (prop.default !== undefined && prop.default !== null) input.value = prop.default;
    else input.placeholder = "random";
  } else if (name === "prompt") {
    input = document.createElement("textarea");
  } else {
    input = document.createElement("input");
    input.type = "text";
  }
  input.id = `f-${name}`;
  input.dataset.kind = type || "string";
  if (name === "image_url") return imagePicker(input);
  return input;
}

function sizeControl(name, prop, options) {
  const wrap = document.createElement("div");
  const select = document.createElement("select");
  select.id = `f-${name}`;
  const presets = options.find((o) => o.enum);
  for (const value of presets.enum) select.add(new Option(value, value, false, value === prop.default));
  select.add(new Option("custom…", "custom"));
  const custom = document.createElement("div");
  custom.className = "size-custom";
  custom.hidden = true;
  custom.innerHTML = '<input id="f-width" type="number" value="512" min="16" placeholder="width"><input id="f-height" type="number" value="512" min="16" placeholder="height">';
  select.onchange = () => { custom.hidden = select.value !== "custom"; };
  wrap.append(select, custom);
  return wrap;
}

function imagePicker(input) {
  const wrap = document.createElement("div");
  input.placeholder = "https://… or data:… — or pick a file below";
  const file = document.createElement("input");
  file.type = "file";
  file.accept = "image/*";
  file.onchange = async () => {
    const picked = file.files[0];
    if (!picked) return;
    const r = await fetch("/files/upload", { method: "POST", body: picked,
      headers: { "Content-Type": picked.type, "X-Fal-File-Name": picked.name, ...authHeaders() } });
    input.value = (await r.json()).access_url;
  };
  wrap.append(input, file);
  return wrap;
}

function buildForm() {
  const form = $("form");
  form.innerHTML = "";
  const schema = inputSchema(current);
  const required = schema.required || [];
  for (const [name, prop] of Object.entries(schema.properties)) form.appendChild(fieldRow(name, prop, required.includes(name)));
  for (const b of document.querySelectorAll("#endpoints button")) b.classList.toggle("active", b.dataset.app === current);
  renderSnippet();
}

function readForm() {
  const body = {};
  for (const row of document.querySelectorAll("#form .field")) {
    const name = row.dataset.field;
    const el = $(`f-${name}`);
    if (name === "image_size") {
      body[name] = el.value === "custom" ? { width: Number($("f-width").value), height: Number($("f-height").value) } : el.value;
    } else if (el.type === "checkbox") body[name] = el.checked;
    else if (el.type === "number") { if (el.value !== "") body[name] = Number(el.value); }
    else if (el.value !== "") body[name] = el.value;
  }
  return body;
}

function showErrors(detail) {
  for (const row of document.querySelectorAll("#form .field")) { row.classList.remove("invalid"); row.querySelector(".error").textContent = ""; }
  const items = Array.isArray(detail) ? detail : [{ loc: ["body"], msg: String(detail) }];
  for (const item of items) {
    const row = document.querySelector(`#form .field[data-field="${item.loc[1]}"]`);
    if (row) { row.classList.add("invalid"); row.querySelector(".error").textContent = item.msg; }
    else $("status").textContent = item.msg;
  }
}

function setProgress(status) {
  const logs = status.logs || [];
  for (const line of logs) {
    const m = /^step (\d+)\/(\d+)/.exec(line.message);
    if (m) $("bar").style.width = `${(100 * m[1]) / m[2]}%`;
    else $("status").textContent = line.message;
  }
  if (status.status === "IN_QUEUE") $("status").textContent = `In queue: ${status.queue_position} ahead`;
}

async function follow(handle) {
  const r = await fetch(`${handle.status_url}/stream?logs=1`, { headers: authHeaders() });
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (event.startsWith("data: ")) { last = JSON.parse(event.slice(6)); setProgress(last); }
    }
  }
  return last;
}

async function generate() {
  const body = readForm();
  showErrors([]);
  $("status").textContent = "Submitting…";
  $("bar").style.width = "0";
  const r = await fetch(`/queue/${current}`, { method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", ...authHeaders() } });
  const answer = await r.json();
  if (!r.ok) { $("status").textContent = `Refused (${r.status})`; showErrors(answer.detail); return; }
  await follow(answer);
  const result = await fetch(answer.response_url, { headers: authHeaders() });
  const output = await result.json();
  if (!result.ok) { $("status").textContent = `Failed: ${JSON.stringify(output.detail)}`; showErrors(output.detail); return; }
  $("status").textContent = "Done";
  $("bar").style.width = "100%";
  showImages(output);
  remember(answer.request_id, body);
}

function showImages(output) {
  const box = $("images");
  box.innerHTML = "";
  output.images.forEach((image, k) => {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.src = image.url;
    img.alt = `seed ${output.seed + k}`;
    const caption = document.createElement("figcaption");
    caption.textContent = `seed ${output.seed + k} · ${image.width}×${image.height}${output.has_nsfw_concepts[k] ? " · flagged" : ""}`;
    figure.append(img, caption);
    box.appendChild(figure);
  });
  $("meta").textContent = JSON.stringify({ seed: output.seed, timings: output.timings }, null, 2);
}

function remember(requestId, body) {
  const history = JSON.parse(localStorage.getItem("fluxserve-history") || "[]");
  history.unshift({ requestId, app: current, body, at: new Date().toISOString() });
  localStorage.setItem("fluxserve-history", JSON.stringify(history.slice(0, 20)));
  renderHistory();
}

function renderHistory() {
  const list = $("history");
  list.innerHTML = "";
  for (const item of JSON.parse(localStorage.getItem("fluxserve-history") || "[]")) {
    const li = document.createElement("li");
    li.textContent = `${item.at.slice(0, 19)} ${item.app} ${item.body.prompt || item.body.image_url || ""}`;
    list.appendChild(li);
  }
}

// A Python literal for a JSON value (true/false/null differ; JSON's string escapes are valid Python).
function pyLiteral(value) {
  if (value === null || value === undefined) return "None";
  if (typeof value === "boolean") return value ? "True" : "False";
  if (Array.isArray(value)) return `[${value.map(pyLiteral).join(", ")}]`;
  if (typeof value === "object") return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${pyLiteral(v)}`).join(", ")}}`;
  return JSON.stringify(value);
}

// Each snippet reproduces the request end to end with an unchanged fal client: every host fal's clients use
// (run, queue, storage) is pointed here, and an image picked in the form (uploaded to this server's /files/)
// becomes that client's own upload of a local file, as a user would send it.
function renderSnippet() {
  const form = readFormSafe();
  const origin = location.origin;
  const uploaded = typeof form.image_url === "string" && form.image_url.startsWith(`${origin}/files/`);
  if (uploaded) delete form.image_url;
  const body = JSON.stringify(form, null, 2);
  const python = [
    "# pip install fal-client; FAL_KEY: your fluxserve key (any value while auth is off)",
    "import fal_client",
    "# fal_client builds https:// URLs for fal's hosts: point each at this server, before the first call",
    `fal_client.client.RUN_URL_FORMAT = "${origin}/"`,
    `fal_client.client.QUEUE_URL_FORMAT = "${origin}/queue/"`,
    `fal_client.client.REST_URL = fal_client.client.CDN_URL = "${origin}"`,
    `arguments = ${pyLiteral(form)}`,
    ...(uploaded ? ['arguments["image_url"] = fal_client.upload_file("input.png")'] : []),
    `result = fal_client.subscribe("${current}", arguments=arguments, with_logs=True)`,
    "print(result)",
  ];
  const javascript = [
    'import { fal } from "@fal-ai/client";',
    ...(uploaded ? ['import { readFile } from "node:fs/promises";'] : []),
    "// FAL_KEY: your fluxserve key (any value while auth is off); run, queue and storage all point here",
    "fal.config({ credentials: process.env.FAL_KEY, requestMiddleware: async (r) => ({ ...r, url: r.url",
    `  .replace("https://queue.fal.run/", "${origin}/queue/").replace("https://fal.run/", "${origin}/")`,
    `  .replace("https://rest.fal.ai/", "${origin}/") }) });`,
    `const input = ${body};`,
    ...(uploaded ? ['input.image_url = await fal.storage.upload(new Blob([await readFile("input.png")], { type: "image/png" }));'] : []),
    `const result = await fal.subscribe("${current}", { input, logs: true });`,
    "console.log(JSON.stringify(result.data));",
  ];
  const openai = openaiSnippet(form, uploaded, origin);
  const curl = `curl -s ${origin}/${current} \\\n  -H "Authorization: Key $FAL_KEY" \\\n  -H 'Content-Type: application/json' \\\n  -d '${JSON.stringify(readFormSafe(), null, 2)}'`;
  const snippets = { curl, python: python.join("\n"), javascript: javascript.join("\n"), openai };
  $("snippet").textContent = snippets[snippetKind];
}

// fal's size presets as OpenAI's WIDTHxHEIGHT (core/sizing.py PRESETS; tests/api/test_playground.py checks).
const OPENAI_SIZES = {
  square_hd: "1024x1024", square: "512x512", portrait_4_3: "768x1024", portrait_16_9: "576x1024",
  landscape_4_3: "1024x768", landscape_16_9: "1024x576",
};

// The same request through the OpenAI SDK and fluxserve's /v1 routes: fal's parameters OpenAI has no name for
// travel under fal's names in extra_body; Redux is a variation of the image file.
function openaiSnippet(form, uploaded, origin) {
  const size = typeof form.image_size === "object" ? `${form.image_size.width}x${form.image_size.height}` : OPENAI_SIZES[form.image_size] ?? "1024x1024";
  const head = [
    "# pip install openai; api_key: your fluxserve key (any value while auth is off)",
    "import os",
    "from openai import OpenAI",
    `client = OpenAI(base_url="${origin}/v1", api_key=os.environ.get("FAL_KEY", "anything"))`,
  ];
  if (current.endsWith("/redux")) {
    return [...head,
      "# the picked image, uploaded as the multipart `image` (a local file; any URL needs fal's routes)",
      ...(uploaded ? [] : ["# (image_url is fal's: save that image as input.png)"]),
      `result = client.images.create_variation(image=open("input.png", "rb"), n=${form.num_images ?? 1}, size="${size}")`,
      "print(result.model_dump_json())"].join("\n");
  }
  const extra = {};
  for (const name of ["seed", "num_inference_steps", "acceleration", "enable_safety_checker"]) if (name in form) extra[name] = form[name];
  return [...head,
    `result = client.images.generate(prompt=${pyLiteral(form.prompt ?? "")}, n=${form.num_images ?? 1}, size="${size}",`,
    `                                output_format="${form.output_format ?? "jpeg"}", extra_body=${pyLiteral(extra)})`,
    "print(result.model_dump_json())"].join("\n");
}

function readFormSafe() { try { return readForm(); } catch (e) { return {}; } }

async function main() {
  openapi = await (await fetch("/openapi.json")).json();
  const nav = $("endpoints");
  for (const [app, label] of Object.entries(ENDPOINTS)) {
    if (!openapi.paths[`/${app}`]) continue;
    const b = document.createElement("button");
    b.textContent = label;
    b.dataset.app = app;
    b.onclick = () => { current = app; buildForm(); };
    nav.appendChild(b);
  }
  for (const kind of ["curl", "python", "javascript", "openai"]) {
    const b = document.createElement("button");
    b.textContent = kind;
    b.onclick = () => { snippetKind = kind; renderSnippet(); };
    $("snippet-tabs").appendChild(b);
  }
  localStorage.removeItem(KEY_ITEM); // where earlier versions kept it, readable by every later visit
  $("api-key").value = sessionStorage.getItem(KEY_ITEM) || "";
  $("submit").onclick = () => generate().catch((e) => { $("status").textContent = String(e); });
  $("form").oninput = renderSnippet;
  buildForm();
  renderHistory();
}

main();
