"""The official `openai` Python package against a running smollm3-web.

Usage: python openai_client.py BASE_URL API_KEY CONTEXT

Run by tests/openai_client.rs, which starts the server. Exits 0 when every check passes, else
prints the failed check and exits 1. The model may be the random-weight fixture, so checks are
about the protocol and the server's behaviour, not about what the text says.
"""

import json
import sys

import openai
from openai import OpenAI

base_url, api_key, context = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
checks = 0


def check(condition, message):
    global checks
    checks += 1
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name three colours."},
]
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}

# The model list names what the server serves.
models = client.models.list()
check(len(models.data) == 1, f"one model listed: {models}")

# Not streamed: the typed response parses; usage adds up; greedy (temperature 0).
full = client.chat.completions.create(
    model="any-name", messages=MESSAGES, temperature=0, max_tokens=12, extra_body=NO_THINK
)
choice = full.choices[0]
check(full.model == "any-name", f"the model name is echoed: {full.model}")
check(full.object == "chat.completion", full.object)
check(choice.message.role == "assistant", choice.message.role)
check(isinstance(choice.message.content, str) and choice.message.content, repr(choice.message))
check(choice.finish_reason in ("stop", "length"), choice.finish_reason)
usage = full.usage
check(usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 12, usage)
check(usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage)
text = choice.message.content

# Streamed, with usage: the same greedy text, in more than one delta, then a usage chunk.
stream = client.chat.completions.create(
    model="any-name",
    messages=MESSAGES,
    temperature=0,
    max_tokens=12,
    stream=True,
    stream_options={"include_usage": True},
    extra_body=NO_THINK,
)
deltas, finish, streamed_usage, roles = [], None, None, []
for chunk in stream:
    if chunk.usage is not None:
        streamed_usage = chunk.usage
        check(chunk.choices == [], f"the usage chunk has no choices: {chunk}")
        continue
    delta = chunk.choices[0].delta
    if delta.role:
        roles.append(delta.role)
    if delta.content:
        deltas.append(delta.content)
    if chunk.choices[0].finish_reason:
        finish = chunk.choices[0].finish_reason
check(roles == ["assistant"], f"one role delta: {roles}")
check(len(deltas) > 1, f"the answer streams in pieces: {deltas}")
check("".join(deltas) == text, f"stream {''.join(deltas)!r} != non-stream {text!r}")
check(finish == choice.finish_reason, f"{finish} != {choice.finish_reason}")
check(streamed_usage is not None and streamed_usage.completion_tokens == usage.completion_tokens,
      f"{streamed_usage} vs {usage}")
# The second identical request found its whole prompt in the slot's cache.
cached = streamed_usage.prompt_tokens_details.cached_tokens
check(cached == usage.prompt_tokens, f"cached {cached} of {usage.prompt_tokens}")

# A stop string ends the answer before it, and is not part of it.
if len(text) > 4:
    stop = text[2:4]
    stopped = client.chat.completions.create(
        model="m", messages=MESSAGES, temperature=0, max_tokens=12, stop=[stop],
        extra_body=NO_THINK,
    )
    want = text[: text.index(stop)]
    got = stopped.choices[0].message.content
    check(got == want, f"stop {stop!r}: {got!r} != {want!r}")
    check(stopped.choices[0].finish_reason == "stop", stopped.choices[0].finish_reason)

# A text completion.
completion = client.completions.create(model="m", prompt="Once upon a time", max_tokens=5,
                                       temperature=0)
check(completion.object == "text_completion", completion.object)
check(isinstance(completion.choices[0].text, str), completion)
check(completion.usage.completion_tokens <= 5, completion.usage)

# Tool calls: with tool_choice required or named, every call the model writes parses and
# matches its tool's schema, whatever the weights (the fixture's are random), in SmolLM3's
# XML format and its Python one; one call by default (no parallel_tool_calls), and the
# answer ends there; streamed calls reassemble to the same.
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris for the next 3 days?"}]


def check_call(call):
    check(call.type == "function" and call.function.name == "get_weather", call)
    arguments = json.loads(call.function.arguments)
    check(set(arguments) == {"city", "days"}, arguments)
    check(isinstance(arguments["city"], str) and len(arguments["city"]) <= 20, arguments)
    check(isinstance(arguments["days"], int) and 1 <= arguments["days"] <= 7, arguments)


for seed, kwargs in [(1, {}), (2, {"python_tools": True})]:
    for choice in ["required", {"type": "function", "function": {"name": "get_weather"}}]:
        called = client.chat.completions.create(
            model="m", messages=ASK, tools=[WEATHER], tool_choice=choice, temperature=1.0,
            seed=seed, max_tokens=200,
            extra_body={"chat_template_kwargs": {"enable_thinking": False, **kwargs}},
        )
        answer = called.choices[0]
        check(answer.finish_reason == "tool_calls", f"{kwargs} {choice}: {answer}")
        check(len(answer.message.tool_calls) == 1, answer.message)
        check_call(answer.message.tool_calls[0])
        streamed = client.chat.completions.create(
            model="m", messages=ASK, tools=[WEATHER], tool_choice=choice, temperature=1.0,
            seed=seed, max_tokens=200, stream=True,
            extra_body={"chat_template_kwargs": {"enable_thinking": False, **kwargs}},
        )
        pieces, finish = {}, None
        for chunk in streamed:
            for delta in chunk.choices[0].delta.tool_calls or []:
                piece = pieces.setdefault(delta.index, {"name": "", "arguments": ""})
                piece["name"] += delta.function.name or ""
                piece["arguments"] += delta.function.arguments or ""
            finish = chunk.choices[0].finish_reason or finish
        check(finish == "tool_calls", finish)
        # The streamed pieces reassemble to the same call: the same request and seed, its
        # prompt found in the slot's cache with the logits it was read with (a prompt token
        # run again alone can round differently, and at temperature 1 draw another token).
        check(list(pieces) == [0], pieces)
        first = answer.message.tool_calls[0].function
        check(pieces[0] == {"name": first.name, "arguments": first.arguments},
              f"{kwargs} {choice}: streamed {pieces[0]} != {first}")

# Errors arrive as the typed exceptions, with OpenAI's fields.
try:
    client.chat.completions.create(model="m", messages=MESSAGES, temperature=-1)
    check(False, "temperature -1 was accepted")
except openai.BadRequestError as e:
    check(e.status_code == 400, e)
    check(e.body.get("param") == "temperature", e.body)
try:
    long_prompt = "word " * (context + 10)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": long_prompt}])
    check(False, "a prompt over the context was accepted")
except openai.BadRequestError as e:
    check(e.type == "exceed_context_size_error", e.body)
    check(e.body.get("n_ctx") == context and e.body.get("n_prompt_tokens") > context, e.body)
try:
    OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
    check(False, "a wrong key was accepted")
except openai.AuthenticationError as e:
    check(e.status_code == 401, e)
try:
    client.chat.completions.create(model="m", messages=MESSAGES, n=2)
    check(False, "n=2 was accepted")
except openai.BadRequestError as e:
    check(e.body.get("param") == "n", e.body)

print(f"ok: {checks} checks")
