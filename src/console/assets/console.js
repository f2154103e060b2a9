// The vidpipe console: sign in with an API key, upload through tus, watch the
// uploads live through the key's events stream, play them.
//
// It talks only to the documented API of the server that serves it. Every
// value from the server or the user reaches the page as text
// (textContent, never innerHTML), so a filename is never markup.
"use strict";

const API = "/api/client/v1";
const KEY_STORAGE = "vidpipe.key";
const PAGE_SIZE = 20;
const CHUNK_SIZE = 8 * 1024 * 1024;
const STATUS_TEXT = { 1: "pending", 3: "processing", 5: "uploading", 6: "completed", 7: "failed" };

const $ = (id) => document.getElementById(id);

/** An element with its properties, attributes ("aria-*", "data-*") and children (text or nodes). */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("aria-") || name.startsWith("data-") || name === "role" || name === "for") {
      el.setAttribute(name, String(value));
    } else if (name === "class") {
      el.className = value;
    } else if (name.startsWith("on")) {
      el.addEventListener(name.slice(2), value);
    } else {
      el[name] = value;
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// ---- formatting ----------------------------------------------------------

function bytes(n) {
  if (!Number.isFinite(n)) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${n.toFixed(i === 0 || n >= 100 ? 0 : 1)} ${units[i]}`;
}

function duration(secs) {
  if (!Number.isFinite(secs)) return "";
  const s = Math.max(0, Math.round(secs));
  const m = Math.floor(s / 60);
  const hours = Math.floor(m / 60);
  const pad = (v) => String(v).padStart(2, "0");
  return hours ? `${hours}:${pad(m % 60)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
}

// ---- the API ---------------------------------------------------------------

class ApiFailure extends Error {
  constructor(status, body) {
    super((body && body.message) || `The server answered ${status}.`);
    this.status = status;
    this.code = body && body.code;
    this.errors = body && body.errors;
  }
}

let key = sessionStorage.getItem(KEY_STORAGE);

async function api(path, options = {}) {
  const response = await fetch(API + path, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: `Bearer ${key}` },
  });
  if (response.status === 204) return null;
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401 && path !== "/me") signOut("The key was refused; sign in again.");
    throw new ApiFailure(response.status, body);
  }
  return body;
}

/** A failure as one line: the message, and what each field's error says. */
function failureText(error) {
  if (!(error instanceof ApiFailure)) return `Cannot reach the server (${error.message}).`;
  const fields = error.errors ? Object.values(error.errors).flat().join(" ") : "";
  return fields ? `${error.message} ${fields}` : error.message;
}

function notify(text) {
  const notice = $("notice");
  notice.textContent = text;
  notice.classList.add("shown");
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => notice.classList.remove("shown"), 6000);
}

// ---- signing in ------------------------------------------------------------

async function signIn(candidate) {
  key = candidate;
  try {
    const me = await api("/me");
    sessionStorage.setItem(KEY_STORAGE, key);
    $("who").textContent = `Signed in as ${me.data.name} (${me.data.id})`;
    $("who").hidden = false;
    $("sign-out").hidden = false;
    $("sign-in").hidden = true;
    $("app").hidden = false;
    $("key").value = "";
    showUnfinished();
    // The stream first, then the list: a change made while the list loads
    // is not missed (a row from the stream is newer than the page's).
    const opened = new Promise((resolve) => {
      stream.opened = resolve;
      setTimeout(resolve, 3000);
    });
    follow();
    await opened;
    await reloadList();
    return true;
  } catch (error) {
    const refused = error instanceof ApiFailure && error.status === 401;
    // Kept through a server that is restarting; forgotten once refused.
    if (refused) sessionStorage.removeItem(KEY_STORAGE);
    key = null;
    $("sign-in").hidden = false;
    $("sign-in-error").textContent = refused
      ? "This key is not valid (unknown or revoked)."
      : failureText(error);
    return false;
  }
}

