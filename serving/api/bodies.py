"""JSON request bodies as typed handler parameters, validated by their own pydantic model.

A route declares `data: ChatCompletionRequest` with `dto=JSONBody[ChatCompletionRequest]`: Litestar hands
the raw bytes to `JSONBody.decode_bytes`, which validates them with `model_validate_json` (the model's
strict JSON rules: no coercion, unknown fields refused) and turns a failure into the OpenAI-style 400 that
names the field (`serving.api.errors.validation_error`). Litestar's own decoding would coerce values,
answer its own 400 shape and lose the field name, so the DTO keeps only what Litestar is good at here:
the typed parameter and the OpenAPI request body, generated from the model.

The body's schema is the model's own (`model_json_schema`), registered as Litestar's component of the
model (and of each nested model): Litestar's generator drops what the validator enforces (`extra="forbid"`
as `additionalProperties: false`, string patterns, discriminators, `json_schema_extra`), and clients and
the fuzz suite generate requests from this document.
"""

from __future__ import annotations

from collections.abc import Collection, Generator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from litestar.dto import AbstractDTO, DTOConfig
from litestar.openapi.spec import Reference, Schema
from litestar.typing import FieldDefinition
from pydantic import BaseModel, ValidationError

from serving.api.errors import validation_error

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.dto._backend import DTOBackend
    from litestar.dto.data_structures import DTOFieldDefinition

__all__ = ["JSONBody", "model_component"]

M = TypeVar("M", bound=BaseModel)
_REF = "#/components/schemas/"


class _ModelSchema(Schema):
    """A component rendered as the JSON schema pydantic generates (Litestar's `Schema` fields cannot hold
    every keyword pydantic writes, so this one renders its dict as it is)."""

    def __init__(self, document: dict[str, Any]) -> None:
        super().__init__()
        self.document = document

    def to_schema(self) -> dict[str, Any]:
        return self.document


def _inline_missing(node: Any, defs: dict[str, Any], known: set[str]) -> Any:
    """`node` with references to definitions Litestar has no component for replaced by the definition."""
    if isinstance(node, list):
        return [_inline_missing(v, defs, known) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF) and ref[len(_REF) :] not in known:
        return _inline_missing(
            {**defs[ref[len(_REF) :]], **{k: v for k, v in node.items() if k != "$ref"}}, defs, known
        )
    return {k: _inline_missing(v, defs, known) for k, v in node.items()}


def model_component(model: type[BaseModel], schema_creator: SchemaCreator) -> Reference | Schema:
    """The reference to `model`'s component, whose schema (and its nested models') is pydantic's own."""
    result = schema_creator.for_field_definition(FieldDefinition.from_annotation(model))
    if not isinstance(result, Reference):
        return result
    registry = schema_creator.schema_registry
    document = model.model_json_schema(ref_template=_REF + "{model}")
    defs: dict[str, Any] = document.pop("$defs", {})
    components = {registered.key[-1]: registered for registered in registry}
    known = set(defs) & set(components)
    for name in known:
        components[name].schema = _ModelSchema(_inline_missing(defs[name], defs, known))
    registry.from_reference(result).schema = _ModelSchema(_inline_missing(document, defs, known))
    return result


class JSONBody(AbstractDTO[M]):
    """Request-only DTO: the body is `model_type.model_validate_json(raw bytes)`."""

    config: ClassVar[DTOConfig] = DTOConfig()

    def decode_bytes(self, value: bytes) -> M:
        try:
            return self.model_type.model_validate_json(value)
        except ValidationError as exc:
            raise validation_error(exc) from exc

    def decode_builtins(self, value: dict[str, Any]) -> M:
        try:
            return self.model_type.model_validate(value)
        except ValidationError as exc:
            raise validation_error(exc) from exc

    def data_to_encodable_type(self, data: M | Collection[M]) -> Any:
        raise TypeError("JSONBody decodes request bodies only (responses are encoded by their models)")

    @classmethod
    def generate_field_definitions(cls, model_type: type[Any]) -> Generator[DTOFieldDefinition, None, None]:
        yield from ()  # no transfer model: the pydantic model is the body

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False

    @classmethod
    def create_for_field_definition(
        cls, field_definition: FieldDefinition, handler_id: str, backend_cls: type[DTOBackend] | None = None
    ) -> None:
        return None  # nothing to build: decoding is the model's

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: SchemaCreator
    ) -> Reference | Schema:
        return model_component(cls.model_type, schema_creator)
