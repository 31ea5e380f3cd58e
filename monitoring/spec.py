"""The loop spec: one YAML file that configures a closed loop for the user's own task, validated before
anything starts (every problem listed at once, with its field path and a "did you mean").

It names the adapter the loop keeps good (required), the slice key, the windows, the trigger policy
(a shipped name, a file, or inline), the scorers, the eval suites that gate a challenger (shipped names
or files), the retraining recipe (a full training-config template, a file or inline), the gate and the
canary. Relative paths resolve against the spec file's folder. `docs/loop.md` documents every field;
`examples/` and `tuneloop/demo_spec.yaml` are complete specs.

    spec = load_spec("loop.yaml")                    # LoopSpec, or SpecError listing every problem
    spec = load_spec("loop.yaml", overrides={"canary.steps": [0.1, 0.5]})
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from common.home import tuneloop_home
from common.settings import (
    ConfigModel,
    ConfigPath,
    SettingsError,
    did_you_mean,
    expand_path,
    load_config_file,
    read_yaml_mapping,
    validate_config,
)
from monitoring.errors import PolicyError, ScorerConfigError
from monitoring.policy import POLICIES_DIR, TriggerPolicy, load_policy, policy_names
from training.config import PREFERENCE_STYLES

__all__ = [
    "CanarySettings",
    "GateSettings",
    "GuardrailSettings",
    "LoopSpec",
    "RecipeSettings",
    "SpecError",
    "SuiteSettings",
    "WindowSettings",
    "load_spec",
    "parse_spec",
]

RECIPES_DIR = Path(__file__).parent / "recipes"
DEFAULT_RECIPE = RECIPES_DIR / "lora_retrain.yaml"


def shipped_recipes() -> list[str]:
    """Names of the retraining recipes in monitoring/recipes/ (usable as `recipe.training: <name>`)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


"""The shipped retraining recipe: LoRA r=16 on every linear layer, packed rows, 3 epochs at 2e-3 — measured
to learn a new slice of a few dozen corrections on 2 CPU cores in a few minutes (see docs/loop.md)."""


class SpecError(SettingsError):
    """The loop spec is missing, unreadable or invalid (`problems` lists every problem)."""


def _base_dir(info: ValidationInfo) -> Path | None:
    context = info.context if isinstance(info.context, Mapping) else {}
    base = context.get("base_dir")
    return Path(base) if base is not None else None


def _looks_like_path(value: str) -> bool:
    return value.endswith((".yaml", ".yml")) or "/" in value or value.startswith(("~", "."))


class WindowSettings(ConfigModel):
    """Which traffic the loop compares, and how often it looks."""

    reference_size: int = Field(200, ge=10)
    """Prompts in the reference window: the champion's first traffic."""
    live_size: int = Field(200, ge=10)
    """Prompts in the live window: the champion's newest traffic."""
    min_quality_scores: int = Field(20, ge=5)
    """Scores of `quality_scorer` the champion needs before its score stream is checked for a drop."""
    feedback_days: float = Field(7.0, gt=0)
    """Feedback (corrections, acceptances) from this many days before the trigger builds the dataset."""
    check_interval_s: float = Field(15.0, gt=0)
    """Seconds between two checks while watching."""


class SuiteSettings(ConfigModel):
    """The eval suites that gate a challenger against the champion (at least one)."""

    target: str | None = None
    """The suite the retraining must improve (the drifted task): a shipped suite's name or a suite file."""
    regression: str | None = None
    """The suite the challenger must not get worse on: a shipped suite's name or a suite file."""

    @field_validator("target", "regression")
    @classmethod
    def _suite_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        from evals.suite import builtin_suite_names

        if _looks_like_path(value):
            path = expand_path(value, _base_dir(info))
            if not path.is_file():
                raise ValueError(f"suite file not found: {path}")
            return str(path)
        names = builtin_suite_names()
        if value not in names:
            raise ValueError(
                f"no shipped suite named {value!r}{did_you_mean(value, names)}; give a suite file "
                f"(e.g. ./suites/{value}.yaml) or one of: {', '.join(names)}"
            )
        return value

    @model_validator(mode="after")
    def _at_least_one(self) -> SuiteSettings:
        if self.target is None and self.regression is None:
            raise ValueError("name a target suite, a regression suite, or both: the gate needs one")
        return self

    def names(self) -> list[str]:
        """The configured suites, target first."""
        return [s for s in (self.target, self.regression) if s]