function signOut(reason) {
  sessionStorage.removeItem(KEY_STORAGE);
  key = null;
  stream.abort();
  stream.lastId = null;
  details.id = null;
  closeDetails();
  if ($("confirm").open) $("confirm").close();
  for (const transfer of transfers.values()) transfer.upload.abort(false);
  transfers.clear();
  $("transfers").replaceChildren();
  $("uploads").replaceChildren();
  rows.clear();
  $("app").hidden = true;
  $("who").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = reason || "";
  $("key").value = "";
  $("key").focus();
}

// ---- uploading through tus -------------------------------------------------

/** What is being sent, by a local id. */
const transfers = new Map();
let transferCount = 0;

function startUploads(files) {
  const folder = $("folder").value.trim() || "root";
  for (const file of files) {
    // A dropped folder arrives as an empty file with no type.
    if (file.size === 0 && !file.type) notify(`“${file.name}” is empty or a folder: not sent.`);
    else startUpload(file, folder);
  }
}

function startUpload(file, folder) {
  const id = ++transferCount;
  const bar = h("progress", { max: 100, value: 0, "aria-label": `Progress of ${file.name}` });
  const line = h("span", { class: "transfer-line" }, "Starting…");
  const cancel = h("button", { type: "button", class: "quiet", onclick: () => stop(true) }, "Cancel");
  const el = h(
    "li",
    { class: "transfer", "data-transfer": id },
    h("div", { class: "transfer-head" }, h("span", { class: "name" }, file.name), h("span", { class: "folder" }, folder)),
    bar,
    h("div", { class: "transfer-foot" }, line, cancel),
  );
  $("transfers").prepend(el);

  const samples = [];
  let cancelled = false;
  const upload = new tus.Upload(file, {
    endpoint: `${location.origin}${API}/tus`,
    headers: { Authorization: `Bearer ${key}` },
    metadata: { filename: file.name, folder },
    chunkSize: CHUNK_SIZE,
    retryDelays: [0, 1000, 3000, 5000, 10000, 20000],
    removeFingerprintOnSuccess: true,
    onUploadUrlAvailable() {
      // Cancelled while its creation was on the way: now it can be terminated.
      if (cancelled) upload.abort(true).catch(() => {});
    },
    onProgress(sent, total) {
      const now = performance.now();
      samples.push([now, sent]);
      while (samples.length > 2 && now - samples[0][0] > 5000) samples.shift();
      const [t0, b0] = samples[0];
      const speed = now > t0 ? ((sent - b0) * 1000) / (now - t0) : 0;
      const left = speed > 0 ? (total - sent) / speed : NaN;
      bar.value = total ? (sent * 100) / total : 0;
      // The browser counts what its network stack took, which on a slow
      // link runs ahead of what the server has.
      line.textContent =
        sent >= total
          ? `${bytes(total)} handed to the network; waiting for the server to confirm…`
          : `${bytes(sent)} of ${bytes(total)}` +
            (speed > 0 ? ` · ${bytes(speed)}/s · ${duration(left)} left` : "");
    },
    onError(error) {
      const status = error.originalResponse && error.originalResponse.getStatus();
      let text = "The upload stopped.";
      try {
        const body = JSON.parse(error.originalResponse.getBody());
        text = failureText(new ApiFailure(status, body));
      } catch {
        if (!status) text = "The connection is lost; choose the file again to resume.";
      }
      line.textContent = text;
      el.classList.add("failed");
      cancel.textContent = "Dismiss";
      cancel.onclick = () => stop(false);
    },
    onSuccess() {
      bar.value = 100;
      line.textContent = `Sent ${bytes(file.size)}; processing starts.`;
      cancel.hidden = true;
      transfers.delete(id);
      setTimeout(() => el.remove(), 4000);
      showUnfinished();
    },
  });
  transfers.set(id, { upload, el });

  function stop(terminate) {
    cancelled = terminate;
    // Before the server has answered the creation there is no URL to
    // terminate: the creation goes on, and onUploadUrlAvailable ends it.
    if (!terminate || upload.url) upload.abort(terminate).catch(() => {});
    transfers.delete(id);
    el.remove();
    if (terminate) setTimeout(showUnfinished, 500);
  }

  upload.findPreviousUploads().then((previous) => {
    // Not one another page of this tab is still sending: two writers would take turns.
    const busy = new Set([...transfers.values()].map((t) => t.upload.url).filter(Boolean));
    const same = previous.find(
      (p) => p.metadata && p.metadata.folder === folder && !busy.has(p.uploadUrl),
    );
    if (same) {
      upload.resumeFromPreviousUpload(same);
      line.textContent = "Resuming where it stopped…";
      el.dataset.resumed = "true";
    }
    if (!cancelled) upload.start();
  });
}

