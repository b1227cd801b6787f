"""The web app (speech2face/app, docs/app.md): the page, POST /predict and GET /health through
Starlette's TestClient on the tiny trained model, and one real headless Chromium driving the page
against the server started as a subprocess (skipped when Chromium is not installed).

    SPEECH2FACE_APP_SCREENSHOT=docs/images/app.png python -m pytest tests/test_app.py -k browser

also keeps the browser test's screenshot there.
"""

import io
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
from PIL import Image
import pytest
from starlette.testclient import TestClient

import speech2face
from speech2face.app import server
from speech2face.models import artifact
from tests.support import fake_media, helpers

REPO = pathlib.Path(__file__).resolve().parents[1]
BROWSER_INSTALL = ("Chromium and its driver are not installed: apt-get install -y chromium "
                   "chromium-driver (Debian/Ubuntu; the test looks for `chromium` and "
                   "`chromedriver` on PATH)")


@pytest.fixture(scope="module")
def model_dir(tiny_models, tmp_path_factory):
    """A model directory written from the tiny training runs (no SavedModel: faster)."""
    out = tmp_path_factory.mktemp("app") / "model"
    return artifact.write_model(tiny_models.encoder_dir, str(out),
                                decoder_dir=tiny_models.decoder_dir, saved_model=False)


@pytest.fixture(scope="module")
def model(model_dir):
    return speech2face.load_model(model_dir)


