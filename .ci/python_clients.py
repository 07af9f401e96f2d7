"""The official `openai` and `ollama` Python clients against a running server
(examples/server on the demo model): chat and completions, streaming and
not, model listing. Usage: python_clients.py http://127.0.0.1:PORT"""

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

shown = ol.show(model)
assert shown.modelinfo["general.architecture"] == "llama", shown

print("python clients: openai", openai.__version__, "and ollama: 12 checks passed")
