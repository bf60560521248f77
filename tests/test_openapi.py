"""The OpenAPI document covers every staff and client API without guesswork: drf-spectacular's
warnings are system-check warnings, and `check --deploy --fail-level WARNING` fails on them."""

import yaml
from django.core.management import call_command


def test_the_schema_generates_without_warnings_and_describes_each_api(tmp_path):
    path = tmp_path / "schema.yml"
    call_command("spectacular", "--fail-on-warn", "--file", str(path))
    schema = yaml.safe_load(path.read_text())
    operations = {(route, method): op for route, methods in schema["paths"].items() for method, op in methods.items()}
    assert operations[("/api/imports/", "get")]["operationId"] == "imports_list"
    assert operations[("/api/imports/{job_id}/", "get")]["operationId"] == "api_imports_retrieve"
    upload = operations[("/api/imports/", "post")]["requestBody"]["content"]
    assert list(upload) == ["multipart/form-data"]
    decision = operations[("/v1/consent", "post")]
    assert decision["requestBody"]["content"]["*/*"]["schema"]["$ref"] == "#/components/schemas/Decision"
    assert {"writeKey": []} in decision["security"]
    assert schema["components"]["securitySchemes"]["writeKey"] == {
        "type": "http", "scheme": "basic",
        "description": "The source's write key as the HTTP Basic user name, empty password."}
    assert schema["components"]["schemas"]["RecordOut"]["properties"]["record_hash"] == {"type": "string",
                                                                                          "readOnly": True}
    assert "SegmentKindEnum" in schema["components"]["schemas"]
