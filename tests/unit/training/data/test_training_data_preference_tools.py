"""Preference records (dpo pairs, kto records) from tool-calling traffic: they carry the tools and tool_choice
the request was served with, answers that are tool calls keep their calls (a correction's, or the served
ones), and TRL gets them rendered by the one rule of `training.data.tools` - the prompt serving renders, the
answers in the format an SFT record of the same conversation trains on. Malformed definitions and broken
calls are dropped and counted; the data card counts tool records."""

from __future__ import annotations

import json
from typing import Any

from tool_records import TOOLS, Logged, calls_log, served_prompt, tools_log  # type: ignore[import-not-found]

from training.config import RequestLogSource, TemplateOptions
from training.data.encode import PreferenceRow, encode_example, encode_preference
from training.data.example import Example
from training.data.format import format_row
from training.data.pipeline import prepare_data
from training.data.sources import read_source

NAMED = {"type": "function", "function": {"name": "get_weather"}}
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]
MAPPINGS = {
    "preference": {k: k for k in ("prompt", "chosen", "rejected", "tools", "tool_choice")},
    "kto": {k: k for k in ("prompt", "completion", "label", "tools", "tool_choice")},
}


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def records(url: str, kind: str) -> dict[str, list[Example]]:
    """request id -> the preference / kto examples its rows become."""
    raw = read_source(RequestLogSource(database_url=url, records=kind), "log")
    out: dict[str, list[Example]] = {}
    for row in raw.rows:
        example = format_row(row, kind, MAPPINGS[kind], TemplateOptions(), "log")
        out.setdefault(row["request_id"], []).append(example)
    return out


def trl_text(tokenizer: Any, row: PreferenceRow, answer: str) -> tuple[str, str]:
    """(prompt, prompt + answer) as TRL's trainers render a conversational row (its `tools` column given to
    the chat template)."""
    tools = json.loads(row.record["tools"]) if "tools" in row.record else None
    prompt = tokenizer.apply_chat_template(
        row.record["prompt"], tools=tools, tokenize=False, add_generation_prompt=True
    )
    full = tokenizer.apply_chat_template(
        row.record["prompt"] + row.record[answer], tools=tools, tokenize=False
    )
    return prompt, full


def sft_text(tokenizer: Any, example: Example, text: str, calls: tuple[dict[str, Any], ...]) -> str:
    """The text an SFT chat record of the same request and answer trains on."""
    answer: dict[str, Any] = {"role": "assistant", "content": text, "tool_calls": list(calls)}
    chat = Example(
        kind="chat",
        source="s",
        messages=(*example.messages, answer),
        tools=example.tools,
        tool_choice=example.tool_choice,
    )
    (encoded,) = encode_example(chat, tokenizer, 512)
    return str(tokenizer.decode(encoded.input_ids))


def test_a_corrected_tool_call_pairs_the_corrected_calls_over_the_served_ones(
    write_log: Any, tokenizer: Any, hermes_tokenizer: Any
) -> None:
    url = write_log(
        [
            Logged(  # named choice: the served answer is the arguments; the correction states the right ones
                "named",
                ASK,
                '{"city": "Pariss"}',
                tools=tools_log(NAMED),
                tool_calls=calls_log(("get_weather", {"city": "Pariss"})),
                thumbs=-1,
                correction='{"city": "Paris"}',
            ),
            Logged(  # auto: the tool parser left text beside the call; the correction is the calls' JSON
                "auto",
                ASK,
                "Let me check.",
                tools=tools_log("auto"),
                tool_calls=calls_log(("get_weather", {"city": "Pariss"})),
                thumbs=-1,
                correction=json.dumps([{"name": "get_weather", "arguments": {"city": "Paris"}}]),
            ),
        ]
    )
    got = records(url, "preference")
    named, auto = got["named"][0], got["auto"][0]
    assert named.tools == auto.tools == tuple(TOOLS) and named.tool_choice == NAMED
    assert named.chosen_calls == auto.chosen_calls == (call("get_weather", city="Paris"),)
    assert named.rejected_calls == auto.rejected_calls == (call("get_weather", city="Pariss"),)
    assert named.rejected == "" and auto.rejected == "Let me check."  # forced: the calls are the answer
    assert named.has_tool_calls and "Pariss" in named.all_text()

    # a template without tools (SmolLM2): no definitions shown, as served; calls as serving parses them
    (row,) = encode_preference(named, tokenizer, 512, "dpo")
    assert "tools" not in row.record
    assert row.record["chosen"] == [{"role": "assistant", "content": '{"city": "Paris"}'}]  # the grammar's
    assert row.record["rejected"] == [{"role": "assistant", "content": '{"city": "Pariss"}'}]
    (row,) = encode_preference(auto, tokenizer, 512, "dpo")
    expected = '[{"name": "get_weather", "arguments": {"city": "Paris"}}]'
    assert row.record["chosen"][0]["content"] == expected

    # a template with tools: TRL's rendering is serving's prompt and SFT's answer, for both answers
    for example in (named, auto):
        (row,) = encode_preference(example, hermes_tokenizer, 512, "dpo")
        assert json.loads(row.record["tools"]) == TOOLS
        prompt, chosen = trl_text(hermes_tokenizer, row, "chosen")
        assert prompt == served_prompt(hermes_tokenizer, ASK, TOOLS, example.tool_choice)
        assert "Current weather in a city." in prompt
        assert chosen == sft_text(hermes_tokenizer, example, example.chosen, example.chosen_calls)
        _, rejected = trl_text(hermes_tokenizer, row, "rejected")
        assert rejected == sft_text(hermes_tokenizer, example, example.rejected, example.rejected_calls)
    assert row.record["chosen"][0]["content"] == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
    assert row.record["rejected"][0]["content"].startswith("Let me check.\n<tool_call>")


