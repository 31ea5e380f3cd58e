"""OpenAI-compatible request and response models (pydantic), as vLLM's `protocol.py`.

Requests are validated here with field-level errors: the HTTP layer turns a `ValidationError` into a 400
whose `param` names the field. Nothing a client sends is silently ignored:

- **Strict types**: no coercion (`"stream": "yes"` or `"n": "2"` is a 400; an integer is accepted where
  a number is expected, as JSON has one number type). `null` is accepted for the fields OpenAI documents
  as nullable and means "the default".
- **Unknown fields** are a 400 naming the field (`param`), in requests, messages, tools and formats.
- **Implemented**: OpenAI's sampling fields, `response_format` (`text`, `json_object`, `json_schema`),
  `tools` / `tool_choice` / `parallel_tool_calls` (chat), `logprobs` / `top_logprobs` (chat),
  `logprobs` / `echo` (completions; `max_tokens: 0` with `echo` returns only the prompt), `stream_options`,
  `metadata` (stored in the request log), `user`, and vLLM's own request extensions that its clients send
  through `extra_body`: sampling (`top_k`, `min_p`, `repetition_penalty`, `ignore_eos`, `min_tokens`,
  `stop_token_ids`, `allowed_token_ids`, `bad_words`), output text (`include_stop_str_in_output`,
  `skip_special_tokens`, `spaces_between_special_tokens`), streaming (`stream_interval`), vLLM's
  `structured_outputs` (`json`, `regex`, `choice`, `grammar`, `json_object` and their options), scheduling
  (`priority`, with the engine's priority scheduler), prompt truncation (`truncate_prompt_tokens`,
  `truncation_side`), and on chat
  the template options `add_generation_prompt`, `continue_final_message`, `chat_template_kwargs` (`seed`
  and `logit_bias` are OpenAI fields).
- **Accepted and deliberately without effect** (clients send them by default, and there is nothing to do
  with them here): `store` (every request is logged anyway), `service_tier`, `prompt_cache_key` (vLLM
  caches prefixes by itself), `safety_identifier`, `modalities: ["text"]`,
  `stream_options.include_obfuscation`, a message's `refusal` (assistant history), `best_of: 1` and an
  empty `suffix` (completions).
- **Refused with a 400 naming them**: everything else (e.g. `functions`/`function_call`, `audio`,
  `prediction`, `reasoning_effort`, image parts, `best_of > 1`, a non-empty `suffix`; of vLLM's extensions
  e.g. beam search, `prompt_logprobs`, `return_token_ids`, a
  per-request `chat_template`, `structured_outputs.structural_tag`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from serving.engine.base import CONTROL_PRIORITY

MAX_N = 8
MAX_STOP = 4
MAX_PROMPTS = 16
MAX_LOGPROBS = 20
"""vLLM's default `max_logprobs`: alternatives per token (chat `top_logprobs`, completions `logprobs`)."""
MAX_TOOLS = 128
MAX_TOKEN_IDS = 1024
"""Entries in `stop_token_ids`, `allowed_token_ids`, `bad_words` and `structured_outputs.choice`."""
CHAT_TEMPLATE_RESERVED = frozenset(
    {
        "messages",
        "conversation",
        "tools",
        "documents",
        "tokenize",
        "add_generation_prompt",
        "continue_final_message",
        "chat_template",
        "return_dict",
        "return_assistant_tokens_mask",
        "tokenizer_kwargs",
    }
)
"""Keys `chat_template_kwargs` may not set: the server sets them itself (or they are request fields)."""

NULLABLE = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "n",
        "stream",
        "stream_options",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "user",
        "metadata",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "store",
        "service_tier",
        "echo",
        "suffix",
        "best_of",
        "top_k",
        "min_p",
        "repetition_penalty",
        "ignore_eos",
        "min_tokens",
        "prompt_cache_key",
        "safety_identifier",
        "modalities",
        "stop_token_ids",
        "include_stop_str_in_output",
        "skip_special_tokens",
        "spaces_between_special_tokens",
        "allowed_token_ids",
        "bad_words",
        "stream_interval",
        "structured_outputs",
        "add_generation_prompt",
        "continue_final_message",
        "chat_template_kwargs",
        "priority",
        "truncate_prompt_tokens",
        "truncation_side",
    }
)
"""Fields whose `null` means "not set" (OpenAI's nullable fields and the extensions)."""


