"""A loopback stand-in for the Hugging Face Hub's file endpoint, so timm's real download path (huggingface_hub's
``hf_hub_download`` through ``HF_ENDPOINT``) runs in tests without the internet.

It answers ``HEAD`` and ``GET`` of ``/<repo>/resolve/<revision>/<file>`` as the Hub does for a plain (non-Xet) file:
``X-Repo-Commit``, ``ETag`` (the SHA-256 of the content) and ``Content-Length``; ``Range`` requests get the
requested bytes; anything else is a 404 with ``X-Error-Code: EntryNotFound``. ``requests`` records every path asked.

    with FakeHub({"timm/vit_tiny_patch16_224.augreg_in21k/model.safetensors": data}) as hub:
        env = hub.environment(tmp_path / "hf")      # HF_ENDPOINT, an empty HF_HOME, Xet off
"""
from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RESOLVE = re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)")


def timm_weights(name: str, seed: int = 0) -> bytes:
    """The safetensors bytes of ``timm.create_model(name)`` at its own size with seeded random weights: a stand-in
    for the checkpoint timm downloads for ``name`` (same keys and shapes)."""
    import safetensors.torch
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    return safetensors.torch.save({k: v.contiguous() for k, v in model.state_dict().items()})


class FakeHub:
    """Serve ``files`` ({"owner/repo/path": bytes}) on 127.0.0.1 at any revision."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                match = RESOLVE.fullmatch(self.path.split("?")[0])
                data = hub.files.get(f"{match['repo']}/{match['file']}") if match else None
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if ranged:
                    start = int(ranged.group(1))
                self.send_response(206 if ranged else 200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    self.wfile.write(data[start:])

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def environment(self, home: Path) -> dict[str, str]:
        """Environment variables that point huggingface_hub (in a new process) at this server, with an empty cache."""
        return {"HF_ENDPOINT": self.url, "HF_HOME": str(home), "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
                "HF_HUB_DISABLE_TELEMETRY": "1"}

    def downloaded(self, repo_file: str) -> bool:
        """Whether a GET of ``owner/repo/path`` was answered."""
        return any(method == "GET" and RESOLVE.fullmatch(path.split("?")[0])
                   and "{repo}/{file}".format(**RESOLVE.fullmatch(path.split("?")[0]).groupdict()) == repo_file
                   for method, path in self.requests)
