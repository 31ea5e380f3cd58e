"""The training config: typed, documented settings loaded from YAML and validated before any weights load.

Every section is a `common.settings.ConfigModel` (unknown keys are errors), so a typo is an error that
names the key (with a "did you mean" hint) instead of a silently ignored setting; every problem of a config
is reported at once. `load_config(path)` reads a YAML file, `parse_config(mapping)` validates a dict; both
go through `common.settings` and raise `ConfigError`. Checks that need the filesystem (does the base model
exist, are the target modules in it, do the data files have the right columns) live in
`training.preflight`, which runs next, still before any weights load.

Paths (`ConfigPath`: data source paths, base_model, init_adapter, output.runs_dir) accept `~` and `$VARS`;
relative ones are resolved against the config file's folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from common import settings
from common.home import tuneloop_home
from common.settings import ConfigModel, ConfigPath
from training.errors import ConfigError

__all__ = [
    "DEFAULT_TARGET_MODULES",
    "CleanConfig",
    "DataConfig",
    "FileSource",
    "HFDatasetSource",
    "LoraSettings",
    "OutputConfig",
    "PreferenceSettings",
    "RequestLogSource",
    "RuntimeConfig",
    "SourceConfig",
    "SplitConfig",
    "TemplateOptions",
    "TrainConfig",
    "TrainingConfig",
    "default_runs_dir",
    "load_config",
    "parse_config",
    "apply_overrides",
]

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
Template = Literal[
    "auto",
    "chat",
    "instruction",
    "completion",
    "summarization",
    "classification",
    "translation",
    "code",
    "text",
    "preference",
    "kto",
]
Style = Literal["sft", "domain", "multitask", "sequential", "transfer", "dpo", "kto"]
PREFERENCE_STYLES = ("dpo", "kto")
"""Styles trained on preference records (TRL's DPOTrainer / KTOTrainer) instead of SFT examples."""
PREFERENCE_TEMPLATES = {"dpo": ("preference",), "kto": ("preference", "kto")}
"""The record templates each preference style trains on (kto unpairs preference pairs)."""


def default_runs_dir() -> Path:
    """`<tuneloop home>/runs`."""
    return tuneloop_home() / "runs"


class TemplateOptions(ConfigModel):
    """Knobs of the task templates (each template reads the ones it needs)."""

    system_prompt: str | None = None
    """A system message put before every conversation (chat and task templates)."""
    instruction: str | None = None
    """Overrides the task template's instruction line, e.g. "Summarize the ticket in one sentence."."""
    labels: list[str] | None = None
    """classification: the allowed labels; rows with another label are dropped (reason `invalid_label`)."""
    source_lang: str = "English"
    """translation: the source language named in the prompt."""
    target_lang: str = "French"
    """translation: the target language named in the prompt."""
    language: str | None = None
    """code: the programming language named in the prompt (or the row's `language` column)."""


class _SourceBase(ConfigModel):
    name: str | None = None
    """Name of the source in the data card (default: derived from the path / kind)."""
    weight: float = Field(default=1.0, gt=0, le=100)
    """Mixture weight: a multiplier on this source's training rows (0.5 keeps a deterministic half, 2 repeats
    every row twice). Validation/test rows are never re-weighted."""
    template: Template = "auto"
    """How rows become training examples: chat (a `messages` list), instruction (instruction/input/output),
    completion (prompt/completion plain text), summarization (document/summary), classification (text/label),
    translation (source/target), code (prompt/code), text (plain text, for domain adaptation); for the
    preference styles: preference (prompt/chosen/rejected pairs, dpo and kto) and kto (prompt/completion/label
    with label true = desirable, kto only). A prompt is a string or a list of chat messages. `auto` picks chat
    when rows have `messages`, preference for prompt/chosen/rejected, kto for prompt/completion/label,
    completion for prompt/completion rows, else text."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Maps a template column to the dataset's column, e.g. {document: article, summary: highlights}."""
    options: TemplateOptions = Field(default_factory=TemplateOptions)
    """Template options (system prompt, labels, languages)."""


class FileSource(_SourceBase):
    """A JSONL / JSON / CSV / Parquet file (UTF-8)."""

    kind: Literal["file"] = "file"
    path: ConfigPath
    """The file. Relative paths are resolved against the config file's folder."""
    format: Literal["auto", "jsonl", "json", "csv", "parquet"] = "auto"
    """File format (auto: from the extension)."""


class HFDatasetSource(_SourceBase):
    """A local Hugging Face dataset folder written by `Dataset.save_to_disk` (no hub downloads)."""

    kind: Literal["hf_dataset"] = "hf_dataset"
    path: ConfigPath
    """The folder (a Dataset or a DatasetDict); relative to the config file's folder."""
    split: str | None = "train"
    """Which split of a DatasetDict to read."""


class RequestLogSource(_SourceBase):
    """Served requests with feedback, read from the request log (`requests` + `feedback`).

    `records` says what each request becomes. sft: a request qualifies when it has a feedback correction
    (the correction becomes the target), or, with `include_accepted`, a thumbs-up or a rating >=
    `min_rating` (the served response becomes the target). preference (DPO pairs): chosen = the correction,
    or an accepted answer to the same prompt; rejected = the served answer that was corrected, thumbed down
    or rated <= `max_rejected_rating`. kto (unpaired): every correction and accepted answer is desirable,
    every corrected / thumbed-down / badly rated served answer undesirable. The latest correction of a
    request wins, else its latest thumbs/rating. Shadow copies and failed requests are skipped.
    """

    kind: Literal["request_log"] = "request_log"
    database_url: str
    """SQLAlchemy URL of the request log, e.g. sqlite:////root/.cache/tuneloop/tuneloop.db."""
    since: datetime | None = None
    """Only requests created at or after this time (UTC)."""
    until: datetime | None = None
    """Only requests created before this time (UTC)."""
    served_name: str | None = None
    """Only requests served by this base model id or adapter name."""
    served_version: str | None = None
    """Only requests served by this adapter version (sha256 hex)."""
    tags: dict[str, Any] = Field(default_factory=dict)
    """Only requests whose `tags` contain all these key/value pairs (the slice)."""
    include_accepted: bool = True
    """Also use uncorrected answers that got a thumbs-up or a rating >= min_rating."""
    min_rating: float = Field(default=0.8, ge=0, le=1)
    """The rating (0..1) from which an answer counts as accepted."""
    limit: int | None = Field(default=None, gt=0)
    """Read at most this many qualifying requests (newest first)."""
    records: Literal["auto", "sft", "preference", "kto"] = "auto"
    """What the requests become: sft examples, preference pairs (DPO) or kto records (desirable /
    undesirable). auto: by the run's style (dpo -> preference, kto -> kto, every other style -> sft)."""
    max_rejected_rating: float = Field(default=0.3, ge=0, le=1)
    """preference / kto: a rating (0..1) at or below this marks the served answer as bad (rejected /
    undesirable), like a thumbs-down."""

    @field_validator("database_url", mode="before")
    @classmethod
    def _expand_url(cls, value: Any) -> Any:
        return os.path.expandvars(os.path.expanduser(value)) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _window(self) -> RequestLogSource:
        if self.since and self.until and self.since >= self.until:
            raise ValueError("since must be before until")
        if self.max_rejected_rating >= self.min_rating:
            raise ValueError("max_rejected_rating must be below min_rating (a rating cannot be good and bad)")
        return self


def _source_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "file"))
    return str(getattr(value, "kind", "file"))