def _integral(value: Any) -> Any:
    """A JSON number with an integral value (`2.0`) is an integer, as JSON Schema says; strings are not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_integral)]
"""An integer field: strict (no strings, no booleans, no fractions), but `2.0` is 2."""
TokenId = Annotated[Int, Field(ge=0)]
PromptText = Annotated[str, Field(json_schema_extra={"minLength": 1, "pattern": r"\S"})]
"""A prompt string (the validator refuses blank ones with a clear message; the schema says so too)."""


_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _standard_bounds(schema: dict[str, Any]) -> None:
    """pydantic writes the bounds of `Int` fields (an int behind a validator) as `ge`/`le`; JSON Schema
    (and so the OpenAPI document, its clients and fuzzers) reads `minimum`/`maximum`."""
    if schema.get("type") in ("integer", "number"):
        for old, new in _BOUNDS.items():
            if old in schema:
                schema[new] = schema.pop(old)
    for value in schema.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                _standard_bounds(item)


def _schema_with(extra: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """A model's `json_schema_extra`: standard bounds, plus `extra` (cross-field rules)."""

    def fix(schema: dict[str, Any]) -> None:
        _standard_bounds(schema)
        schema.update(extra)

    return fix


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, populate_by_name=True, json_schema_extra=_schema_with({})
    )


# ---------------------------------------------------------------------------------------- formats
class TextFormat(_Strict):
    type: Literal["text"]


class JsonObjectFormat(_Strict):
    type: Literal["json_object"]


