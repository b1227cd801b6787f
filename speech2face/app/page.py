"""The web app's one page: self-contained HTML, CSS and JavaScript (no CDN, nothing fetched
but this server's own /predict and /health).

Record from the microphone (getUserMedia + MediaRecorder; browsers allow the microphone only on
http://localhost / 127.0.0.1 or over https, and the page says so when it is not allowed) or
upload an audio/video file; the face comes back from POST /predict as a PNG. The exaggeration
slider (0 to 1.4, the paper's renders used 0, 0.7 and 1.4) re-requests the face for the same
clip. Without JavaScript the upload form still posts to /predict and the browser shows the PNG.
"""

import html

RECORD_SECONDS = 6  # the recorder stops by itself here: the model listens to the first 6 s

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Speech2Face: a face from your voice</title>
<link rel="icon" href="data:,">
<style>
  body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 1.5rem auto;
         padding: 0 1rem; color: #222; line-height: 1.45; }
  h1 { font-size: 1.5rem; margin-bottom: .2rem; }
  .sub { color: #555; margin-top: 0; }
  .row { display: flex; gap: 1.5rem; flex-wrap: wrap; align-items: flex-start; }
  .panel { flex: 1 1 18rem; border: 1px solid #ddd; border-radius: 8px; padding: .8rem 1rem; }
  .panel h2 { font-size: 1.05rem; margin: .2rem 0 .6rem; }
  button { font-size: 1rem; padding: .45rem 1rem; border-radius: 6px; border: 1px solid #888;
           background: #f4f4f4; cursor: pointer; }
  button.recording { background: #c62828; color: #fff; border-color: #c62828; }
  .note { font-size: .88rem; color: #555; }
  .warn { font-size: .9rem; background: #fff4e0; border: 1px solid #f0c36d; padding: .5rem .7rem;
          border-radius: 6px; }
  #status { min-height: 1.4rem; }
  #error { color: #b00020; white-space: pre-wrap; }
  #result { text-align: center; }
  #face { width: 256px; height: 256px; image-rendering: auto; border-radius: 8px;
          box-shadow: 0 1px 6px rgba(0,0,0,.25); background: #eee; }
  .slider { display: flex; align-items: center; gap: .6rem; flex-wrap: wrap; }
  input[type=range] { width: 14rem; }
  audio { width: 100%; margin-top: .5rem; }
  code { background: #f2f2f2; padding: 0 .2rem; border-radius: 3px; }
</style>
</head>
<body>
<h1>Speech2Face: a face from your voice</h1>
<p class="sub">Record a few seconds of speech or upload a clip; the model predicts a face from the
voice alone (Oh et al., CVPR 2019). It listens to the first __SEGMENT__ s (a shorter clip is
repeated; at least __MIN__ s).</p>

<div class="row">
  <div class="panel">
    <h2>Record</h2>
    <button id="record" type="button">&#9679; Record</button>
    <span id="timer" class="note"></span>
    <p class="note">Speak for about __RECORD__ s; recording stops by itself then. Browsers allow
    the microphone only on <code>http://localhost</code> / <code>127.0.0.1</code> or over
    <code>https</code>: from another machine, use an ssh tunnel
    (<code>ssh -L 8000:127.0.0.1:8000 host</code>) or https.</p>
    <p id="mic-warning" class="warn" hidden>The microphone is not available on this page: it is
    not a secure context (not localhost or https) or this browser has no MediaRecorder.
    Upload a file instead, or open the page as <code>http://127.0.0.1:PORT/</code> on the machine
    running the server.</p>
  </div>
  <div class="panel">
    <h2>Upload</h2>
    <form id="upload-form" action="predict" method="post" enctype="multipart/form-data">
      <input id="file" type="file" name="audio" accept="audio/*,video/*">
      <p class="note">Any audio or video file with an audio track (wav, flac, mp3, m4a, ogg, mp4,
      webm, ...), up to __MAXMB__ MB.</p>
      <button id="submit" type="submit">Predict face</button>
      <input id="exaggeration-field" type="hidden" name="exaggeration" value="0">
    </form>
  </div>
</div>

<div class="panel" style="margin-top:1.2rem">
  <div class="slider">
    <label for="exaggeration">Exaggeration <b id="exaggeration-value">0.0</b></label>
    <input id="exaggeration" type="range" min="0" max="1.4" step="0.1" value="0"
           list="paper-values">
    <datalist id="paper-values"><option value="0"></option><option value="0.7"></option>
      <option value="1.4"></option></datalist>
    <span class="note">the paper's renders:
      <button type="button" class="preset" data-value="0">0</button>
      <button type="button" class="preset" data-value="0.7">0.7</button>
      <button type="button" class="preset" data-value="1.4">1.4</button></span>
  </div>
  <p class="note">Exaggeration e decodes mean + (1 + e)(v<sub>s</sub> &minus; mean): e &gt; 0
  stresses what sets this voice's face apart from the average face.</p>
  <div id="status" class="note"></div>
  <div id="error" role="alert"></div>
  <div id="result" hidden>
    <img id="face" alt="The face predicted from the voice" width="256" height="256">
    <div id="caption" class="note"></div>
  </div>
  <audio id="playback" controls hidden></audio>
  <p id="model" class="note"></p>
</div>

<script>
"use strict";
const MAX_BYTES = __MAXBYTES__, RECORD_SECONDS = __RECORD__;
const $ = (id) => document.getElementById(id);
let clip = null, clipName = "", faceUrl = null, clipUrl = null;
let busy = false, again = false, recorder = null, ticker = null;

function status(text) { $("status").textContent = text; }
function fail(text) { $("error").textContent = text; status(""); }

function setClip(blob, name) {
  clip = blob; clipName = name;
  if (clipUrl) URL.revokeObjectURL(clipUrl);
  clipUrl = URL.createObjectURL(blob);
  $("playback").src = clipUrl; $("playback").hidden = false;
}

async function predict() {
  if (!clip) { fail("Record or choose a clip first."); return; }
  if (clip.size > MAX_BYTES) {
    fail(clipName + ": " + (clip.size / 1048576).toFixed(1) + " MB is over the server's limit of "
         + (MAX_BYTES / 1048576) + " MB."); return;
  }
  if (busy) { again = true; return; }
  busy = true; $("error").textContent = "";
  const e = $("exaggeration").value;
  status("Predicting the face from " + clipName + " (exaggeration " + e + ")...");
  const body = new FormData();
  body.append("audio", clip, clipName);
  body.append("exaggeration", e);
  try {
    const response = await fetch("predict", {method: "POST", body: body});
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try { message = (await response.json()).error || message; } catch (err) { /* text */ }
      fail(message);
    } else {
      const seconds = response.headers.get("X-Audio-Seconds");
      const blob = await response.blob();
      if (faceUrl) URL.revokeObjectURL(faceUrl);
      faceUrl = URL.createObjectURL(blob);
      $("face").src = faceUrl;
      $("result").hidden = false;
      $("caption").textContent = clipName + (seconds ? " (" + seconds + " s)" : "")
        + ", exaggeration " + e;
      status("");
    }
  } catch (err) {
    fail("Could not reach the server: " + err);
  } finally {
    busy = false;
    if (again) { again = false; predict(); }
  }
}

$("upload-form").addEventListener("submit", (event) => { event.preventDefault(); predict(); });
$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (file) { setClip(file, file.name); predict(); }
});

function setExaggeration(value) {
  $("exaggeration").value = value;
  $("exaggeration-value").textContent = Number(value).toFixed(1);
  $("exaggeration-field").value = value;
}
$("exaggeration").addEventListener("input", () => setExaggeration($("exaggeration").value));
$("exaggeration").addEventListener("change", () => { if (clip) predict(); });
for (const button of document.querySelectorAll(".preset")) {
  button.addEventListener("click", () => {
    setExaggeration(button.dataset.value); if (clip) predict();
  });
}

const micOk = window.isSecureContext && navigator.mediaDevices
  && navigator.mediaDevices.getUserMedia && window.MediaRecorder;
if (!micOk) { $("mic-warning").hidden = false; $("record").disabled = true; }

function recordingType() {
  const types = ["audio/webm;codecs=opus", "audio/webm", "audio/ogg;codecs=opus", "audio/mp4"];
  return types.find((t) => MediaRecorder.isTypeSupported(t)) || "";
}

$("record").addEventListener("click", async () => {
  if (recorder && recorder.state === "recording") { recorder.stop(); return; }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({audio: true});
  } catch (err) {
    fail("Microphone not available: " + err.message); return;
  }
  const type = recordingType();
  recorder = new MediaRecorder(stream, type ? {mimeType: type} : {});
  const chunks = [], started = Date.now();
  recorder.ondataavailable = (event) => { if (event.data.size) chunks.push(event.data); };
  recorder.onstop = () => {
    clearInterval(ticker);
    stream.getTracks().forEach((track) => track.stop());
    $("record").classList.remove("recording");
    $("record").innerHTML = "&#9679; Record";
    const mime = recorder.mimeType || type || "audio/webm";
    const ext = mime.includes("ogg") ? "ogg" : mime.includes("mp4") ? "m4a" : "webm";
    const seconds = (Date.now() - started) / 1000;
    $("timer").textContent = seconds.toFixed(1) + " s recorded";
    setClip(new Blob(chunks, {type: mime}), "recording." + ext);
    predict();
  };
  recorder.start(250);
  $("error").textContent = "";
  $("record").classList.add("recording");
  $("record").innerHTML = "&#9632; Stop";
  ticker = setInterval(() => {
    const seconds = (Date.now() - started) / 1000;
    $("timer").textContent = "recording " + seconds.toFixed(1) + " s";
    if (seconds >= RECORD_SECONDS && recorder.state === "recording") recorder.stop();
  }, 100);
});

fetch("health").then((r) => r.json()).then((info) => {
  const step = info.steps ? info.steps.encoder : null;
  const steps = step != null ? ", encoder step " + step : "";
  $("model").textContent = "Model: " + (info.model || "?") + steps + "; faces "
    + info.face_size + " px, shown at " + info.image_size + " px.";
}).catch(() => {});
</script>
</body>
</html>
"""


def render(max_upload_bytes: int, min_seconds: float, segment_seconds: float) -> str:
    """The page with the server's limits filled in."""
    values = {"__MAXBYTES__": str(int(max_upload_bytes)),
              "__MAXMB__": html.escape(f"{max_upload_bytes / 2**20:g}"),
              "__MIN__": html.escape(f"{min_seconds:g}"),
              "__SEGMENT__": html.escape(f"{segment_seconds:g}"),
              "__RECORD__": str(RECORD_SECONDS)}
    text = _TEMPLATE
    for key, value in values.items():
        text = text.replace(key, value)
    return text