SourceConfig = Annotated[
    Annotated[FileSource, Tag("file")]
    | Annotated[HFDatasetSource, Tag("hf_dataset")]
    | Annotated[RequestLogSource, Tag("request_log")],
    Discriminator(
        _source_kind,
        custom_error_type="unknown_source_kind",
        custom_error_message="kind must be one of: file, hf_dataset, request_log",
    ),
]
"""A data source; `kind` defaults to `file`."""


class CleanConfig(ConfigModel):
    """Cleaning rules; every dropped row is counted by reason in the data card."""

    min_chars: int = Field(default=1, ge=1)
    """Rows whose trainable text (the target, or the whole text) is shorter are dropped as `empty`."""
    drop_broken_encoding: bool = True
    """Drop rows with U+FFFD replacement characters, mojibake (e.g. 'Ã©') or control characters."""
    dedupe: bool = True
    """Drop exact duplicates (after whitespace/case normalisation)."""
    near_duplicates: bool = True
    """Also drop near-duplicates (MinHash over word 3-grams)."""
    near_duplicate_threshold: float = Field(default=0.85, ge=0.5, le=1.0)
    """Estimated Jaccard similarity from which two rows are near-duplicates."""
    scrub_pii: bool = True
    """Replace emails, phone numbers, card numbers and IBANs by placeholders (counted per kind)."""


