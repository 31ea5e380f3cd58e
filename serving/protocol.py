"""OpenAI-compatible request and response models (pydantic), as vLLM's `protocol.py`.

Requests are validated here with field-level errors (the HTTP layer turns a `ValidationError` into a
400 whose `param` names the field). Unknown request fields are accepted and ignored, as OpenAI clients
send many optional fields; fields we cannot honour when set (tools, logprobs) are refused explicitly.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_N = 8
MAX_STOP = 4
MAX_PROMPTS = 16


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: Annotated[str, Field(min_length=1, max_length=256)]
    max_tokens: Annotated[int | None, Field(default=None)] = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    user: Annotated[str | None, Field(max_length=256)] = None
    metadata: dict[str, str] | None = None

    @field_validator("max_tokens")
    @classmethod
    def _positive_max_tokens(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError("max_tokens must be a positive integer")
        return v

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list):
            if len(v) > MAX_STOP:
                raise ValueError(f"at most {MAX_STOP} stop sequences are allowed")
            if any(not s for s in v):
                raise ValueError("stop sequences must be non-empty strings")
        return v

    @model_validator(mode="after")
    def _unsupported(self) -> _Request:
        extra = self.model_extra or {}
        for key in ("tools", "functions", "tool_choice", "function_call"):
            if extra.get(key):
                raise ValueError(f"'{key}' is not supported by this server")
        if extra.get("logprobs") not in (None, False, 0):
            raise ValueError("'logprobs' is not supported by this server")
        if extra.get("best_of") not in (None, 1):
            raise ValueError("'best_of' is not supported by this server")
        return self

    def stop_tuple(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatCompletionRequest(_Request):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: int | None = None

    @field_validator("max_completion_tokens")
    @classmethod
    def _positive_mct(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError("max_completion_tokens must be a positive integer")
        return v

    @model_validator(mode="after")
    def _messages(self) -> ChatCompletionRequest:
        if not any(m.role in ("user", "system", "developer") and m.text().strip() for m in self.messages):
            raise ValueError("messages must contain at least one non-empty user or system message")
        return self

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def engine_messages(self) -> tuple[dict[str, str], ...]:
        out = []
        for m in self.messages:
            role = "system" if m.role == "developer" else m.role
            out.append({"role": role, "content": m.text()})
        return tuple(out)


class CompletionRequest(_Request):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str | list[str]) -> str | list[str]:
        prompts = [v] if isinstance(v, str) else v
        if not prompts:
            raise ValueError("prompt must not be empty")
        if len(prompts) > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts per request")
        if any(not p.strip() for p in prompts):
            raise ValueError("prompt must not be empty")
        return v

    @model_validator(mode="after")
    def _unsupported_completion(self) -> CompletionRequest:
        if self.echo:
            raise ValueError("'echo' is not supported by this server")
        if self.suffix:
            raise ValueError("'suffix' is not supported by this server")
        return self

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatChoiceMessage
    finish_reason: str | None
    logprobs: None = None


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
    finish_reason: str | None
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tuneloop"
    root: str | None = None
    parent: str | None = None
    kind: Literal["base", "adapter", "alias", "version", "experiment"]
    version: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(min_length=1, max_length=64, description="response id from a completion")]
    rating: Annotated[float | None, Field(ge=0.0, le=1.0)] = None
    thumbs: Literal[-1, 1] | None = None
    correction: Annotated[str | None, Field(max_length=32_000)] = None
    source: Annotated[str | None, Field(max_length=64)] = None

    @model_validator(mode="after")
    def _something(self) -> FeedbackRequest:
        if self.rating is None and self.thumbs is None and not self.correction:
            raise ValueError("feedback needs at least one of rating, thumbs or correction")
        return self


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now_s() -> int:
    return int(time.time())