class JsonSchemaSpec(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: str | None = None
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    strict: bool | None = None


class JsonSchemaFormat(_Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class StructuredOutputs(_Strict):
    """vLLM's `structured_outputs` extension: exactly one constraint (`json`, `regex`, `choice`, `grammar`,
    `json_object: true`) and vLLM's options for it. vLLM's `structural_tag` is refused (unknown field)."""

    json_: Annotated[dict[str, Any] | str | None, Field(alias="json")] = None
    regex: Annotated[str | None, Field(min_length=1)] = None
    choice: Annotated[
        list[Annotated[str, Field(min_length=1)]] | None, Field(min_length=1, max_length=MAX_TOKEN_IDS)
    ] = None
    grammar: Annotated[str | None, Field(min_length=1)] = None
    json_object: bool | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: Annotated[str | None, Field(min_length=1)] = None

    @model_validator(mode="after")
    def _one_constraint(self) -> StructuredOutputs:
        given = [
            name
            for name, value in (
                ("json", self.json_),
                ("regex", self.regex),
                ("choice", self.choice),
                ("grammar", self.grammar),
                ("json_object", self.json_object),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "structured_outputs needs exactly one of 'json', 'regex', 'choice', 'grammar', "
                f"'json_object'; got {', '.join(given) or 'none'}"
            )
        if self.json_object is False:
            raise ValueError("structured_outputs.json_object must be true when given")
        if isinstance(self.json_, str):
            try:
                schema = json.loads(self.json_)
            except ValueError as exc:
                raise ValueError(f"structured_outputs.json is not valid JSON: {exc}") from exc
            if not isinstance(schema, dict):
                raise ValueError("structured_outputs.json must be a JSON schema object")
            self.json_ = schema
        return self

    def json_schema(self) -> dict[str, Any] | None:
        """The JSON schema of a `json` constraint (a string was parsed by validation)."""
        return self.json_ if isinstance(self.json_, dict) else None


# ---------------------------------------------------------------------------------------- tools
class FunctionDefinition(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Strict):
    name: Annotated[str, Field(min_length=1)]


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: FunctionName


class FunctionCall(_Strict):
    name: Annotated[str, Field(min_length=1)]
    arguments: str


class ToolCall(_Strict):
    id: Annotated[str, Field(min_length=1, max_length=128)]
    type: Literal["function"]
    function: FunctionCall


def _params_or_empty_object(params: dict[str, Any] | None) -> dict[str, Any]:
    return params if params else {"type": "object", "properties": {}}


def tools_json_schema(tools: list[Tool], parallel: bool | None) -> dict[str, Any]:
    """The JSON schema of `tool_choice: "required"` output: `[{"name", "parameters"}, ...]`.

    The same schema vLLM's server builds (`vllm.tool_parsers.utils.get_json_schema_from_tools`), so the
    output parses the same way; `parallel_tool_calls: false` allows a single call."""
    schema: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "anyOf": [
                {
                    "properties": {
                        "name": {"type": "string", "enum": [t.function.name]},
                        "parameters": _params_or_empty_object(
                            {k: v for k, v in (t.function.parameters or {}).items() if k != "$defs"}
                        ),
                    },
                    "required": ["name", "parameters"],
                }
                for t in tools
            ],
        },
    }
    if parallel is False:
        schema["maxItems"] = 1
    defs: dict[str, Any] = {}
    for t in tools:
        defs.update((t.function.parameters or {}).get("$defs", {}))
    if defs:
        schema["$defs"] = defs
    return schema


# ---------------------------------------------------------------------------------------- requests
class StreamOptions(_Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None  # accepted, no effect (nothing is obfuscated)


_TRUNCATION_NEEDS_COUNT = {"dependentRequired": {"truncation_side": ["truncate_prompt_tokens"]}}
_CONTINUE_NEEDS_NO_HEADER = {
    "if": {
        "properties": {"continue_final_message": {"const": True}},
        "required": ["continue_final_message"],
    },
    "then": {
        "properties": {"add_generation_prompt": {"const": False}},
        "required": ["add_generation_prompt"],
    },
}
"""What the model validators check across fields, as JSON Schema says it (for the OpenAPI document)."""


class _Request(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        populate_by_name=True,
        json_schema_extra=_schema_with(_TRUNCATION_NEEDS_COUNT),
    )

    model: Annotated[str, Field(min_length=1, max_length=256)]
    max_tokens: Annotated[Int | None, Field(default=None, ge=0)] = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    n: Annotated[Int, Field(ge=1, le=MAX_N)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Annotated[str, Field(min_length=1)] | list[Annotated[str, Field(min_length=1)]] | None = None
    seed: Annotated[Int | None, Field(ge=-(2**63), le=2**64 - 1)] = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    logit_bias: (
        dict[Annotated[str, Field(pattern=r"^[0-9]{1,9}$")], Annotated[float, Field(ge=-100.0, le=100.0)]]
        | None
    ) = None
    user: Annotated[str | None, Field(max_length=256)] = None
    metadata: dict[str, str] | None = None
    response_format: ResponseFormat | None = None
    # vLLM sampling extensions (OpenAI clients send them through `extra_body`)
    top_k: Annotated[Int, Field(ge=-1)] = 0
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    repetition_penalty: Annotated[float, Field(gt=0.0, le=2.0)] = 1.0
    ignore_eos: bool = False
    min_tokens: Annotated[Int, Field(ge=0)] = 0
    # accepted, deliberately without effect (see the module docstring)
    store: bool | None = None
    service_tier: Annotated[str | None, Field(max_length=32)] = None
    prompt_cache_key: Annotated[str | None, Field(max_length=256)] = None
    safety_identifier: Annotated[str | None, Field(max_length=256)] = None
    modalities: list[Literal["text"]] | None = None
    # vLLM's other request extensions (sampling, detokenization, streaming, structured outputs)
    stop_token_ids: Annotated[list[TokenId] | None, Field(max_length=MAX_TOKEN_IDS)] = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    allowed_token_ids: Annotated[list[TokenId] | None, Field(min_length=1, max_length=MAX_TOKEN_IDS)] = None
    bad_words: Annotated[
        list[Annotated[str, Field(min_length=1, pattern=r"\S")]] | None, Field(max_length=MAX_TOKEN_IDS)
    ] = None
    stream_interval: Annotated[Int | None, Field(ge=1, le=1024)] = None
    structured_outputs: StructuredOutputs | None = None
    truncate_prompt_tokens: Annotated[
        Int | None, Field(ge=-1, le=2**31 - 1, json_schema_extra={"not": {"const": 0}})
    ] = None
    """Keep only this many prompt tokens (-1: the context length), cut on `truncation_side`."""
    truncation_side: Literal["left", "right"] | None = None
    priority: Annotated[Int, Field(le=2**31 - 1, json_schema_extra={"minimum": CONTROL_PRIORITY + 1})] = 0
    """vLLM's scheduling priority (lower runs earlier); values at or below the service's own control
    priority are reserved (its adapter smoke tests must not queue behind client traffic)."""

    @field_validator("priority")
    @classmethod
    def _client_priority(cls, v: int) -> int:
        if v <= CONTROL_PRIORITY:
            raise ValueError(
                f"priority must be above {CONTROL_PRIORITY}: lower values are reserved for the service's own "
                "control generations"
            )
        return v

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (v is None and k in NULLABLE)}
        return data

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list):
            if len(v) > MAX_STOP:
                raise ValueError(f"at most {MAX_STOP} stop sequences are allowed")
            if any(not s for s in v):
                raise ValueError("stop sequences must be non-empty strings")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None:
            for key in v:
                if not key.isdigit() or len(key) > 9:
                    raise ValueError(
                        f"logit_bias keys must be token ids (non-negative integers), got {key!r}"
                    )
        return v

    @model_validator(mode="after")
    def _ranges(self) -> _Request:
        if self.max_tokens is not None and self.min_tokens > self.max_tokens > 0:
            raise FieldError("min_tokens", "min_tokens must not exceed max_tokens")
        if self.truncate_prompt_tokens == 0:
            raise FieldError(
                "truncate_prompt_tokens", "truncate_prompt_tokens must be positive (-1: the context length)"
            )
        if self.truncation_side is not None and self.truncate_prompt_tokens is None:
            raise FieldError("truncation_side", "'truncation_side' needs 'truncate_prompt_tokens'")
        if self.structured_outputs is not None and self.json_format() != (None, False):
            raise FieldError(
                "structured_outputs", "'structured_outputs' cannot be combined with a JSON 'response_format'"
            )
        return self

    def stop_tuple(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def logit_bias_ids(self) -> dict[int, float] | None:
        return {int(k): v for k, v in self.logit_bias.items()} if self.logit_bias else None

    def json_format(self) -> tuple[dict[str, Any] | None, bool]:
        """(JSON schema, any JSON object) asked for by `response_format` (None, False for text)."""
        rf = self.response_format
        if isinstance(rf, JsonSchemaFormat):
            return _params_or_empty_object(rf.json_schema.schema_), False
        if isinstance(rf, JsonObjectFormat):
            return None, True
        return None, False

    def format_log(self) -> str | None:
        """The output constraint as stored in the request log: `response_format` (None for text), or
        `{"structured_outputs": {...}}` for vLLM's extension."""
        if self.structured_outputs is not None:
            so = self.structured_outputs.model_dump(by_alias=True, exclude_defaults=True)
            return json.dumps({"structured_outputs": so}, ensure_ascii=False)
        rf = self.response_format
        if rf is None or isinstance(rf, TextFormat):
            return None
        return json.dumps(rf.model_dump(by_alias=True, exclude_none=True), ensure_ascii=False)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class _Message(_Strict):
    name: Annotated[str | None, Field(max_length=256)] = None

    def text(self) -> str:
        content = getattr(self, "content", None)
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        return "".join(p.text for p in content)

    def engine_message(self) -> dict[str, Any]:
        """The message as chat templates read it (tool-call arguments as objects, as vLLM passes them)."""
        role = getattr(self, "role", "user")
        out: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": self.text()}
        if self.name:
            out["name"] = self.name
        tool_calls: list[ToolCall] | None = getattr(self, "tool_calls", None)
        if tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": _arguments(c.function.arguments)},
                }
                for c in tool_calls
            ]
        tool_call_id: str | None = getattr(self, "tool_call_id", None)
        if tool_call_id:
            out["tool_call_id"] = tool_call_id
        return out


