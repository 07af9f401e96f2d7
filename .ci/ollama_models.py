"""The official `ollama` client against llama-safe-server serving several
models from a folder (--models-dir): list, ps, show, generate (which loads on
demand), and Ollama's unload (keep_alive 0). Usage:
ollama_models.py http://127.0.0.1:PORT MODEL_A MODEL_B"""

import sys
import time

import ollama

base, a, b = sys.argv[1], sys.argv[2], sys.argv[3]
ol = ollama.Client(host=base)

listed = sorted(m.model for m in ol.list().models)
assert listed == sorted([a, b]), listed
assert ol.ps().models == [], ol.ps()

shown = ol.show(b)  # read from the file: nothing loads
assert shown.modelinfo["general.architecture"] == "llama", shown
assert ol.ps().models == []

g = ol.generate(model=a, prompt="Once upon a time", options={"temperature": 0}, keep_alive="10m")
assert g.response == " there lived one tiny model with many experts.", g
running = ol.ps().models
assert [m.model for m in running] == [a] and running[0].size > 0, running

ol.generate(model=a, keep_alive=0)  # Ollama's `ollama stop`
for _ in range(100):
    if not ol.ps().models:
        break
    time.sleep(0.05)
assert ol.ps().models == [], ol.ps()
print("ollama client, several models: list, ps, show, load on demand, unload: ok")