class SplitConfig(ConfigModel):
    """Deterministic split by content hash: a row keeps its split when the dataset grows."""

    validation: float = Field(default=0.1, ge=0, le=0.5)
    """Fraction of rows for validation (early stopping, val loss)."""
    test: float = Field(default=0.1, ge=0, le=0.5)
    """Fraction of rows held out for evals (written to the run folder, never trained on)."""
    salt: str = ""
    """Changes the assignment (all rows re-shuffle between splits) - leave empty to keep splits stable."""

    @model_validator(mode="after")
    def _sum(self) -> SplitConfig:
        if self.validation + self.test >= 0.9:
            raise ValueError("validation + test must leave at least 10% of the rows for training")
        return self


class DataConfig(ConfigModel):
    """Where the examples come from and how they are prepared."""

    sources: list[SourceConfig] = Field(min_length=1)
    """One or more sources; several are mixed by their weights (multitask)."""
    max_seq_length: int = Field(default=256, ge=16, le=32768)
    """Tokens per example after templating; longer chat/task rows are dropped (`too_long`) or truncated,
    plain text is cut into chunks of this length."""
    overlong: Literal["drop", "truncate"] = "drop"
    """What to do with chat/task rows longer than max_seq_length."""
    clean: CleanConfig = Field(default_factory=lambda: CleanConfig())
    split: SplitConfig = Field(default_factory=lambda: SplitConfig())
    max_rows: int | None = Field(default=None, gt=0)
    """Cap on the prepared rows (after cleaning, before splitting), taken in a deterministic order."""


class LoraSettings(ConfigModel):
    """The LoRA adapter shape (ignored for sequential/transfer runs, which keep the parent's shape)."""

    r: int = Field(default=16, gt=0, le=512)
    """Rank of the update matrices."""
    alpha: int | None = Field(default=None, gt=0)
    """Scaling numerator (default: 2 * r)."""
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGET_MODULES), min_length=1)
    """Module names to adapt (matched as peft does: equal to, or ending in '.' + name), or ["all-linear"]."""

    @property
    def lora_alpha(self) -> int:
        return self.alpha if self.alpha is not None else 2 * self.r


