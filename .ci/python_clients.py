"""The official `openai`, `ollama` and `anthropic` Python clients against
running llama-safe-server binaries on the demo model: chat and completions,
streaming and not, model listing, embeddings, tool calls on every API,
structured output, log-probabilities, API keys; and, on a second server whose
chat template thinks (.ci/thinking.jinja), the thinking apart from the answer
on every API. Usage:
python_clients.py http://127.0.0.1:PORT API_KEY http://127.0.0.1:THINKING_PORT"""

import json
import math
import sys

import anthropic
import ollama
import openai

base, key, thinking_base = sys.argv[1], sys.argv[2], sys.argv[3]
checks = 0


def check(condition, what):
    global checks
    assert condition, what
    checks += 1

sentence = " there lived one tiny model with many experts."
chat_reply = " a time there lived one tiny model with many experts."
prompt = "Once upon a time"

# A wrong key is refused by every client.
try:
    openai.OpenAI(base_url=base + "/v1", api_key="wrong").models.list()
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError as e:
    check(e.status_code == 401, e)

oa = openai.OpenAI(base_url=base + "/v1", api_key=key)
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

# Embeddings: unit-length vectors, one per input, the same text the same.
e = oa.embeddings.create(model=model, input=["Once upon a time", "many experts", "Once upon a time"])
vectors = [d.embedding for d in e.data]
check(len(vectors) == 3 and vectors[0] == vectors[2] and vectors[0] != vectors[1], e)
check(abs(math.sqrt(sum(x * x for x in vectors[0])) - 1) < 1e-4, vectors[0][:4])
check(e.usage.prompt_tokens > 0, e.usage)
try:
    oa.embeddings.create(model=model, input=[])
    raise AssertionError("an empty batch was accepted")
except openai.BadRequestError as err:
    check(err.body["param"] == "input", err.body)

# Log-probabilities: greedy picks the most likely token.
r = oa.chat.completions.create(
    model=model, messages=messages, temperature=0, logprobs=True, top_logprobs=2
)
tokens = r.choices[0].logprobs.content
check("".join(t.token for t in tokens) == chat_reply, tokens)
check(all(t.top_logprobs[0].token == t.token for t in tokens), tokens)

ol = ollama.Client(host=base, headers={"Authorization": "Bearer " + key})
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

emb = ol.embed(model=model, input=["Once upon a time", "many experts"])
check(len(emb.embeddings) == 2, emb)
check(all(abs(a - b) < 1e-5 for a, b in zip(emb.embeddings[0], vectors[0])), emb.embeddings[0][:4])

# Tools on Ollama's chat: the generic format lets the model call or answer;
# a call's arguments are an object.
ch = ol.chat(model=model, messages=ask, tools=tools, options={"temperature": 0, "num_predict": 1000})
for call in ch.message.tool_calls or []:
    check(call.function.name == "weather" and call.function.arguments["city"] in ("Paris", "Rome"), call)
check(bool(ch.message.tool_calls) or bool(ch.message.content), ch)

# Anthropic's client: messages whole and streamed, tools, errors.
an = anthropic.Anthropic(base_url=base, api_key=key)
# This client version sends no sampling fields of its own: `temperature` rides
# in extra_body (the server takes Anthropic's temperature, top_p and top_k).
greedy = {"temperature": 0}
m = an.messages.create(model=model, max_tokens=64, messages=messages, extra_body=greedy)
check(m.content[0].type == "text" and m.content[0].text == chat_reply, m)
check(m.stop_reason == "end_turn" and m.usage.output_tokens == 11, m)
with an.messages.stream(model=model, max_tokens=64, messages=messages, extra_body=greedy) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
check(text == chat_reply and final.stop_reason == "end_turn", final)
weather = {
    "name": "weather",
    "description": "The weather in a city",
    "input_schema": tools[0]["function"]["parameters"],
}
m = an.messages.create(
    model=model, max_tokens=1000, tools=[weather], messages=ask, extra_body=greedy,
    tool_choice={"type": "any", "disable_parallel_tool_use": True},
)
use = [b for b in m.content if b.type == "tool_use"]
check(m.stop_reason == "tool_use" and use and use[0].input["city"] in ("Paris", "Rome"), m)
with an.messages.stream(
    model=model, max_tokens=1000, tools=[weather], messages=ask, extra_body=greedy,
    tool_choice={"type": "tool", "name": "weather", "disable_parallel_tool_use": True},
) as stream:
    final = stream.get_final_message()
