"""The official `openai` client against a service that mounts
llama-safe-server's router under /llm (.ci/consumers/server_main.rs).
Usage: consumer_client.py http://127.0.0.1:PORT"""

import sys
import urllib.request

import openai

base = sys.argv[1]
assert urllib.request.urlopen(base + "/").read() == b"my service"

oa = openai.OpenAI(base_url=base + "/llm/v1", api_key="consumer-key")
assert [m.id for m in oa.models.list()] == ["demo"]
c = oa.completions.create(model="demo", prompt="Once upon a time", temperature=0, max_tokens=32)
assert c.choices[0].text == " there lived one tiny model with many experts.", c
r = oa.chat.completions.create(
    model="demo", messages=[{"role": "user", "content": "Once upon a time"}], temperature=0
)
assert r.choices[0].message.content == " a time there lived one tiny model with many experts.", r
e = oa.embeddings.create(model="demo", input=["Once upon a time", "many experts"])
assert len(e.data) == 2 and len(e.data[0].embedding) > 0, e

try:
    openai.OpenAI(base_url=base + "/llm/v1", api_key="wrong").models.list()
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError as err:
    assert err.status_code == 401

print("consumer: the openai client through /llm: 6 checks passed")
