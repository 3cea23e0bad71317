"""Export the MQTT payloads' JSON Schemas to ``docs/schemas/<name>.v<version>.json``.

``.venv/bin/python -m gateway.sinks.mqtt.schemas [OUT_DIR]`` (re)writes the files; a test compares
the committed files with ``render_schemas()`` so the documentation cannot drift from the models.
Published payloads are described as the gateway serializes them; the override command as the gateway
validates it (``additionalProperties: false``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic.json_schema import JsonSchemaMode

from gateway.sinks.mqtt.payloads import PAYLOAD_MODELS, Override

__all__ = ["DOCS_SCHEMAS", "SCHEMA_VERSION", "render_schemas", "write_schemas"]

SCHEMA_VERSION = 1
DOCS_SCHEMAS = Path(__file__).resolve().parents[3] / "docs" / "schemas"


def render_schemas() -> dict[str, str]:
    """File name → file text, for every payload model."""
    out: dict[str, str] = {}
    for name, model in PAYLOAD_MODELS.items():
        mode: JsonSchemaMode = "validation" if model is Override else "serialization"
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"dcflex/mqtt/{name}.v{SCHEMA_VERSION}.json",
            **model.model_json_schema(mode=mode),
        }
        out[f"{name}.v{SCHEMA_VERSION}.json"] = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    return out


def write_schemas(directory: Path = DOCS_SCHEMAS) -> list[Path]:
    """Write every schema file into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, text in render_schemas().items():
        path = directory / fname
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else DOCS_SCHEMAS
    for path in write_schemas(target):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
