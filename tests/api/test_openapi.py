"""The OpenAPI document is generated from the schemas and carries the spec's names, defaults and ranges."""

from __future__ import annotations

from tests.support.browser import run_page_script


def test_openapi_describes_the_schnell_endpoint(fake_server):
    with fake_server.client() as http:
        doc = http.get("/openapi.json").json()
    op = doc["paths"]["/fal-ai/flux/schnell"]["post"]
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schemas = doc["components"]["schemas"]
    inp = schemas[ref.rsplit("/", 1)[1]]
    props = inp["properties"]
    assert inp["required"] == ["prompt"]
    assert set(props) == {"prompt", "image_size", "num_inference_steps", "seed", "guidance_scale", "sync_mode",
                          "num_images", "enable_safety_checker", "output_format", "acceleration"}  # fmt: skip
    assert (props["num_inference_steps"]["default"], props["num_inference_steps"]["minimum"],
            props["num_inference_steps"]["maximum"]) == (4, 1, 12)  # fmt: skip
    assert (props["guidance_scale"]["default"], props["guidance_scale"]["minimum"],
            props["guidance_scale"]["maximum"]) == (3.5, 1, 20)  # fmt: skip
    assert (props["num_images"]["default"], props["num_images"]["maximum"]) == (1, 4)
    assert props["image_size"]["default"] == "landscape_4_3"
    assert schemas["ImageSizePreset"]["enum"] == [
        "square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"]  # fmt: skip
    assert schemas["OutputFormat"]["enum"] == ["jpeg", "png"]
    assert schemas["Acceleration"]["enum"] == ["none", "regular", "high"]
    assert all(p.get("description") for p in props.values())
    out = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(schemas[out]["required"]) == {"images", "timings", "seed", "has_nsfw_concepts", "prompt"}


def test_docs_render_the_operations_in_chromium(fake_server):
    """/docs as a person sees it: Swagger UI reads the OpenAPI 3.1 FastAPI generates and lists the operations,
    under the page's CSP, with every request to fluxserve itself."""
    seen = run_page_script("docs_page.mjs", fake_server.url)
    assert seen["errors"] == [], "Swagger UI showed its error panel"
    assert seen["title"] and "OAS 3.1" in seen["title"], seen["title"]
    operations = set(seen["operations"])
    assert {"POST /fal-ai/flux/schnell", "POST /queue/fal-ai/flux/schnell",
            "GET /queue/fal-ai/flux/requests/{request_id}/status"} <= operations, sorted(operations)
    assert "/openapi.json" in seen["requested"]
    assert seen["external"] == [], "every asset and the spec come from fluxserve"
    assert seen["cspViolations"] == [] and seen["domViolations"] == [], "/docs runs within its own policy"
    assert seen["pageErrors"] == []


def test_the_openai_routes_document_the_400_they_answer_instead_of_fastapis_422(fake_server):
    """/v1 turns every validation refusal into OpenAI's 400 (api/openai_errors.py), and the document says so:
    a client generated from it expects the status it gets."""
    with fake_server.client() as http:
        doc = http.get("/openapi.json").json()
        refused = http.post("/v1/images/generations", json={"prompt": "a", "n": 99})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "n", refused.text
    operations = [(path, op) for path, ops in doc["paths"].items() if path.startswith("/v1/")
                  for op in ops.values()]  # fmt: skip
    assert len(operations) == 5
    for path, op in operations:
        assert "422" not in op["responses"], path
        error = op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
        assert error.endswith("/ErrorResponse"), (path, error)
    assert "422" in doc["paths"]["/fal-ai/flux/schnell"]["post"]["responses"]  # fal's routes do answer 422