/** The uploads this browser began and did not finish (tus-js-client's URL storage). */
async function showUnfinished() {
  const storage = tus.defaultOptions.urlStorage;
  const all = storage && storage.findAllUploads ? await storage.findAllUploads() : [];
  const sending = new Set([...transfers.values()].map((t) => t.upload.url));
  const list = $("unfinished-list");
  list.replaceChildren();
  for (const entry of all) {
    if (sending.has(entry.uploadUrl)) continue;
    const name = (entry.metadata && entry.metadata.filename) || "video";
    const folder = (entry.metadata && entry.metadata.folder) || "";
    const discard = h("button", { type: "button", class: "quiet" }, "Discard");
    discard.addEventListener("click", async () => {
      if (entry.uploadUrl) {
        await fetch(entry.uploadUrl, {
          method: "DELETE",
          headers: { Authorization: `Bearer ${key}`, "Tus-Resumable": "1.0.0" },
        }).catch(() => {});
      }
      await storage.removeUpload(entry.urlStorageKey);
      showUnfinished();
    });
    list.append(
      h("li", {}, h("span", { class: "name" }, name), ` in ${folder}, ${bytes(entry.size)} `, discard),
    );
  }
  $("unfinished").hidden = list.children.length === 0;
}

// ---- the list of uploads ---------------------------------------------------

/** The rows shown, by upload id: the record and its element. */
const rows = new Map();
let nextCursor = null;
let filters = { status: "", folder: "" };
/** Which load of the list is current: an answer to an older one is dropped. */
let listGeneration = 0;
/** Uploads deleted while a page was on its way: the page must not bring them back. */
const deletedWhileLoading = new Set();
/** Records the events stream brought while a page was on its way, by id. */
const changedWhileLoading = new Map();
let listLoading = false;

function matches(record) {
  return (
    (!filters.status || String(record.status) === filters.status) &&
    (!filters.folder || record.folder === filters.folder)
  );
}

/** The list again from its first page, swapped in whole when that page is
 * here: the rows shown stay until then, so the list never flashes empty. */
async function reloadList() {
  listGeneration += 1;
  nextCursor = null;
  await loadPage(true);
}

/** The newer of a record from a page and one the events stream brought meanwhile. */
function newest(fetched) {
  const streamed = changedWhileLoading.get(fetched.id);
  return streamed && Date.parse(streamed.updated_at) >= Date.parse(fetched.updated_at) ? streamed : fetched;
}

