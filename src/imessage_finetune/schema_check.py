"""JSON Schema validation of artifacts before they are published.

The schemas in `schemas/` are standard JSON Schema (draft 2020-12). The hot path uses the
compiled `jsonschema-rs` validator (the pure-Python one takes longer on a heavy user's
sessions.json than the whole reference loader); when a document fails, `jsonschema`
explains where. Error messages name the artifact, the JSON pointer and the rule broken,
never the offending value, which could be message text.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import jsonschema
import jsonschema_rs

from imessage_finetune.artifacts import Artifact
from imessage_finetune.errors import SchemaValidationError
from imessage_finetune.jsonio import load_json

_SAFE_KEY = re.compile(r"[a-z_]+")


@cache
def load_schema(artifact: Artifact) -> dict[str, Any]:
    """The parsed JSON Schema of an artifact."""
    assert artifact.schema_path is not None, f"{artifact.name} has no schema"
    return load_json(artifact.schema_path.read_bytes())


def _schema_for(artifact: Artifact, definition: str | None) -> dict[str, Any]:
    schema = load_schema(artifact)
    if definition is None:
        return schema
    # The same file's definition, so a streamed document is checked part by part.
    return {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}


@cache
def _compiled(artifact: Artifact, definition: str | None) -> Any:
    return jsonschema_rs.validator_for(_schema_for(artifact, definition))


def explain(
    artifact: Artifact, document: Any, definition: str | None = None, at: str = ""
) -> SchemaValidationError | None:
    """The first schema violation in `document`, as an error naming its location and rule."""
    validator = jsonschema.Draft202012Validator(_schema_for(artifact, definition))
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is None:
        return None
    # Keys of free-form maps (handles, for one) are personal data: shown as "*".
    pointer = (
        "#"
        + at
        + "".join(f"/{p}" if isinstance(p, int) or _SAFE_KEY.fullmatch(p) else "/*" for p in error.absolute_path)
    )
    rule = f"{error.validator}: {error.validator_value!r}"
    if error.validator in ("properties", "$defs", "items", "prefixItems"):
        rule = str(error.validator)
    return SchemaValidationError(artifact.filename, pointer, f"breaks the schema rule {rule}")


def validate_document(artifact: Artifact, document: Any, definition: str | None = None, at: str = "") -> None:
    """Raise SchemaValidationError unless `document` matches the artifact's schema.

    With `definition`, check against `#/$defs/<definition>` of the same schema file; `at`
    is the JSON pointer of that part in the whole document, for the error message.
    """
    if _compiled(artifact, definition).is_valid(document):
        return
    error = explain(artifact, document, definition, at)
    raise error or SchemaValidationError(artifact.filename, "#", "breaks its schema")