class SystemMessage(_Message):
    role: Literal["system", "developer"]
    content: str | list[TextPart]


class UserMessage(_Message):
    role: Literal["user"]
    content: str | list[TextPart]


class AssistantMessage(_Message):
    role: Literal["assistant"]
    content: str | list[TextPart] | None = None
    tool_calls: Annotated[list[ToolCall] | None, Field(min_length=1)] = None
    refusal: str | None = None  # history: accepted, not sent to the model

    @model_validator(mode="after")
    def _something(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls:
            raise ValueError("an 'assistant' message needs 'content' or 'tool_calls'")
        return self


class ToolMessage(_Message):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: Annotated[str, Field(min_length=1, max_length=128)]


ChatMessage = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]
"""One chat message, by `role` (as OpenAI's schema): system/developer, user, assistant, tool."""
MESSAGE_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class ChatCompletionRequest(_Request):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        populate_by_name=True,
        json_schema_extra=_schema_with({**_TRUNCATION_NEEDS_COUNT, **_CONTINUE_NEEDS_NO_HEADER}),
    )

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[Int | None, Field(ge=1)] = None
    logprobs: bool = False
    top_logprobs: Annotated[Int | None, Field(ge=0, le=MAX_LOGPROBS)] = None
    tools: Annotated[list[Tool] | None, Field(min_length=1, max_length=MAX_TOOLS)] = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # vLLM's chat-template extensions
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] | None = None

    @field_validator("chat_template_kwargs")
    @classmethod
    def _template_kwargs(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v:
            reserved = sorted(CHAT_TEMPLATE_RESERVED & set(v))
            if reserved:
                raise ValueError(
                    f"chat_template_kwargs may not set {', '.join(reserved)} (the server sets it, or it is a "
                    "request field of its own)"
                )
        return v

    @model_validator(mode="after")
    def _template_flags(self) -> ChatCompletionRequest:
        if self.continue_final_message and self.add_generation_prompt:
            raise field_error(
                "continue_final_message",
                "'continue_final_message' continues the last message; set 'add_generation_prompt': false",
            )
        return self

    @field_validator("max_tokens")
    @classmethod
    def _positive_max_tokens(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError("max_tokens must be a positive integer")
        return v

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, v: list[Tool] | None) -> list[Tool] | None:
        if v is not None:
            names = [t.function.name for t in v]
            if len(set(names)) != len(names):
                raise ValueError("tool function names must be unique")
        return v

    @model_validator(mode="after")
    def _messages(self) -> ChatCompletionRequest:
        if not any(m.role in ("user", "system", "developer") and m.text().strip() for m in self.messages):
            raise ValueError("messages must contain at least one non-empty user or system message")
        return self

    @model_validator(mode="after")
    def _logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise field_error("top_logprobs", "'top_logprobs' needs 'logprobs': true")
        return self

    @model_validator(mode="after")
    def _tools(self) -> ChatCompletionRequest:
        choice = self.tool_choice
        if choice is not None and choice != "none" and not self.tools:
            raise field_error("tool_choice", "'tool_choice' needs 'tools'")
        if (
            isinstance(choice, NamedToolChoice)
            and self.tools
            and choice.function.name not in {t.function.name for t in self.tools}
        ):
            raise field_error(
                "tool_choice",
                f"tool_choice names function '{choice.function.name}', which is not in 'tools'",
            )
        if (
            self.forced_tools()
            and self.response_format is not None
            and not isinstance(self.response_format, TextFormat)
        ):
            raise field_error(
                "response_format",
                "'response_format' cannot be combined with a required or named 'tool_choice'",
            )
        if self.forced_tools() and self.structured_outputs is not None:
            raise field_error(
                "structured_outputs",
                "'structured_outputs' cannot be combined with a required or named 'tool_choice'",
            )
        return self

    def effective_tool_choice(self) -> Literal["none", "auto", "required"] | NamedToolChoice:
        if not self.tools:
            return "none"
        return self.tool_choice if self.tool_choice is not None else "auto"

    def forced_tools(self) -> bool:
        """`tool_choice` is "required" or a named function: the answer must be tool calls."""
        choice = self.effective_tool_choice()
        return choice == "required" or isinstance(choice, NamedToolChoice)

    def tool_schema(self) -> dict[str, Any] | None:
        """The JSON schema that constrains a forced tool choice's output (None otherwise)."""
        choice = self.effective_tool_choice()
        assert self.tools is not None or choice == "none"
        if isinstance(choice, NamedToolChoice):
            tool = next(t for t in self.tools or [] if t.function.name == choice.function.name)
            return _params_or_empty_object(tool.function.parameters)
        if choice == "required":
            return tools_json_schema(self.tools or [], self.parallel_tool_calls)
        return None

    def tools_log(self) -> str | None:
        """`tools` + `tool_choice` as stored in the request log (None without tools)."""
        if not self.tools:
            return None
        choice = self.effective_tool_choice()
        return json.dumps(
            {
                "tool_choice": choice if isinstance(choice, str) else choice.model_dump(),
                "tools": [t.model_dump(exclude_none=True) for t in self.tools],
            },
            ensure_ascii=False,
        )

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def engine_messages(self) -> tuple[dict[str, Any], ...]:
        return tuple(m.engine_message() for m in self.messages)


TokenIds = Annotated[list[TokenId], Field(min_length=1)]


class CompletionRequest(_Request):
    prompt: PromptText | list[PromptText] | TokenIds | list[TokenIds]
    echo: bool = False
    logprobs: Annotated[Int | None, Field(ge=0, le=MAX_LOGPROBS)] = None
    suffix: Annotated[str | None, Field(json_schema_extra={"maxLength": 0})] = None
    best_of: Annotated[Int | None, Field(ge=1, le=1)] = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str | list[str] | list[int] | list[list[int]]) -> Any:
        prompts: list[Any] = [v] if isinstance(v, str) else list(v)
        if prompts and isinstance(prompts[0], int):
            prompts = [prompts]
        if not prompts:
            raise ValueError("prompt must not be empty")
        if len(prompts) > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts per request")
        if any((not p.strip()) if isinstance(p, str) else not p for p in prompts):
            raise ValueError("prompt must not be empty")
        return v

    @model_validator(mode="after")
    def _completion_fields(self) -> CompletionRequest:
        if self.suffix:
            raise field_error("suffix", "'suffix' (insertion) is not supported by this server")
        if self.best_of is not None and self.best_of != 1:
            raise field_error("best_of", "'best_of' other than 1 is not supported by this server")
        if self.max_tokens == 0 and not self.echo:
            raise field_error("max_tokens", "max_tokens must be a positive integer (0 only with 'echo')")
        return self

    def prompts(self) -> list[str | list[int]]:
        """Each prompt: text, or a list of token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and isinstance(p[0], int):
            return [list(p)]
        return list(p)  # type: ignore[arg-type]

    def prompt_chars(self) -> int:
        return sum(len(p) for p in self.prompts())

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


class FieldError(ValueError):
    """A model-level check that names one field (the HTTP layer uses `param`)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def field_error(param: str, message: str) -> FieldError:
    return FieldError(param, message)