async function loadPage(replace = false) {
  const generation = listGeneration;
  deletedWhileLoading.clear();
  changedWhileLoading.clear();
  listLoading = true;
  $("more").disabled = true;
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (filters.status) query.set("status", filters.status);
  if (filters.folder) query.set("folder", filters.folder);
  if (nextCursor) query.set("cursor", nextCursor);
  $("list-error").textContent = "";
  try {
    const page = await api(`/uploads?${query}`);
    if (generation !== listGeneration) return;
    if (replace) {
      rows.clear();
      $("uploads").replaceChildren();
    }
    for (const record of page.data.map(newest)) {
      if (!rows.has(record.id) && !deletedWhileLoading.has(record.id) && matches(record)) {
        $("uploads").append(row(record));
      }
    }
    nextCursor = page.next_cursor || null;
    // Uploads the stream brought that the page did not have (newer ones) take their place.
    if (replace) for (const record of changedWhileLoading.values()) if (!rows.has(record.id)) apply(record);
  } catch (error) {
    if (generation !== listGeneration) return;
    // A list under other filters, or one the server said to reload, is not shown as if current.
    if (replace) {
      rows.clear();
      $("uploads").replaceChildren();
    }
    $("list-error").textContent = failureText(error);
  }
  listLoading = false;
  changedWhileLoading.clear();
  $("more").disabled = false;
  $("more").hidden = !nextCursor;
  $("empty").hidden = rows.size > 0;
}

/** A new row for `record`, remembered in `rows`. */
function row(record) {
  const el = h("li", { class: "upload", "data-id": record.id });
  rows.set(record.id, { record, el });
  fill(el, record);
  return el;
}

function statusBadge(record) {
  const text = record.status_text || STATUS_TEXT[record.status] || String(record.status);
  return h("span", { class: `badge s${record.status}`, "data-status": record.status }, text);
}

function sourceLine(source) {
  if (!source) return null;
  const parts = [];
  if (source.width && source.height) parts.push(`${source.width}×${source.height}`);
  if (source.duration) parts.push(duration(source.duration));
  if (source.frame_rate) parts.push(`${Math.round(source.frame_rate * 100) / 100} fps`);
  const codecs = [source.video_codec, source.audio_codec].filter(Boolean).join(" / ");
  if (codecs) parts.push(codecs);
  return h("p", { class: "source" }, parts.join(" · "));
}

/** Shows `record` in its row. */
function fill(el, record) {
  const poster = record.playback && record.playback.poster_url;
  const thumb = poster
    ? h("img", { class: "thumb", src: poster, alt: "", loading: "lazy" })
    : h("div", { class: "thumb empty", "aria-hidden": "true" });
  const open = h("button", { type: "button", class: "link name", onclick: () => openDetails(record.id) }, record.filename);
  const focused = el.contains(document.activeElement) && document.activeElement.classList.contains("name");
  const busy = record.status === 1 || record.status === 3 || record.status === 5;
  const progress = busy
    ? h("progress", {
        max: 100,
        value: record.progress || 0,
        "aria-label": `Processing ${record.filename}`,
      })
    : null;
  el.replaceChildren(
    thumb,
    h(
      "div",
      { class: "upload-main" },
      open,
      h("p", { class: "meta" }, `${record.folder} · ${bytes(record.size_bytes)} · ${when(record.created_at)}`),
      h(
        "div",
        { class: "status-line" },
        statusBadge(record),
        progress,
        busy ? h("span", { class: "pct" }, `${record.progress || 0}%`) : null,
      ),
      sourceLine(record.source),
      record.error ? h("p", { class: "error reason" }, record.error.message || record.error.code) : null,
    ),
  );
  el.dataset.status = String(record.status);
  if (focused) open.focus();
}

/** An upload changed (or appeared): its row follows, and the open details too. */
function apply(record) {
  if (listLoading) changedWhileLoading.set(record.id, record);
  const shown = rows.get(record.id);
  if (shown) {
    if (!matches(record)) {
      shown.el.remove();
      rows.delete(record.id);
    } else {
      shown.record = record;
      fill(shown.el, record);
    }
  } else if (matches(record)) {
    // Newest first: before the first row shown that is older. A record older
    // than every row of a list that goes on is left to its own page.
    const list = $("uploads");
    const older = [...list.children].find((el) => {
      const other = rows.get(el.dataset.id);
      return other && Date.parse(other.record.created_at) < Date.parse(record.created_at);
    });
    if (older) list.insertBefore(row(record), older);
    else if (!nextCursor) list.append(row(record));
  }
  $("empty").hidden = rows.size > 0;
  if (details.id === record.id) showDetails(record);
}

