#!/usr/bin/env python3
"""Checks recorded responses of custos-server against openapi.yaml.

    scripts/check-api-responses.py openapi.yaml responses.jsonl

Each line of the JSONL file is one response: {"operation": OPERATION_ID, "status": CODE,
"body": JSON}. For each, the operation must exist, the status must be one the operation
documents, and the body must validate against that response's schema (OpenAPI 3.1 schemas,
with every $ref resolved within the document). Prints one line per failure and exits 1 when
there is any; prints "N responses match openapi.yaml" otherwise.
"""
import json
import sys

import yaml
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_URI = "urn:custos:openapi"


def main() -> int:
    spec_path, responses_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as handle:
        spec = yaml.safe_load(handle)
    registry = Registry().with_resource(SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012))
    operations = {}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "operationId" in operation:
                operations[operation["operationId"]] = (method, path, operation)

    def resolve(node):
        while isinstance(node, dict) and "$ref" in node:
            target = spec
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            node = target
        return node

    failures = []
    count = 0
    with open(responses_path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            count += 1
            record = json.loads(line)
            name, status = record["operation"], str(record["status"])
            if name not in operations:
                failures.append(f"line {number}: no operation {name} in the spec")
                continue
            method, path, operation = operations[name]
            responses = operation.get("responses", {})
            if status not in responses:
                failures.append(f"line {number}: {name} answered {status}, which the spec does not document")
                continue
            response = resolve(responses[status])
            content = response.get("content", {}).get("application/json")
            if content is None:
                continue
            schema = {"$ref": SPEC_URI + "#" + schema_pointer(responses[status], path, method, status)}
            validator = OAS31Validator(schema, registry=registry)
            errors = sorted(validator.iter_errors(record["body"]), key=lambda error: list(error.path))
            for error in errors:
                where = "/".join(str(part) for part in error.path) or "(body)"
                failures.append(f"line {number}: {name} {status} at {where}: {error.message}")
    for failure in failures:
        print(failure)
    if failures:
        return 1
    print(f"{count} responses match openapi.yaml")
    return 0


def schema_pointer(response, path, method, status):
    """The JSON pointer of the response's JSON schema."""
    if "$ref" in response:
        return response["$ref"].lstrip("#") + "/content/application~1json/schema"
    escaped = path.replace("~", "~0").replace("/", "~1")
    return f"/paths/{escaped}/{method}/responses/{status}/content/application~1json/schema"


if __name__ == "__main__":
    sys.exit(main())
