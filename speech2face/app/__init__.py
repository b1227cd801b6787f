"""A web page to try a trained model on your own voice (docs/app.md).

    pip install -e ".[app]"
    python -m speech2face.app --model=MODEL          # then open http://127.0.0.1:8000/

`create_app(model)` (speech2face/app/server.py) is the ASGI app: the page (page.py), POST
/predict (an uploaded clip -> the predicted face as a PNG) and GET /health. Starlette, uvicorn and
python-multipart are the optional `[app]` extra, not core dependencies.
"""


def create_app(model, **kwargs):
    """The ASGI app serving a `Speech2FaceModel` (see `speech2face.app.server.create_app`)."""
    from speech2face.app import server  # pylint: disable=import-outside-toplevel

    return server.create_app(model, **kwargs)