function forget(id) {
  deletedWhileLoading.add(id);
  changedWhileLoading.delete(id);
  const shown = rows.get(id);
  if (shown) shown.el.remove();
  rows.delete(id);
  $("empty").hidden = rows.size > 0;
  if (details.id === id) {
    details.id = null;
    closeDetails();
  }
}

// ---- the key's events stream -------------------------------------------------

const stream = {
  controller: null,
  lastId: null,
  opened: null,
  abort() {
    if (this.controller) this.controller.abort();
    this.controller = null;
  },
};

function live(text, ok) {
  $("live").textContent = text;
  $("live").classList.toggle("on", ok);
}

/** Reads `GET /events` while signed in, reconnecting with `Last-Event-ID`. */
async function follow() {
  stream.abort();
  const controller = new AbortController();
  stream.controller = controller;
  let delay = 1000;
  while (stream.controller === controller) {
    try {
      const headers = { Authorization: `Bearer ${key}` };
      if (stream.lastId) headers["Last-Event-ID"] = stream.lastId;
      const response = await fetch(`${API}/events`, { headers, signal: controller.signal });
      if (response.status === 401) return signOut("The key was refused; sign in again.");
      if (!response.ok) throw new ApiFailure(response.status, await response.json().catch(() => null));
      live("Live", true);
      if (stream.opened) stream.opened();
      delay = 1000;
      await readEvents(response.body);
      if (stream.controller !== controller) return;
      live("Reconnecting…", false);
    } catch (error) {
      if (controller.signal.aborted) return;
      live(error instanceof ApiFailure ? `Not live: ${error.message}` : "Reconnecting…", false);
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

/** Longest silence of a live stream: the server sends a keep-alive every 15 s. */
const STREAM_SILENCE_MS = 40000;

async function readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    let timer;
    const silent = new Promise((resolve) => {
      timer = setTimeout(() => resolve({ silent: true }), STREAM_SILENCE_MS);
    });
    const next = await Promise.race([reader.read(), silent]);
    clearTimeout(timer);
    if (next.silent) {
      // A connection gone without a word (a sleeping laptop, a dropped NAT entry).
      reader.cancel().catch(() => {});
      return;
    }
    const { value, done } = next;
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      dispatch(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
    }
  }
}

/** One event block of the stream. */
function dispatch(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") stream.lastId = value;
  }
  if (!data.length) return;
  const payload = JSON.parse(data.join("\n"));
  if (event === "upload") apply(payload);
  else if (event === "deleted") forget(payload.id);
  else if (event === "resync") reloadList();
}

// ---- one upload: details, player, storyboard ---------------------------------

const details = { id: null, record: null, hls: null, storyboard: null, shownUrl: null };

async function openDetails(id) {
  details.id = id;
  try {
    const body = await api(`/uploads/${id}`);
    showDetails(body.data);
    if (!$("details").open) $("details").showModal();
  } catch (error) {
    notify(failureText(error));
  }
}

function closeDetails() {
  stopPlayer();
  details.storyboard = null;
  if ($("details").open) $("details").close();
}

/** Stops what the player plays (a cancelled or deleted upload's files answer 404). */
function stopPlayer() {
  if (details.hls) details.hls.destroy();
  details.hls = null;
  details.shownUrl = null;
  const video = $("player");
  video.pause();
  video.removeAttribute("src");
  video.load();
}