class TrainConfig(ConfigModel):
    """Optimisation settings (small defaults: a few hundred short examples in minutes on a laptop CPU)."""

    epochs: float = Field(default=2.0, gt=0, le=100)
    max_steps: int | None = Field(default=None, gt=0)
    """Stop after this many optimizer steps (overrides epochs)."""
    batch_size: int = Field(default=8, gt=0, le=1024)
    """Examples per micro-batch (with packing: packed rows of max_seq_length tokens)."""
    grad_accum: int = Field(default=1, gt=0, le=1024)
    """Micro-batches per optimizer step."""
    learning_rate: float = Field(default=2e-4, gt=0, lt=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0, lt=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    batching: Literal["auto", "packed", "grouped", "padded"] = "auto"
    """packed: best-fit packing without padding (TRL bfd, position_ids mark boundaries); grouped: batches of
    similar length; padded: random batches padded to the longest row (the baseline). auto: packed, except for
    dpo / kto, which always use padded batches (TRL's preference collators; packed/grouped are refused)."""
    optimizer: Literal[
        "auto", "adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adamw_8bit", "paged_adamw_8bit"
    ] = "auto"
    """auto: paged 8-bit AdamW for QLoRA on CUDA, torch AdamW otherwise (8-bit optimizers need CUDA)."""
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    """Recompute activations in the backward pass instead of keeping them. auto: on for CUDA runs (an
    out-of-memory stop is worse than a slower run), off on CPU (it only costs time there). Measured on an H200
    (benchmarks/results/gpu_qlora_*.md, packed 16x512-token batches): a 1.7B-parameter model's QLoRA peak
    memory 29.2 GB without, 4.7 GB with it, at the same tokens/s; bf16 LoRA 22.4 -> 5.4 GB at -26 % tokens/s;
    the 135M default model 4.1 -> 0.7 GB at -35 %. Set false to trade the memory back for speed."""
    seed: int = 42
    """Seeds Python, NumPy and torch (adapter init, shuffling, dropout) for reproducible runs."""
    eval_every_steps: int | None = Field(default=None, gt=0)
    """Validation loss every N steps (default: once per epoch, if there is a validation split)."""
    save_every_steps: int | None = Field(default=None, gt=0)
    """Checkpoint every N steps (default: once per epoch; with early stopping: at every evaluation)."""
    early_stopping_patience: int | None = Field(default=None, gt=0)
    """Stop when the validation loss has not improved for this many evaluations (the best adapter is kept)."""
    early_stopping_threshold: float = Field(default=0.0, ge=0)
    """Minimum validation-loss improvement that counts."""
    resume: bool = False
    """Resume from the latest checkpoint of a previous, unfinished run with the same name and data."""
    divergence_factor: float | None = Field(default=4.0, gt=1)
    """Stop (diverged) when the training loss exceeds this multiple of the first logged loss (taken as at
    least 1.0); NaN/inf always stops. null disables the explosion check."""
    logging_steps: int = Field(default=1, gt=0)
    """Log (and check) metrics every N optimizer steps."""


class PreferenceSettings(ConfigModel):
    """Preference tuning (styles dpo and kto, TRL's DPOTrainer / KTOTrainer). The reference model is the
    starting point: the parent adapter (`init_adapter`) when given, else the base model."""

    beta: float = Field(default=0.1, gt=0, le=10)
    """How far the adapter may move from the reference: higher beta keeps it closer (the KL penalty's
    weight; for loss ipo the regularisation tau)."""
    loss: Literal["sigmoid", "ipo", "hinge", "robust"] = "sigmoid"
    """dpo: the preference loss - sigmoid (DPO), ipo (IPO, less prone to overfitting small data), hinge
    (SLiC), robust (DPO assuming `label_smoothing` of the labels are flipped)."""
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5)
    """dpo with loss robust: the assumed fraction of flipped preference labels (0.1 is typical)."""
    sft_weight: float = Field(default=0.0, ge=0, le=100)
    """dpo: weight of an extra NLL loss on the chosen answers (RPO); keeps the chosen answers likely, which
    plain DPO on a few pairs can push down together with the rejected ones. 0 disables it."""
    desirable_weight: Annotated[float, Field(gt=0, le=100)] | Literal["auto"] = "auto"
    """kto: weight of the desirable records' loss. `auto`: chosen from the training split's counts so that
    desirable_weight x #desirable / (undesirable_weight x #undesirable) lies in [1, 4/3] (the KTO paper's
    advice; `training.recipes.lora_preference.kto_weights`), and logged; a number is used as given."""
    undesirable_weight: Annotated[float, Field(gt=0, le=100)] | Literal["auto"] = "auto"
    """kto: weight of the undesirable records' loss (`auto` as for desirable_weight)."""

    @model_validator(mode="after")
    def _robust(self) -> PreferenceSettings:
        if self.label_smoothing and self.loss != "robust":
            raise ValueError("label_smoothing is only used by loss 'robust'")
        return self