# ---------------------------------------------------------------------------------------- responses
# What this server answers, field for field (the HTTP layer serializes these models as they are).
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class ChatTokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob]
    refusal: None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CalledFunction(BaseModel):
    name: str
    arguments: str


class ChatToolCall(BaseModel):
    """A tool call in an answer (the model wrote the name and arguments: nothing is checked here)."""

    id: str
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ChatToolCall] | None = None
    """Left out of the JSON when there are none (as before: clients test for the key)."""

    @model_serializer(mode="wrap")
    def _without_empty_tool_calls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.tool_calls is None:
            data.pop("tool_calls", None)
        return data


class ChatChoice(BaseModel):
    index: int
    message: ChatChoiceMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    system_fingerprint: str | None = None


# ---------------------------------------------------------------------------------------- stream chunks
class _Partial(BaseModel):
    """Serialized with only the fields that were set: a stream delta names only what it adds."""

    @model_serializer(mode="wrap")
    def _only_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        keep = self.model_fields_set | set(self.model_extra or ())
        return {k: v for k, v in data.items() if k in keep}


class FunctionDelta(_Partial):
    model_config = ConfigDict(extra="allow")  # vLLM's incremental tool-call reader writes these too
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(_Partial):
    model_config = ConfigDict(extra="allow")
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta | None = None