function showDetails(record) {
  details.record = record;
  $("details-title").textContent = record.filename;
  const busy = record.status === 1 || record.status === 3 || record.status === 5;
  $("details-status").replaceChildren(
    h(
      "span",
      { class: "status-line" },
      statusBadge(record),
      busy ? h("progress", { max: 100, value: record.progress || 0, "aria-label": "Processing" }) : null,
      busy ? h("span", { class: "pct" }, `${record.progress || 0}%`) : null,
      record.error ? h("span", { class: "error" }, record.error.message || record.error.code) : null,
    ),
  );
  $("do-cancel").hidden = !(record.status === 1 || record.status === 3);
  $("do-retry").hidden = record.status !== 7;
  // While it is processed, the ladder plays from its preview as it is written.
  const preview = !record.playback && record.preview;
  const playback = record.playback || (preview && { hls_url: preview.hls_url });
  $("player-box").hidden = !playback;
  $("preview-note").hidden = !preview;
  if (!playback && details.shownUrl) stopPlayer();
  else if (playback && details.shownUrl !== (playback.hls_url || playback.mp4_url)) play(playback);
  $("details-body").replaceChildren(...infoSections(record));
}

function play(playback) {
  const video = $("player");
  if (details.hls) details.hls.destroy();
  details.hls = null;
  details.shownUrl = playback.hls_url || playback.mp4_url;
  video.poster = playback.poster_url || "";
  const quality = $("quality");
  quality.replaceChildren(h("option", { value: "-1" }, "Auto"));
  quality.disabled = true;
  quality.parentElement.hidden = true;
  if (playback.hls_url && window.Hls && Hls.isSupported()) {
    // No worker: the page's policy allows none.
    const hls = new Hls({ enableWorker: false });
    details.hls = hls;
    hls.on(Hls.Events.MANIFEST_PARSED, (_, data) => {
      data.levels.forEach((level, i) => {
        quality.append(h("option", { value: String(i) }, `${level.height}p · ${bytes(level.bitrate / 8)}/s`));
      });
      quality.disabled = false;
      quality.parentElement.hidden = false;
    });
    let recovered = false;
    hls.on(Hls.Events.ERROR, (_, data) => {
      if (!data.fatal) return;
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR && !recovered) {
        recovered = true;
        hls.recoverMediaError();
        return;
      }
      hls.destroy();
      details.hls = null;
      quality.parentElement.hidden = true;
      if (!playback.mp4_url) {
        notify(`The preview did not play (${data.details}); it plays once processed.`);
        return;
      }
      // HLS does not play here: the MP4 does.
      video.src = playback.mp4_url;
      notify(`HLS did not play (${data.details}); playing the MP4.`);
    });
    hls.loadSource(playback.hls_url);
    hls.attachMedia(video);
  } else if (playback.hls_url && video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = playback.hls_url; // native HLS picks the quality itself
  } else if (playback.mp4_url) {
    video.src = playback.mp4_url;
  } else {
    video.removeAttribute("src"); // a preview, and no HLS here: it plays once processed
  }
  loadStoryboard(playback.storyboard_url);
}

/** The storyboard's cues: [{start, end, url, x, y, w, h}], from its WebVTT file. */
async function loadStoryboard(url) {
  details.storyboard = null;
  const tile = $("tile");
  tile.hidden = true;
  tile.style.backgroundImage = "none";
  delete tile.dataset.cue;
  if (!url) return;
  const id = details.id;
  try {
    const response = await fetch(url);
    if (!response.ok) return;
    const text = await response.text();
    if (details.id === id) details.storyboard = parseStoryboard(text, response.url || url);
  } catch {
    // No previews: the seek bar still seeks.
  }
}

function seconds(stamp) {
  const parts = stamp.trim().split(":").map(Number);
  return parts.reduce((total, part) => total * 60 + part, 0);
}

function parseStoryboard(text, base) {
  const cues = [];
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  for (let i = 0; i < lines.length; i += 1) {
    const times = lines[i].split("-->");
    if (times.length !== 2) continue;
    const ref = (lines[i + 1] || "").trim();
    const [file, fragment] = ref.split("#xywh=");
    if (!fragment) continue;
    const [x, y, w, hgt] = fragment.split(",").map(Number);
    cues.push({ start: seconds(times[0]), end: seconds(times[1]), url: new URL(file, base).href, x, y, w, h: hgt });
  }
  return cues;
}