@pytest.fixture(scope="module")
def client(model):
    with TestClient(server.create_app(model)) as c:
        yield c


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Media files to upload: name -> path."""
    d = tmp_path_factory.mktemp("clips")
    wav = helpers.write_wav(d / "voice.wav", fake_media.voice(3.0, seed=1))
    return {
        "wav": wav,
        "webm": helpers.encode_with_ffmpeg(wav, d / "recording.webm"),  # as MediaRecorder's
        "short": helpers.write_wav(d / "short.wav", fake_media.voice(0.5, seed=2)),
        "corrupt": fake_media.write_corrupt_file(d / "broken.wav"),
        "empty": _touch(d / "empty.m4a"),
        "silent": helpers.write_wav(d / "silent.wav", np.zeros(32000, np.float32)),
        "video": helpers.write_video_without_audio(d / "silent_film.mp4", seconds=2.0),
    }


def _touch(path):
    path.write_bytes(b"")
    return path


def _post(client, path, exaggeration=None, query=None, name=None, field="audio"):
    data = {} if exaggeration is None else {"exaggeration": str(exaggeration)}
    url = "/predict" + (f"?exaggeration={query}" if query is not None else "")
    with open(path, "rb") as f:
        return client.post(url, files={field: (name or pathlib.Path(path).name, f)}, data=data)


def _image(response):
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def _error(response, status):
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert "speech2face-upload-" not in message  # the temporary file's name never shows
    return message


def test_page_served(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    for needle in ('<form id="upload-form"', 'type="file"', 'name="audio"', 'id="record"',
                   'id="exaggeration"', 'max="1.4"', 'id="face"', "getUserMedia",
                   "MediaRecorder", "localhost", "https", "50 MB"):
        assert needle in page, needle
    # Self-contained: no script, style or image from anywhere else.
    for attribute in ('src="http', "src='http", 'href="http', "@import", "url("):
        assert attribute not in page


def test_health(client, model):
    info = client.get("/health").json()
    assert info["status"] == "ok" and info["model"] == "model"
    assert info["format"] == artifact.FORMAT and info["face_size"] == model.face_size == 64
    assert info["image_size"] == 256 and info["min_seconds"] == 1.0
    assert info["max_upload_bytes"] == 50 * 2**20 and info["steps"]["encoder"] == 4
    assert info["exaggeration"]["paper"] == [0.0, 0.7, 1.4]


def test_predict_a_wav(client, clips, model):
    response = _post(client, clips["wav"])
    image = _image(response)
    assert image.format == "PNG" and image.size == (256, 256) and image.mode == "RGB"
    assert response.headers["x-audio-seconds"] == "3.00"
    assert response.headers["x-exaggeration"] == "0"
    # The library's own face of the same file, upsampled as predict.py does.
    face = model.predict(str(clips["wav"])).face[0]
    expected = np.asarray(Image.fromarray(face).resize((256, 256), Image.LANCZOS))
    np.testing.assert_allclose(np.asarray(image, np.float32), expected, atol=2)


def test_exaggeration_gives_another_face(client, clips):
    plain = _post(client, clips["wav"], exaggeration=0)
    exaggerated = _post(client, clips["wav"], exaggeration=1.4)
    assert exaggerated.headers["x-exaggeration"] == "1.4"
    a, b = np.asarray(_image(plain), np.float32), np.asarray(_image(exaggerated), np.float32)
    assert plain.content != exaggerated.content and np.abs(a - b).max() > 0
    # A query parameter works as the form field does; the form field wins over it.
    assert _post(client, clips["wav"], query=1.4).content == exaggerated.content
    assert _post(client, clips["wav"], exaggeration=1.4, query=0).content == exaggerated.content


def test_browser_recording_formats(client, clips):
    """What MediaRecorder sends (webm/opus), and a Blob posted under a name with no extension."""
    assert _image(_post(client, clips["webm"])).size == (256, 256)
    assert _image(_post(client, clips["wav"], name="blob")).size == (256, 256)


@pytest.mark.parametrize("clip, status, words", [
    ("corrupt", 422, ["broken.wav", "not a decodable audio file"]),
    ("empty", 422, ["empty.m4a", "empty"]),
    ("video", 422, ["silent_film.mp4", "no audio stream"]),
    ("silent", 422, ["silent.wav", "silent"]),
    ("short", 422, ["short.wav", "0.50 s", "too short", "at least 1 s"]),
])
def test_bad_files_are_refused_and_named(client, clips, clip, status, words):
    message = _error(_post(client, clips[clip]), status)
    for word in words:
        assert word in message, (word, message)


def test_bad_requests(client, clips):
    assert "missing form field 'audio'" in _error(_post(client, clips["wav"], field="file"), 400)
    assert "missing form field" in _error(client.post("/predict", json={"audio": 1}), 400)
    assert "missing form field" in _error(client.post("/predict"), 400)
    assert "must be a file" in _error(client.post("/predict", data={"audio": "hello"}), 400)
    assert "must be a number" in _error(_post(client, clips["wav"], exaggeration="abc"), 400)
    assert "from -1 to 3" in _error(_post(client, clips["wav"], query=9), 400)
    assert "from -1 to 3" in _error(_post(client, clips["wav"], query="nan"), 400)
    broken = client.post("/predict", content=b"--x\r\nnot a part",
                         headers={"content-type": "multipart/form-data"})
    assert "multipart" in _error(broken, 400).lower()
    assert client.get("/predict").status_code == 405


def _multipart(path, boundary="s2fboundary"):
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; "
            f"filename=\"{path.name}\"\r\nContent-Type: audio/wav\r\n\r\n").encode()
    return head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), boundary


def client_still_serves(client):
    return client.get("/health").json()["status"] == "ok"


def test_uploads_over_the_limit(model, clips):
    with TestClient(server.create_app(model, max_upload_bytes=50_000)) as small:
        # Told by Content-Length: refused before reading.
        assert "too large" in _error(_post(small, clips["wav"]), 413)
        # Sent chunked, without a length: cut off while it streams in.
        body, boundary = _multipart(clips["wav"])
        chunks = (body[i:i + 8192] for i in range(0, len(body), 8192))
        response = small.post("/predict", content=chunks, headers={
            "content-type": f"multipart/form-data; boundary={boundary}"})
        message = _error(response, 413)
        assert "over the limit of 0.0476837 MB" in message
        assert client_still_serves(small)
    # Streamed in just under the limit is fine.
    with TestClient(server.create_app(model, max_upload_bytes=len(body) + 10)) as exact:
        response = exact.post("/predict", content=iter([body]), headers={
            "content-type": f"multipart/form-data; boundary={boundary}"})
        assert _image(response).size == (256, 256)


def test_keeps_serving_after_errors_and_leaves_no_files(client, clips, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for clip in ("corrupt", "short", "empty", "video"):
        assert _post(client, clips[clip]).status_code == 422
    assert _post(client, clips["wav"], field="nope").status_code == 400
    assert _image(_post(client, clips["wav"], exaggeration=0.7)).size == (256, 256)
    assert _image(_post(client, clips["webm"])).size == (256, 256)
    assert client.get("/health").json()["status"] == "ok"
    assert os.listdir(tmp_path) == []  # every upload's temporary file was deleted


# ----------------------------------------------------------------------------------------------
# A real browser against the real server


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url, proc, log, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the app exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "health", timeout=2) as r:
                return json.load(r)
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the app did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def drive_page(url, wav, screenshot, chromium, chromedriver, record=True):
    """Opens the page in headless Chromium, uploads `wav` through the file input, waits for the
    face, switches to exaggeration 0.7, saves a screenshot; then records from a fake microphone
    that plays `wav`. Returns what it saw."""
    # pylint: disable=import-outside-toplevel
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=900,1100", "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    seen = {}
    try:
        wait = WebDriverWait(driver, 120, poll_frequency=0.2)
        driver.get(url)
        wait.until(lambda d: d.find_element(By.ID, "model").text.startswith("Model:"))

        def face_after(previous_src, caption):
            def ready(d):
                error = d.find_element(By.ID, "error").text
                if error:
                    raise AssertionError(f"the page shows an error: {error}")
                return d.execute_script(
                    "const i = document.getElementById('face');"
                    "return i.complete && i.naturalWidth > 0 && i.src !== arguments[0] &&"
                    " document.getElementById('caption').textContent.includes(arguments[1]) &&"
                    " !document.getElementById('result').hidden ? i.naturalWidth : 0;",
                    previous_src, caption)
            wait.until(ready)
            return driver.find_element(By.ID, "face").get_attribute("src")

        driver.find_element(By.ID, "file").send_keys(str(wav))
        src = face_after("", f"{pathlib.Path(wav).name} (")
        seen["upload_width"] = driver.execute_script(
            "return document.getElementById('face').naturalWidth")
        driver.find_element(By.CSS_SELECTOR, ".preset[data-value='0.7']").click()
        src = face_after(src, "exaggeration 0.7")
        seen["caption"] = driver.find_element(By.ID, "caption").text
        seen["secure"] = driver.execute_script("return window.isSecureContext")
        driver.save_screenshot(str(screenshot))
        if record:
            driver.find_element(By.ID, "record").click()
            wait.until(lambda d: "Stop" in d.find_element(By.ID, "record").text)
            time.sleep(2.0)
            driver.find_element(By.ID, "record").click()
            face_after(src, "recording.")
            seen["recording_caption"] = driver.find_element(By.ID, "caption").text
        seen["console"] = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    finally:
        driver.quit()
    return seen


@pytest.fixture
def browser():
    """(chromium, chromedriver) paths; skips the test (before the model is built) without them."""
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip(BROWSER_INSTALL)
    pytest.importorskip("selenium",
                        reason='selenium is in the test extra: pip install -e ".[test]"')
    return chromium, chromedriver


@pytest.mark.slow
def test_browser_uploads_and_records(browser, model_dir, clips, tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "app.log"
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "speech2face.app", f"--model={model_dir}",
                                 f"--port={port}"], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        assert _wait_for_server(url, proc, log)["face_size"] == 64
        screenshot = tmp_path / "app.png"
        seen = drive_page(url, clips["wav"], screenshot, *browser)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert seen["upload_width"] == 256 and seen["secure"] is True
    assert seen["caption"] == "voice.wav (3.00 s), exaggeration 0.7"
    assert seen["recording_caption"].startswith("recording.webm (")
    assert not seen["console"], seen["console"]
    assert Image.open(screenshot).size[0] > 0
    text = log.read_text()
    assert f"serving {model_dir} on {url}" in text and "POST /predict HTTP/1.1\" 200" in text
    keep = os.environ.get("SPEECH2FACE_APP_SCREENSHOT")
    if keep:
        Image.open(screenshot).convert("RGB").save(keep, optimize=True)
    print(f"browser test: {time.monotonic() - started:.1f} s")
