"""The OpenAPI document is generated from the schemas and carries the spec's names, defaults and ranges."""

from __future__ import annotations


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


def test_docs_render_with_local_assets_only(fake_server):
    import re

    with fake_server.client() as http:
        page = http.get("/docs")
        assert page.status_code == 200 and "swagger-ui" in page.text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text) + re.findall(r"url: '([^']+)'", page.text)
        assert urls and all(u.startswith("/") for u in urls), urls
        for url in urls:
            assert http.get(url).status_code == 200, url