function scrubTime(event) {
  const scrub = $("scrub");
  const rect = scrub.getBoundingClientRect();
  const fraction = Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width));
  return { fraction, time: fraction * ($("player").duration || 0) };
}

function showTile(event) {
  const { fraction, time } = scrubTime(event);
  const tile = $("tile");
  const cues = details.storyboard || [];
  const cue = cues.find((c) => time >= c.start && time < c.end) || cues[cues.length - 1];
  $("tile-time").textContent = duration(time);
  if (cue) {
    tile.style.width = `${cue.w}px`;
    tile.style.height = `${cue.h}px`;
    tile.style.backgroundImage = `url("${cue.url}")`;
    tile.style.backgroundPosition = `-${cue.x}px -${cue.y}px`;
    tile.dataset.cue = `${cue.x},${cue.y}`;
  }
  if (!cue) {
    tile.style.backgroundImage = "none";
    delete tile.dataset.cue;
  }
  const width = $("scrub").getBoundingClientRect().width;
  const half = (cue ? cue.w : 60) / 2;
  tile.style.left = `${Math.min(width - half, Math.max(half, fraction * width)) - half}px`;
  tile.hidden = false;
}

function seekBy(delta) {
  const video = $("player");
  if (Number.isFinite(video.duration)) video.currentTime = Math.min(video.duration, Math.max(0, video.currentTime + delta));
}

function showPlayed() {
  const video = $("player");
  const total = video.duration || 0;
  $("scrub-fill").style.width = total ? `${(video.currentTime * 100) / total}%` : "0";
  const scrub = $("scrub");
  scrub.setAttribute("aria-valuemax", String(Math.round(total)));
  scrub.setAttribute("aria-valuenow", String(Math.round(video.currentTime)));
  scrub.setAttribute("aria-valuetext", `${duration(video.currentTime)} of ${duration(total)}`);
}

function copyButton(text, label) {
  return h(
    "button",
    {
      type: "button",
      class: "quiet copy",
      "aria-label": `Copy ${label}`,
      onclick: async (event) => {
        const button = event.currentTarget;
        try {
          await navigator.clipboard.writeText(text);
          button.textContent = "Copied";
        } catch {
          button.textContent = "Select and copy";
        }
        setTimeout(() => (button.textContent = "Copy"), 2000);
      },
    },
    "Copy",
  );
}

function urlRow(label, url) {
  return h(
    "li",
    {},
    h("span", { class: "url-label" }, label),
    h("a", { href: url, class: "url", target: "_blank", rel: "noopener" }, url),
    copyButton(url, label),
  );
}