class RuntimeConfig(ConfigModel):
    """Where and how long the run may execute."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: a GPU when the Ray cluster (or, without Ray, this machine) has one, else CPU."""
    num_cpus: float = Field(default=1.0, gt=0)
    """CPUs the Ray task reserves (torch still uses `torch_threads` threads)."""
    torch_threads: int | None = Field(default=None, gt=0)
    """torch intra-op threads on CPU (default: all cores of the worker)."""
    timeout_s: float = Field(default=3600.0, gt=0)
    """The whole run (data preparation excluded) is cancelled after this many seconds."""
    start_timeout_s: float = Field(default=120.0, gt=0)
    """Fail when the Ray task has not started within this many seconds (cluster out of resources)."""


class OutputConfig(ConfigModel):
    """Where the run folder goes."""

    runs_dir: ConfigPath = Field(default_factory=default_runs_dir)
    """Final run folders land in <runs_dir>/<run id>/; temporary and checkpoint folders live beside them."""
    keep_checkpoints: bool = False
    """Keep intermediate checkpoints after a successful run (they are never part of the adapter)."""
    write_splits: bool = True
    """Write the prepared validation/test examples (JSONL) into the run folder for evals."""


class TrainingConfig(ConfigModel):
    """One training run: base model, data, adapter shape, optimisation, runtime, output."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    """Run name (letters, digits, '.', '_', '-'); the run id is <name>-<timestamp>-<random>."""
    style: Style = "sft"
    """sft (instruction/chat), domain (continued pre-training on text), multitask (several sources),
    sequential (continue an existing adapter), transfer (start from another task's adapter), dpo (preference
    pairs: prompt, chosen, rejected; TRL DPOTrainer), kto (unpaired desirable / undesirable answers, or pairs
    split in two; TRL KTOTrainer). dpo and kto start from `init_adapter` when given, else from the base."""
    base_model: ConfigPath | None = None
    """Local folder of the base model (config.json + safetensors). The CLI fills in the default model."""
    base_model_id: str | None = None
    """The id recorded in the manifest and adapter_config.json (default: the folder name)."""
    init_adapter: ConfigPath | None = None
    """sequential/transfer (required), dpo/kto (optional): the adapter folder to start from (its LoRA shape
    is kept; for dpo/kto it is also the reference model)."""
    quantization: Literal["none", "nf4"] = "none"
    """none: LoRA on full-precision weights; nf4: QLoRA (4-bit NF4 base via bitsandbytes)."""
    lora: LoraSettings = Field(default_factory=lambda: LoraSettings())
    data: DataConfig
    train: TrainConfig = Field(default_factory=lambda: TrainConfig())
    preference: PreferenceSettings = Field(default_factory=lambda: PreferenceSettings())
    """dpo / kto settings (beta, loss, weights); refused for other styles when changed from the defaults."""
    runtime: RuntimeConfig = Field(default_factory=lambda: RuntimeConfig())
    output: OutputConfig = Field(default_factory=lambda: OutputConfig())

    @model_validator(mode="after")
    def _style_rules(self) -> TrainingConfig:
        continues = self.style in ("sequential", "transfer")
        if continues and self.init_adapter is None:
            raise ValueError(f"style '{self.style}' needs init_adapter (the adapter folder to start from)")
        if self.init_adapter is not None and not continues and self.style not in PREFERENCE_STYLES:
            raise ValueError("init_adapter is only used by style 'sequential', 'transfer', 'dpo' or 'kto'")
        self._preference_rules()
        if self.style == "multitask" and len(self.data.sources) < 2:
            raise ValueError("style 'multitask' needs at least two data sources")
        if self.style == "domain":
            bad = [i for i, s in enumerate(self.data.sources) if s.template not in ("text", "auto")]
            if bad:
                raise ValueError(
                    f"style 'domain' trains on plain text: data.sources.{bad[0]}.template must be 'text'"
                )
        if self.train.early_stopping_patience and self.data.split.validation == 0:
            raise ValueError(
                "train.early_stopping_patience needs a validation split (data.split.validation > 0)"
            )
        return self

    def _preference_rules(self) -> None:
        """dpo/kto need preference records; other styles refuse them. Resolves `train.batching: auto` and
        request-log `records: auto` by the style, so the dumped config says what ran."""
        preference = self.style in PREFERENCE_STYLES
        if self.train.batching == "auto":
            self.train.batching = "padded" if preference else "packed"
        for source in self.data.sources:
            if isinstance(source, RequestLogSource) and source.records == "auto":
                source.records = (
                    "preference" if self.style == "dpo" else "kto" if self.style == "kto" else "sft"
                )
        if not preference:
            for i, source in enumerate(self.data.sources):
                kind = source.records if isinstance(source, RequestLogSource) else source.template
                if kind in ("preference", "kto"):
                    raise ValueError(
                        f"data.sources.{i} gives {kind} records, which only styles 'dpo' / 'kto' train on "
                        f"(this run's style is '{self.style}')"
                    )
            if self.preference != PreferenceSettings():
                raise ValueError(
                    f"the preference section is only used by styles 'dpo' and 'kto', not '{self.style}'"
                )
            return
        allowed = PREFERENCE_TEMPLATES[self.style]
        for i, source in enumerate(self.data.sources):
            kind = source.records if isinstance(source, RequestLogSource) else source.template
            if kind != "auto" and kind not in allowed:
                what = "records" if isinstance(source, RequestLogSource) else "template"
                raise ValueError(
                    f"style '{self.style}' trains on {' or '.join(allowed)} records: data.sources.{i}.{what} "
                    f"is '{kind}'"
                )
        if self.train.batching != "padded":
            raise ValueError(
                f"style '{self.style}' batches padded preference records (TRL's collator): remove "
                f"train.batching '{self.train.batching}' or set it to padded"
            )
        if self.style == "kto" and self.train.batch_size < 2:
            raise ValueError(
                "style 'kto' needs train.batch_size >= 2 (its KL estimate pairs each record with another of "
                "the same micro-batch)"
            )
        if self.style == "kto" and self.preference.loss != "sigmoid":
            raise ValueError("preference.loss is a dpo setting; kto has one loss")
        if self.style == "kto" and self.preference.sft_weight:
            raise ValueError("preference.sft_weight is a dpo setting")

    @property
    def base_id(self) -> str:
        if self.base_model_id:
            return self.base_model_id
        return self.base_model.name if self.base_model is not None else "unknown"

    def to_plain(self) -> dict[str, Any]:
        """JSON-safe dict (paths and datetimes as strings) for the manifest."""
        return self.model_dump(mode="json")


WHAT = "training config"
"""How errors name the file: `invalid training config: data.sources.0.path: ...`."""


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Set dotted keys in a raw config mapping in place (`train.max_steps`, `data.sources.0.path`);
    None values are skipped. `common.settings.apply_overrides`, raising ConfigError."""
    return settings.apply_overrides(data, overrides, error=ConfigError)


def parse_config(data: Mapping[str, Any] | TrainingConfig, *, root: Path | None = None) -> TrainingConfig:
    """Validate a mapping (a TrainingConfig is validated again, as its dump); relative paths resolve
    against `root` (default: the current directory). Raises ConfigError listing every offending key."""
    raw = data.model_dump() if isinstance(data, TrainingConfig) else data
    return settings.validate_config(
        TrainingConfig, raw, what=WHAT, base_dir=root or Path.cwd(), error=ConfigError
    )


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> TrainingConfig:
    """Read and validate a YAML training config; relative paths resolve against its folder. `overrides`
    maps dotted keys to values (e.g. {"train.max_steps": 5}); None values are ignored."""
    return settings.load_config_file(TrainingConfig, path, what=WHAT, overrides=overrides, error=ConfigError)