class ChatDelta(_Partial):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class _Chunk(BaseModel):
    """A streamed event: `usage` only in the last one (with `stream_options.include_usage`)."""

    @model_serializer(mode="wrap")
    def _usage_only_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("usage") is None:
            data.pop("usage", None)
        return data


class ChatCompletionChunk(_Chunk):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChunk(_Chunk):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


ModelKind = Literal["base", "adapter", "alias", "version", "experiment"]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tuneloop"
    root: str | None = None
    parent: str | None = None
    kind: ModelKind
    version: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class FeedbackResponse(BaseModel):
    object: Literal["feedback"] = "feedback"
    id: str
    status: Literal["recorded"] = "recorded"


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorDetail


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(min_length=1, max_length=64, description="response id from a completion")]
    rating: Annotated[float | None, Field(ge=0.0, le=1.0)] = None
    thumbs: Literal[-1, 1] | None = None
    correction: Annotated[str | None, Field(max_length=32_000)] = None
    source: Annotated[str | None, Field(max_length=64)] = None
    tags: dict[Annotated[str, Field(min_length=1, max_length=64)], str | int | float | bool] | None = None
    """Labels known only after the answer (the slice, a reference...): they win over the request's metadata
    for the loop's slicing, datasets and scorers."""

    @field_validator("tags")
    @classmethod
    def _few_tags(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(value) > 32:
            raise ValueError("at most 32 tags")
        if value is not None and any(isinstance(v, str) and len(v) > 1024 for v in value.values()):
            raise ValueError("a tag value is at most 1024 characters")
        return value

    @model_validator(mode="after")
    def _something(self) -> FeedbackRequest:
        if self.rating is None and self.thumbs is None and not self.correction and not self.tags:
            raise ValueError("feedback needs at least one of rating, thumbs, correction or tags")
        return self


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now_s() -> int:
    return int(time.time())