def test_a_correction_stating_the_served_calls_is_an_acceptance(write_log: Any) -> None:
    url = write_log(
        [
            Logged(
                "same",
                ASK,
                '[{"name": "get_weather", "parameters": {"city": "Paris"}}]',
                tools=tools_log("required"),
                tool_calls=calls_log(("get_weather", {"city": "Paris"})),
                thumbs=None,
                correction='[{"name": "get_weather", "parameters": {"city": "Paris"}}]',
            ),
        ]
    )
    (example,) = records(url, "kto")["same"]
    assert example.label is True and example.completion_calls == (call("get_weather", city="Paris"),)


def test_a_thumbed_down_tool_call_is_a_kto_undesirable_record_with_tools_in_its_prompt(
    write_log: Any, hermes_tokenizer: Any
) -> None:
    url = write_log(
        [
            Logged(
                "down",
                ASK,
                '[{"name": "send_email", "parameters": {"to": "ops", "body": "Paris"}}]',
                tools=tools_log("required"),
                tool_calls=calls_log(("send_email", {"to": "ops", "body": "Paris"})),
                thumbs=-1,
            ),
        ]
    )
    (example,) = records(url, "kto")["down"]
    assert example.label is False and example.tools == tuple(TOOLS) and example.tool_choice == "required"
    assert example.completion_calls == (call("send_email", to="ops", body="Paris"),)
    (row,) = encode_preference(example, hermes_tokenizer, 512, "kto")
    assert row.record["label"] is False and json.loads(row.record["tools"]) == TOOLS
    prompt, full = trl_text(hermes_tokenizer, row, "completion")
    assert prompt == served_prompt(hermes_tokenizer, ASK, TOOLS, "required")
    assert "Send an email." in prompt  # the definitions the model was served with
    answer = '[{"name": "send_email", "parameters": {"to": "ops", "body": "Paris"}}]'  # vLLM's required array
    assert row.record["completion"] == [{"role": "assistant", "content": answer}]
    assert full == prompt + answer + "<|im_end|>\n"


def test_malformed_tools_and_broken_calls_are_counted_and_the_card_counts_tool_pairs(
    write_log: Any, make_config: Any, hermes_tokenizer: Any
) -> None:
    good = [
        Logged(
            f"ok{i}",
            [{"role": "user", "content": f"What's the weather in city number {i}?"}],
            '{"city": "Nowhere"}',
            tools=tools_log(NAMED),
            tool_calls=calls_log(("get_weather", {"city": "Nowhere"})),
            thumbs=-1,
            correction=json.dumps({"city": f"City {i}"}),
        )
        for i in range(5)
    ]
    plain = Logged(  # no tools: a text pair beside the tool pairs
        "plain", [{"role": "user", "content": "Hi there?"}], "Go away.", thumbs=-1, correction="Hello!"
    )
    bad = [
        Logged(  # definitions that are not JSON
            "tools",
            ASK,
            "x",
            tools="{not json",
            tool_calls=calls_log(("get_weather", {})),
            thumbs=-1,
            correction="It is sunny in Paris.",
        ),
        Logged(  # a served call cut short by max_tokens
            "cut",
            ASK,
            '{"city": "Par',
            tools=tools_log(NAMED),
            tool_calls=calls_log(("get_weather", '{"city": "Par')),
            thumbs=-1,
            correction='{"city": "Paris"}',
        ),
    ]
    config = make_config(
        sources=[
            {"kind": "request_log", "database_url": write_log([*good, plain, *bad]), "records": "preference"}
        ],
        style="dpo",
        data={"split": {"validation": 0.0, "test": 0.0}},
    )
    prepared = prepare_data(config, hermes_tokenizer)
    card = prepared.card
    assert card.dropped == {"bad_tools": 1, "bad_tool_calls": 1}
    assert card.tool_calling["train"] == {"with_tools": 5, "tool_call_answers": 5}
    assert card.preference["train"] == {"pairs": 6}
    assert "5 answering with tool calls" in card.to_markdown()
    assert set(prepared.train.column_names) == {"prompt", "chosen", "rejected", "tools", "source"}
    by_tools = sorted(prepared.train["tools"], key=lambda t: t is None)
    assert [json.loads(t) for t in by_tools[:5]] == [TOOLS] * 5 and by_tools[5] is None
    held = [e.to_record() for e in prepared.examples["train"] if e.tools]
    assert all(
        r["tools"] == TOOLS and r["chosen_calls"][0]["function"]["name"] == "get_weather" for r in held
    )
