"""The real fal_client, configured only by environment as a user would, calls fluxserve over HTTPS."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = """
import json, fal_client
result = fal_client.run("fal-ai/flux/schnell", arguments={
    "prompt": "a photo of a cat", "image_size": {"width": 128, "height": 96}, "seed": 3, "num_images": 2})
print(json.dumps(result))
try:
    fal_client.run("fal-ai/flux/schnell", arguments={"prompt": "x", "num_images": 9})
except fal_client.client.FalClientHTTPError as exc:
    print(json.dumps({"status": exc.status_code, "message": exc.message}))
"""


def test_fal_client_run_against_fluxserve(tiny_server):
    host = tiny_server.https_url.removeprefix("https://")
    env = {
        **os.environ,
        "FAL_KEY": "anything",
        "FAL_RUN_HOST": host,
        "FAL_QUEUE_RUN_HOST": f"{host}/queue",
        "SSL_CERT_FILE": str(tiny_server.cert),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result, error = (json.loads(line) for line in out.stdout.strip().splitlines())
    assert result["seed"] == 3 and result["prompt"] == "a photo of a cat"
    assert [(i["width"], i["height"]) for i in result["images"]] == [(128, 96)] * 2
    assert result["has_nsfw_concepts"] == [False, False]
    assert all(i["url"].startswith(tiny_server.https_url + "/files/") for i in result["images"])
    assert error["status"] == 422 and "num_images" in json.dumps(error["message"])