streamed_use = [b for b in final.content if b.type == "tool_use"]
check(streamed_use and streamed_use[0].input == use[0].input, final)
follow = an.messages.create(
    model=model, max_tokens=20, tools=[weather],
    messages=ask + [
        {"role": "assistant", "content": [use[0].model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use[0].id, "content": "sunny"}]},
    ],
)
check(follow.role == "assistant", follow)
# Structured output: output_config.format, a JSON schema.
m = an.messages.create(
    model=model, max_tokens=1000, messages=ask, extra_body=greedy,
    output_config={"format": {"type": "json_schema", "schema": schema}},
)
trip = json.loads(m.content[0].text)
check(trip["city"] in ("Paris", "Rome") and 1 <= trip["days"] <= 9, trip)
try:
    an.messages.create(model=model, max_tokens=0, messages=messages)
    raise AssertionError("max_tokens 0 was accepted")
except anthropic.BadRequestError as err:
    check(err.body["type"] == "error", err.body)
try:
    anthropic.Anthropic(base_url=base, api_key="wrong").messages.create(
        model=model, max_tokens=4, messages=messages
    )
    raise AssertionError("a wrong key was accepted")
except anthropic.AuthenticationError as err:
    check(err.status_code == 401, err)

# Thinking apart from the answer, on the server whose template thinks.
toa = openai.OpenAI(base_url=thinking_base + "/v1", api_key="unused")
r = toa.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=12)
thought = r.choices[0].message.model_extra["reasoning_content"]
check(thought and not r.choices[0].message.content, r)
streamed = ""
for chunk in toa.chat.completions.create(
    model=model, messages=messages, temperature=0, max_tokens=12, stream=True
):
    streamed += (chunk.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
check(streamed == thought, streamed)
r = toa.chat.completions.create(
    model=model, messages=messages, temperature=0, max_tokens=12,
    extra_body={"chat_template_kwargs": {"enable_thinking": False}},
)
check(r.choices[0].message.content and "reasoning_content" not in (r.choices[0].message.model_extra or {}), r)
tol = ollama.Client(host=thinking_base)
ch = tol.chat(model=model, messages=messages, think=True, options={"temperature": 0, "num_predict": 12})
check(ch.message.thinking == thought and ch.message.content == "", ch)
ch = tol.chat(model=model, messages=messages, think=False, options={"temperature": 0, "num_predict": 12})
check(not ch.message.thinking and ch.message.content, ch)
tan = anthropic.Anthropic(base_url=thinking_base, api_key="unused")
m = tan.messages.create(
    model=model, max_tokens=12, messages=messages, extra_body=greedy,
    thinking={"type": "enabled", "budget_tokens": 1024},
)
check(m.content[0].type == "thinking" and m.content[0].thinking == thought, m)

# Images: the demo server loads the demo projector, which reads any image
# as the sentence's first word, so the sentence follows it.
import base64
import pathlib

png = pathlib.Path(__file__).resolve().parent.parent / "examples" / "demo.png"
b64 = base64.b64encode(png.read_bytes()).decode()
g = ol.generate(model=model, prompt=" Once upon a time", images=[b64], options={"temperature": 0})
check(g.response == sentence, g)
g = ol.generate(model=model, prompt=" Once upon a time", images=[png], options={"temperature": 0})
check(g.response == sentence, g)
ch = ol.chat(model=model, messages=[{"role": "user", "content": prompt, "images": [png]}],
             options={"temperature": 0, "num_predict": 16})
check(ch.message.content, ch)
image_message = [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64}},
    {"type": "text", "text": prompt},
]}]
r = oa.chat.completions.create(model=model, messages=image_message, temperature=0, max_tokens=16)
check(r.choices[0].message.content and r.usage.prompt_tokens > 16, r)
m = an.messages.create(model=model, max_tokens=8, extra_body=greedy, messages=[{"role": "user", "content": [
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64}},
    {"type": "text", "text": prompt},
]}])
check(m.content[0].type == "text" and m.usage.input_tokens > 16, m)
for bad in ["https://example.com/cat.png", "data:image/png;base64,bm90IGFuIGltYWdl"]:
    try:
        oa.chat.completions.create(model=model, max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": bad}}, {"type": "text", "text": prompt}]}])
        raise AssertionError(f"{bad} was accepted")
    except openai.BadRequestError as e:
        check(e.status_code == 400, e)

print(
    f"python clients: openai {openai.__version__}, ollama, anthropic {anthropic.__version__}:"
    f" 18 + {checks} checks passed"
)