class RecipeSettings(ConfigModel):
    """How a retraining is built: the training-config template, the data mix and the minimum data."""

    training: dict[str, Any] | ConfigPath = DEFAULT_RECIPE
    """A training config (`training/README.md`, `training.config.TrainingConfig` fields) as a file, inline, or
    a shipped recipe's name (`lora_retrain`: supervised; `dpo_retrain`, `kto_retrain`: preference tuning
    from feedback); the loop fills in the name, base model, parent adapter, data sources and (except for
    styles dpo / kto, which it keeps) the style. Default: `lora_retrain`."""
    replay: ConfigPath | None = None
    """Earlier training data (chat JSONL or any file source the training config accepts) mixed in against
    forgetting."""
    replay_weight: float = Field(1.0, gt=0, le=100)
    """Mixture weight of the replay rows (1.0 = all of them once)."""
    min_corrections: int = Field(10, ge=1)
    """Corrected answers of the drifted slice needed before training starts (acceptances do not count)."""
    wait_for_corrections_s: float = Field(1800.0, ge=0)
    """How long a triggered run waits for `min_corrections` (labels usually arrive after the answers,
    through `POST /v1/feedback`) before it fails for lack of data; 0 fails at once."""
    include_accepted: bool = True
    """Also train on uncorrected answers users accepted (thumbs up, or rating >= `min_rating`)."""
    min_rating: float = Field(0.8, ge=0, le=1)
    """The rating (0..1) from which an answer counts as accepted."""

    @field_validator("training", mode="before")
    @classmethod
    def _recipe_file(cls, value: Any, info: ValidationInfo) -> Any:
        shipped = shipped_recipes()
        if isinstance(value, str) and value in shipped:
            return RECIPES_DIR / f"{value}.yaml"
        if isinstance(value, str | Path):
            path = expand_path(value, _base_dir(info))
            if not path.is_file():
                hint = did_you_mean(str(value), shipped)
                raise ValueError(
                    f"training recipe file not found: {path}{hint} (or a shipped recipe: "
                    f"{', '.join(shipped)})"
                )
            return path
        return value

    _template: dict[str, Any] = PrivateAttr(default_factory=dict)
    """`training` read and parsed once, at validation (`template()` hands out copies)."""

    @model_validator(mode="after")
    def _read_recipe(self) -> RecipeSettings:
        if isinstance(self.training, Path):
            raw = read_yaml_mapping(self.training, what="training recipe", error=SpecError)
            self._template = _absolute_paths(raw, self.training.parent)
        else:
            self._template = dict(self.training)
        return self

    @model_validator(mode="after")
    def _preference_replay(self) -> RecipeSettings:
        style = self._template.get("style")
        if style in PREFERENCE_STYLES and self.replay is not None and self.replay.suffix == ".jsonl":
            first = self.replay.read_text(encoding="utf-8").lstrip().split("\n", 1)[0]
            try:
                keys = set(json.loads(first)) if first.startswith("{") else set()
            except json.JSONDecodeError:
                keys = set()  # the training run reports a broken file with its line number
            if "messages" in keys and not keys & {"chosen", "label"}:
                raise ValueError(
                    f"recipe style {style!r} trains on preference records, but the replay file {self.replay} "
                    "holds chat records (SFT data): give a preference/KTO file or drop `replay`"
                )
        return self

    def style(self) -> str | None:
        """The recipe's own training style when it sets one the loop keeps (a preference style: dpo, kto),
        else None: the loop then trains supervised (sequential from the champion, multitask with replay)."""
        style = self._template.get("style")
        return str(style) if style in PREFERENCE_STYLES else None

    def template(self) -> dict[str, Any]:
        """The training-config template as a mapping (a copy of its own to change); relative paths in a
        recipe file are made absolute against the recipe's folder (so the stored config works from
        anywhere)."""
        return copy.deepcopy(self._template)


