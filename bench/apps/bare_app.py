"""Reference app 1, the ceiling: bare Flask returning a small JSON dict."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index() -> dict[str, object]:
    return {"message": "Welcome to the Blog API", "version": "1.0", "ok": True}
