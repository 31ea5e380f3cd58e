"""The request log's tool-calling traffic becomes tool-calling chat records: the tools and tool_choice it was
served with, the served tool calls (or a correction's) as the answer, earlier tool turns kept; unreadable
logged calls are dropped with a counted reason; the data card counts tool-calling records."""

from __future__ import annotations

from typing import Any

from tool_records import TOOLS, Logged, calls_log, tools_log  # type: ignore[import-not-found]

from training.config import RequestLogSource, TemplateOptions
from training.data.format import format_row
from training.data.pipeline import prepare_data
from training.data.sources import read_source

NAMED = {"type": "function", "function": {"name": "get_weather"}}
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def records(url: str) -> dict[str, Any]:
    """request id -> the chat record its row becomes."""
    raw = read_source(RequestLogSource(database_url=url), "log")
    mapping = {"messages": "messages", "tools": "tools", "tool_choice": "tool_choice"}
    return {row["request_id"]: format_row(row, "chat", mapping, TemplateOptions(), "log") for row in raw.rows}


def test_accepted_tool_calls_become_the_answer(write_log: Any) -> None:
    url = write_log(
        [
            Logged(  # tool_choice required: the answer text is vLLM's array, the calls are logged apart
                "req",
                ASK,
                '[{"name": "get_weather", "parameters": {"city": "Paris"}}]',
                tools=tools_log("required"),
                tool_calls=calls_log(("get_weather", {"city": "Paris"})),
            ),
            Logged(  # auto: the tool parser left some text beside the call
                "auto",
                ASK,
                "Let me check.",
                tools=tools_log("auto"),
                tool_calls=calls_log(("get_weather", {"city": "Paris"})),
            ),
        ]
    )
    got = records(url)
    ex = got["req"]
    assert ex.tools == tuple(TOOLS) and ex.tool_choice == "required"
    assert list(ex.messages) == [
        *ASK,
        {"role": "assistant", "content": "", "tool_calls": [call("get_weather", city="Paris")]},
    ]
    assert got["auto"].messages[-1] == {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [call("get_weather", city="Paris")],
    }


def test_a_conversation_with_earlier_tool_turns_keeps_them(write_log: Any) -> None:
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "content": '{"sky": "sunny"}', "tool_call_id": "call_9"},
    ]
    url = write_log([Logged("turn2", history, "Sunny in Paris.", tools=tools_log("auto"))])
    ex = records(url)["turn2"]
    assert [m["role"] for m in ex.messages] == ["user", "assistant", "tool", "assistant"]
    assert ex.messages[1]["tool_calls"] == [{"id": "call_9", **call("get_weather", city="Paris")}]
    assert ex.messages[2]["tool_call_id"] == "call_9"
    assert ex.messages[-1] == {"role": "assistant", "content": "Sunny in Paris."}  # answered in words
    assert ex.tools == tuple(TOOLS) and not ex.messages[-1].get("tool_calls")


def test_corrections_replace_the_served_calls(write_log: Any) -> None:
    wrong = calls_log(("get_weather", {"city": "Pariss"}))
    url = write_log(
        [
            Logged(  # named function: the correction is the arguments object
                "args", ASK, '{"city": "Pariss"}', tools=tools_log(NAMED), tool_calls=wrong, thumbs=-1,
                correction='{"city": "Paris"}',
            ),
            Logged(  # the calls themselves
                "calls", ASK, "[]", tools=tools_log("required"), tool_calls=wrong, thumbs=-1,
                correction='[{"name": "send_email", "arguments": {"to": "ops", "body": "Paris?"}}]',
            ),
            Logged(  # words: a text answer (corrections are text)
                "words", ASK, '{"city": "Pariss"}', tools=tools_log(NAMED), tool_calls=wrong, thumbs=-1,
                correction="Which Paris: France or Texas?",
            ),
        ]
    )  # fmt: skip
    got = records(url)
    assert got["args"].messages[-1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [call("get_weather", city="Paris")],
    }
    assert got["args"].tool_choice == NAMED
    assert got["calls"].messages[-1]["tool_calls"] == [call("send_email", to="ops", body="Paris?")]
    assert got["words"].messages[-1] == {"role": "assistant", "content": "Which Paris: France or Texas?"}
    assert got["words"].tools == tuple(TOOLS)


def test_unreadable_logged_calls_are_dropped_and_counted(
    write_log: Any, make_config: Any, tokenizer: Any
) -> None:
    good = [
        Logged(
            f"ok{i}",
            [{"role": "user", "content": f"What's the weather in city number {i}?"}],
            "",
            tools=tools_log(NAMED),
            tool_calls=calls_log(("get_weather", {"city": f"City {i}"})),
        )
        for i in range(6)
    ]
    bad = [
        Logged(
            "cut",
            ASK,
            '{"city": "Par',
            tools=tools_log(NAMED),
            tool_calls=calls_log(("get_weather", '{"city": "Par')),
        ),
        Logged("junk", ASK, "", tools=tools_log("required"), tool_calls="[{not json"),
        Logged("tools", ASK, "", tools="{not json", tool_calls=calls_log(("get_weather", {"city": "Paris"}))),
    ]
    config = make_config(
        sources=[{"kind": "request_log", "database_url": write_log([*good, *bad])}],
        data={"split": {"validation": 0.0, "test": 0.0}},
    )
    card = prepare_data(config, tokenizer).card
    assert card.dropped == {"bad_tool_calls": 2, "bad_tools": 1}
    assert card.tool_calling["train"] == {"with_tools": 6, "tool_call_answers": 6}
    assert (
        "## Tool-calling records" in card.to_markdown()
        and "6 answering with tool calls" in card.to_markdown()
    )


def test_a_card_without_tool_records_has_no_tool_section(make_config: Any, tokenizer: Any) -> None:
    config = make_config()
    card = prepare_data(config, tokenizer).card
    assert card.tool_calling == {} and "Tool-calling" not in card.to_markdown()