def _absolute_paths(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    out = dict(raw)
    for key in ("base_model", "init_adapter"):
        if isinstance(out.get(key), str) and _looks_like_path(out[key]):
            out[key] = str(expand_path(out[key], folder))
    output = out.get("output")
    if isinstance(output, dict) and isinstance(output.get("runs_dir"), str):
        out["output"] = {**output, "runs_dir": str(expand_path(output["runs_dir"], folder))}
    return out


class GateSettings(ConfigModel):
    """The offline gate: challenger vs champion on the suites (paired bootstrap)."""

    margin: float | None = Field(None, ge=0, le=1)
    """Non-inferiority margin on the regression suite (None: the suite's own `gate.margin`)."""
    regression_per_slice: bool = True
    """Also require non-inferiority on every slice of the regression suite on its own (needs enough
    examples per slice to have the power to show it)."""
    concurrency: int = Field(8, ge=1)
    """Eval requests in flight against the service."""


class GuardrailSettings(ConfigModel):
    """Caps on the challenger's health during the canary (over all its steps); a tripped one rolls back at
    once. A cap trips when the challenger's one-sided (1 - `canary.alpha`) lower confidence bound is above
    it and the challenger is worse than the champion on it; None switches one off."""

    max_error_rate: float | None = Field(0.05, ge=0, le=1)
    """Share of the challenger's requests that fail (status other than 200)."""
    max_p99_latency_ms: float | None = Field(None, gt=0)
    """The challenger's 99th-percentile latency (None: off — latency depends on the hardware; set it)."""
    max_empty_rate: float | None = Field(0.1, ge=0, le=1)
    """Share of the challenger's answers that are empty or a refusal (`refusal` scorer's phrases)."""
    min_requests: int = Field(10, ge=1)
    """Requests the challenger must have served before a guardrail may trip."""


class CanarySettings(ConfigModel):
    """The live canary: the challenger takes a growing share of the adapter's traffic, step by step; each
    step is decided by an always-valid sequential test on `scorer`, guardrails and an SRM check
    (`monitoring/canary.py` and docs/loop.md#canary give the exact rule)."""

    steps: list[float] = Field(default_factory=lambda: [0.05, 0.2, 0.5], min_length=1)
    """The challenger's share of the adapter's traffic in each step (increasing, each in (0, 1)); after the
    last step the challenger is promoted (100 %)."""
    scorer: str = "reference"
    """Score used to compare the arms (must be produced by the scorers on live traffic)."""
    alpha: float = Field(0.05, gt=0, lt=0.5)
    """Error rate of the sequential test: the chance to roll back a challenger as good as the champion, and
    to promote one worse by `mde` or more."""
    mde: float = Field(0.05, gt=0, le=1)
    """Minimum detectable effect (score points): a challenger worse than the champion by this much must not
    be promoted; one within it counts as not worse. The canary's length grows as 1/mde^2."""
    min_requests_per_step: int = Field(20, ge=2)
    """Scored requests the challenger serves in a step before the step may advance (and per arm before the
    test starts)."""
    max_requests_per_step: int | None = Field(100, ge=2)
    """A step before the last advances after this many scored challenger requests without evidence of harm
    (None: only on the test's verdict). The last step runs until the test decides."""
    guardrails: GuardrailSettings = Field(default_factory=GuardrailSettings)
    """Error, latency and empty-answer caps that roll back at once."""
    srm_p_value: float | None = Field(0.001, gt=0, lt=1)
    """Roll back when the arms' request counts in a step do not match its split (always-valid sample ratio
    mismatch test, p below this; None: off)."""
    timeout_s: float = Field(7200.0, gt=0)
    """Roll back when the canary has not promoted by then (size it with the traffic: a step at 5 % needs
    about 20 x `min_requests_per_step` requests)."""
    weight: float | None = Field(None, gt=0, lt=1)
    """Old single-step form: the same as `steps: [weight]`."""
    min_requests_per_arm: int | None = Field(None, ge=2)
    """Old name of `min_requests_per_step`."""
    margin: float | None = Field(None, gt=0, le=1)
    """Old name of `mde`."""

    @model_validator(mode="before")
    @classmethod
    def _old_keys(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        for old, new, convert in (
            ("weight", "steps", lambda v: [v]),
            ("min_requests_per_arm", "min_requests_per_step", lambda v: v),
            ("margin", "mde", lambda v: v),
        ):
            if out.get(old) is None:
                continue
            if out.get(new) is not None:
                raise ValueError(f"give {new!r} or its old form {old!r}, not both")
            out[new] = convert(out[old])
        return out

    @field_validator("steps")
    @classmethod
    def _steps_increase(cls, value: list[float]) -> list[float]:
        if any(not 0 < w < 1 for w in value):
            raise ValueError(
                f"each step is the challenger's share, in (0, 1) (100 % is the promotion): {value}"
            )
        if any(b <= a for a, b in zip(value, value[1:], strict=False)):
            raise ValueError(f"steps must increase: {value}")
        return value

    @model_validator(mode="after")
    def _budget_above_minimum(self) -> CanarySettings:
        if self.max_requests_per_step is not None and self.max_requests_per_step < self.min_requests_per_step:
            raise ValueError(
                f"max_requests_per_step ({self.max_requests_per_step}) is below min_requests_per_step "
                f"({self.min_requests_per_step})"
            )
        return self


DEFAULT_SCORERS: list[Any] = [
    "feedback",
    {"kind": "reference", "metric": "contains_answer"},
    "empty",
    "refusal",
]


class LoopSpec(ConfigModel):
    """A closed loop for one adapter: what it watches, when it retrains, how it gates and rolls out."""

    adapter: str = Field(min_length=1, max_length=64)
    """The adapter name whose `champion` the loop keeps good (clients send `model: <adapter>`). Required."""
    service_url: str = "http://127.0.0.1:8000"
    """The running tuneloop service (evals of the gate go through its OpenAI API)."""
    database_url: str | None = None
    """The request log / registry database (default: the service settings' `serving.database_url`)."""
    ray_address: str | None = None
    """Ray cluster for training (default: join the service's cluster when one runs, else a local one)."""
    slice_key: str | None = None
    """The tag that names a traffic slice (request `metadata` or feedback `tags`): the slice that grew most
    is the retraining target. None: no slicing (retrain on all feedback)."""
    windows: WindowSettings = Field(default_factory=WindowSettings)
    """Window sizes and check interval."""
    policy: TriggerPolicy = Field(default_factory=TriggerPolicy)
    """When drift starts a retraining: a shipped policy's name (`default`, `demo`, `production`, `dry_run`),
    a policy file, or the policy inline (`monitoring/policies/*.yaml` show every field)."""
    scorers: list[Any] = Field(default_factory=lambda: list(DEFAULT_SCORERS))
    """Scorers run on new traffic: names or `{kind: ..., <options>}` (see docs/loop.md#scorers)."""
    quality_scorer: str = "reference"
    """The score stream watched for a quality drop (a scorer name from `scorers`)."""
    suites: SuiteSettings
    """Eval suites for the gate. Required (at least one)."""
    recipe: RecipeSettings = Field(default_factory=RecipeSettings)
    """The retraining recipe."""
    gate: GateSettings = Field(default_factory=GateSettings)
    """The offline gate."""
    canary: CanarySettings = Field(default_factory=CanarySettings)
    """The live canary."""
    state_dir: ConfigPath | None = None
    """Where runs keep their eval results and reports (default: `<TUNELOOP_HOME>/loop/<adapter>`)."""
    backoff_minutes: float = Field(10.0, ge=0)
    """After a failed run, wait this long before triggering again."""
    lock_stale_after_s: float = Field(60.0, gt=0)
    """A loop whose lock heartbeat is older than this is presumed dead; a new loop takes over its lock and
    resumes its open run."""

    @field_validator("policy", mode="before")
    @classmethod
    def _policy_by_name_or_file(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str | Path):
            text = str(value)
            if not _looks_like_path(text):
                names = policy_names()
                if text not in names:
                    raise ValueError(
                        f"no shipped policy named {text!r}{did_you_mean(text, names)}; "
                        f"give a policy file or one of: {', '.join(names)}"
                    )
                path = POLICIES_DIR / f"{text}.yaml"
            else:
                path = expand_path(text, _base_dir(info))
            try:
                return load_policy(path)
            except PolicyError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("scorers")
    @classmethod
    def _scorers_build(cls, value: list[Any]) -> list[Any]:
        from monitoring.scorers import build_scorers

        try:  # unknown kinds/options and duplicate names fail here, not at the first check
            build_scorers(value)
        except ScorerConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LoopSpec:
        from monitoring.scorers import build_scorers

        names = [s.name for s in build_scorers(self.scorers)]
        for field, scorer in (("quality_scorer", self.quality_scorer), ("canary.scorer", self.canary.scorer)):
            if scorer not in names:
                raise ValueError(
                    f"{field} {scorer!r} is not one of the configured scorers{did_you_mean(scorer, names)} "
                    f"({', '.join(names)})"
                )
        return self

    def resolved_state_dir(self) -> Path:
        """`state_dir`, else `<TUNELOOP_HOME>/loop/<adapter>`."""
        return self.state_dir if self.state_dir is not None else tuneloop_home() / "loop" / self.adapter


def parse_spec(data: Mapping[str, Any], *, base_dir: Path | None = None) -> LoopSpec:
    """Validate a spec mapping (relative paths against `base_dir`, default: the working directory)."""
    return validate_config(LoopSpec, data, what="loop spec", base_dir=base_dir or Path.cwd(), error=SpecError)


def load_spec(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> LoopSpec:
    """Read and validate a loop spec file; `overrides` are dotted keys (`canary.mde: 0.1`)."""
    return load_config_file(LoopSpec, path, what="loop spec", overrides=overrides, error=SpecError)
