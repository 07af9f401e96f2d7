"""The official `openai` and `ollama` Python clients against a running server
(examples/server on the demo model): chat and completions, streaming and
not, model listing, tool calls and structured output. Usage:
python_clients.py http://127.0.0.1:PORT"""

import json
import sys

import ollama
import openai

base = sys.argv[1]
sentence = " there lived one tiny model with many experts."
chat_reply = " a time there lived one tiny model with many experts."
prompt = "Once upon a time"

oa = openai.OpenAI(base_url=base + "/v1", api_key="unused")
models = [m.id for m in oa.models.list()]
assert len(models) == 1, models
model = models[0]

c = oa.completions.create(model=model, prompt=prompt, temperature=0, max_tokens=32)
assert c.choices[0].text == sentence, c
assert c.usage.completion_tokens == 9, c.usage

text = "".join(
    chunk.choices[0].text
    for chunk in oa.completions.create(model=model, prompt=prompt, temperature=0, stream=True)
)
assert text == sentence, text

messages = [{"role": "user", "content": prompt}]
r = oa.chat.completions.create(model=model, messages=messages, temperature=0)
assert r.choices[0].message.content == chat_reply, r
assert r.choices[0].message.role == "assistant"

text = "".join(
    chunk.choices[0].delta.content or ""
    for chunk in oa.chat.completions.create(
        model=model, messages=messages, temperature=0, stream=True
    )
)
assert text == chat_reply, text

# What the server does not support is an error the client sees, not ignored.
try:
    oa.chat.completions.create(model=model, messages=messages, n=2)
    raise AssertionError("n=2 was accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "n", e.body

# Tool calls: the demo model's template has no tool syntax, so the server
# uses the generic JSON format; its grammar makes the tiny model's call valid.
tools = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"enum": ["Paris", "Rome"]}},
                "required": ["city"],
            },
        },
    }
]
ask = [{"role": "user", "content": "What is the weather in Paris?"}]
call_args = dict(model=model, tools=tools, temperature=0, max_tokens=1000, parallel_tool_calls=False)
r = oa.chat.completions.create(messages=ask, tool_choice="required", **call_args)
choice = r.choices[0]
assert choice.finish_reason == "tool_calls", r
call = choice.message.tool_calls[0]
assert call.function.name == "weather", call
assert json.loads(call.function.arguments)["city"] in ("Paris", "Rome"), call

streamed, finish = {}, None
for chunk in oa.chat.completions.create(
    messages=ask, tool_choice={"type": "function", "function": {"name": "weather"}},
    stream=True, **call_args
):
    for tc in chunk.choices[0].delta.tool_calls or []:
        entry = streamed.setdefault(tc.index, {"name": "", "arguments": ""})
        entry["name"] += tc.function.name or ""
        entry["arguments"] += tc.function.arguments or ""
    finish = chunk.choices[0].finish_reason or finish
assert finish == "tool_calls", finish
assert streamed[0]["name"] == "weather", streamed
assert json.loads(streamed[0]["arguments"]) == json.loads(call.function.arguments), streamed

# The call and its result go back; the model may answer or call again.
follow = ask + [
    choice.message.model_dump(exclude_none=True),
    {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
]
r = oa.chat.completions.create(messages=follow, **call_args)
m = r.choices[0].message
assert (r.choices[0].finish_reason == "tool_calls") == bool(m.tool_calls), r

# Structured output: a JSON schema the answer must follow.
schema = {
    "type": "object",
    "properties": {
        "city": {"enum": ["Paris", "Rome"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 9},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
r = oa.chat.completions.create(
    model=model, messages=ask, temperature=0, max_tokens=1000,
    response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": schema, "strict": True}},
)
trip = json.loads(r.choices[0].message.content)
assert trip["city"] in ("Paris", "Rome") and 1 <= trip["days"] <= 9, trip
try:
    oa.chat.completions.create(
        model=model, messages=ask,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "a+"}}},
    )
    raise AssertionError("an unsupported schema was accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "response_format", e.body

ol = ollama.Client(host=base)
listed = [m.model for m in ol.list().models]
assert listed == [model], listed

g = ol.generate(model=model, prompt=prompt, options={"temperature": 0, "num_predict": 32})
assert g.response == sentence, g
assert g.done and g.eval_count == 9, g

text = "".join(
    part.response
    for part in ol.generate(model=model, prompt=prompt, stream=True, options={"temperature": 0})
)
assert text == sentence, text

ch = ol.chat(model=model, messages=messages, options={"temperature": 0})
assert ch.message.content == chat_reply, ch
text = "".join(
    part.message.content
    for part in ol.chat(model=model, messages=messages, stream=True, options={"temperature": 0})
)
assert text == chat_reply, text

ch = ol.chat(model=model, messages=ask, format=schema, options={"temperature": 0, "num_predict": 1000})
trip = json.loads(ch.message.content)
assert trip["city"] in ("Paris", "Rome") and 1 <= trip["days"] <= 9, trip

shown = ol.show(model)
assert shown.modelinfo["general.architecture"] == "llama", shown

print("python clients: openai", openai.__version__, "and ollama: 18 checks passed")