function infoSections(record) {
  const sections = [];
  const facts = [
    ["Id", record.id],
    ["Folder", record.folder],
    ["Size", bytes(record.size_bytes)],
    ["Created", when(record.created_at)],
    ["Updated", when(record.updated_at)],
  ];
  const source = record.source;
  if (source) {
    if (source.width) facts.push(["Source", `${source.width}×${source.height}, ${duration(source.duration)}`]);
    if (source.video_codec) facts.push(["Video", `${source.video_codec}${source.frame_rate ? `, ${Math.round(source.frame_rate * 100) / 100} fps` : ""}`]);
    facts.push(["Audio", source.audio_codec || "none"]);
    if (source.bit_rate) facts.push(["Bit rate", `${bytes(source.bit_rate / 8)}/s`]);
  }
  sections.push(h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
  const playback = record.playback;
  if (playback) {
    const urls = [["MP4", playback.mp4_url], ["Poster", playback.poster_url]];
    if (playback.hls_url) urls.push(["HLS", playback.hls_url]);
    if (playback.storyboard_url) urls.push(["Storyboard", playback.storyboard_url]);
    sections.push(
      h("h3", {}, "Files"),
      h("p", {}, h("a", { href: playback.mp4_url, download: record.filename, class: "button" }, "Download MP4")),
      h("ul", { class: "urls" }, urls.map(([label, url]) => urlRow(label, url))),
    );
  }
  if (record.renditions && record.renditions.length) {
    sections.push(
      h("h3", {}, "Renditions"),
      h(
        "table",
        { class: "renditions" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Size"), h("th", {}, "Peak"), h("th", {}, "Playlist"))),
        h(
          "tbody",
          {},
          record.renditions.map((r) =>
            h(
              "tr",
              {},
              h("td", {}, r.name),
              h("td", {}, `${r.width}×${r.height}`),
              h("td", {}, `${bytes(r.bandwidth / 8)}/s`),
              h("td", {}, copyButton(r.playlist_url, `${r.name} playlist URL`)),
            ),
          ),
        ),
      ),
    );
  }
  if (playback) {
    const embed =
      `<video controls preload="metadata" playsinline\n` +
      `  poster="${playback.poster_url}"\n  src="${playback.mp4_url}"></video>`;
    sections.push(
      h("h3", {}, "Embed"),
      h("textarea", { class: "embed", readOnly: true, rows: 3, value: embed, "aria-label": "Embed snippet" }),
      copyButton(embed, "embed snippet"),
    );
  }
  return sections;
}

async function act(path, method, done) {
  try {
    const body = await api(path, { method });
    if (body && body.data) apply(body.data);
    done && done();
  } catch (error) {
    notify(failureText(error));
  }
}

// ---- wiring ---------------------------------------------------------------

function wire() {
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("key").value.trim());
  });
  $("sign-out").addEventListener("click", () => signOut());

  // A file dropped anywhere else would replace the page (and stop its uploads).
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    startUploads([...event.dataTransfer.files]);
  });
  $("files").addEventListener("change", (event) => {
    startUploads([...event.target.files]);
    event.target.value = "";
  });

  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    filters = { status: $("filter-status").value, folder: $("filter-folder").value.trim() };
    reloadList();
  });
  $("more").addEventListener("click", () => loadPage());

  $("details-close").addEventListener("click", () => {
    details.id = null;
    closeDetails();
  });
  $("details").addEventListener("close", () => {
    details.id = null;
    closeDetails();
  });
  $("do-cancel").addEventListener("click", () => {
    // A cancelled upload's preview is gone: stop it playing first.
    stopPlayer();
    act(`/uploads/${details.id}/cancel`, "POST");
  });
  $("do-retry").addEventListener("click", () => act(`/uploads/${details.id}/retry`, "POST"));
  $("do-delete").addEventListener("click", () => {
    $("confirm-text").textContent = `“${details.record.filename}” and all its files will be removed. This cannot be undone.`;
    $("confirm").showModal();
  });
  $("confirm-no").addEventListener("click", () => $("confirm").close());
  $("confirm-yes").addEventListener("click", () => {
    const id = details.id;
    $("confirm").close();
    stopPlayer();
    act(`/uploads/${id}`, "DELETE", () => forget(id));
  });

  const video = $("player");
  video.addEventListener("timeupdate", showPlayed);
  video.addEventListener("durationchange", showPlayed);
  const scrub = $("scrub");
  scrub.addEventListener("pointermove", showTile);
  scrub.addEventListener("pointerleave", () => ($("tile").hidden = true));
  scrub.addEventListener("click", (event) => {
    const { time } = scrubTime(event);
    if (Number.isFinite(time)) video.currentTime = time;
  });
  scrub.addEventListener("keydown", (event) => {
    const step = { ArrowLeft: -5, ArrowRight: 5, PageDown: -30, PageUp: 30 }[event.key];
    if (step) {
      event.preventDefault();
      seekBy(step);
    }
  });
  $("quality").addEventListener("change", (event) => {
    if (details.hls) details.hls.currentLevel = Number(event.target.value);
  });
}

wire();
if (key) signIn(key);
else $("sign-in").hidden = false;
