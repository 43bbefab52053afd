"""Drives credentialflow's AI routes with the official `openai` Python SDK, holding only a
credentialflow key, as tests/openai_sdk.rs sets them up (fake providers behind, three
nodes). Fails with an assertion on anything the client would notice; prints what the
Rust side checks against the providers' records as one JSON line.

Environment: CF_BASES (comma-separated `http://host:port/ai/v1`, one per node), CF_KEY,
CF_PRIVATE_BASE, CF_LIMITED_KEY, CF_LIMITED_BASES.
"""

import json
import os
import threading
import time

import openai

bases = os.environ["CF_BASES"].split(",")
key = os.environ["CF_KEY"]
clients = [openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=20) for base in bases]


def chat(client, model, text, **extra):
    return client.chat.completions.with_raw_response.create(
        model=model,
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": text},
        ],
        **extra,
    )


def streamed(client, model, text):
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
    )
    content, usage = "", None
    for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
        if chunk.usage is not None:
            usage = chunk.usage
    return content, usage


served = {}
# "smart": an OpenAI-style provider answering 429 first, then Anthropic, translated.
# "fast": an OpenAI-style provider answering 500 first, then another OpenAI-style one.
for index, client in enumerate(clients):
    for model, provider in (("smart", "claude"), ("fast", "openai")):
        text = f"hello from node {index} via {model}"
        raw = chat(client, model, text, max_tokens=64, stop=["END"], temperature=0.2)
        assert raw.headers["x-credentialflow-provider"] == provider, raw.headers
        completion = raw.parse()
        assert completion.object == "chat.completion"
        assert completion.choices[0].message.role == "assistant"
        assert completion.choices[0].message.content == text, completion
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
        assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
        served[provider] = served.get(provider, 0) + 1

        content, usage = streamed(client, model, text + " streamed")
        assert content == text + " streamed", content
        assert usage is not None and usage.completion_tokens == len((text + " streamed").split())
        served[provider] += 1

models = sorted(m.id for m in clients[0].models.list())
assert models == ["fast", "metered", "smart"], models

# Personal data is masked before it leaves and put back for the client, streamed or not.
private = openai.OpenAI(base_url=os.environ["CF_PRIVATE_BASE"], api_key=key, max_retries=0, timeout=20)
secret_prompt = "write to jane.doe@example.com about card 4111 1111 1111 1111 today"
answer = private.chat.completions.create(model="smart", messages=[{"role": "user", "content": secret_prompt}])
assert answer.choices[0].message.content == secret_prompt, answer
content, _ = streamed(private, "smart", secret_prompt)
assert content == secret_prompt, content

# Errors come back as the SDK's own exceptions.
try:
    clients[0].chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("an unknown model was served")
except openai.NotFoundError:
    pass
try:
    openai.OpenAI(base_url=bases[0], api_key="cf_not_a_key", max_retries=0).models.list()
    raise AssertionError("a bad key was accepted")
except openai.AuthenticationError:
    pass

# A token limit across the three nodes: workers on every node send until the limit has
# refused them for 3 s in a row; what the provider served is checked on the Rust side.
limited_key = os.environ["CF_LIMITED_KEY"]
limited_bases = os.environ["CF_LIMITED_BASES"].split(",")
outcomes = {"ok": 0, "refused": 0, "other": []}
lock = threading.Lock()


def worker(base):
    client = openai.OpenAI(base_url=base, api_key=limited_key, max_retries=0, timeout=20)
    refused_in_a_row = 0
    for _ in range(60):
        try:
            client.chat.completions.create(
                model="metered",
                messages=[{"role": "user", "content": "one two three four five"}],
                max_tokens=16,
            )
            with lock:
                outcomes["ok"] += 1
            refused_in_a_row = 0
        except openai.RateLimitError as error:
            assert error.body["code"] == "token_limit_exceeded", error.body
            with lock:
                outcomes["refused"] += 1
            refused_in_a_row += 1
            # Capacity other nodes hold comes back when their 2 s leases end: give it 3 s.
            if refused_in_a_row >= 15:
                return
            time.sleep(0.2)
        except openai.APIStatusError as error:
            with lock:
                outcomes["other"].append(error.status_code)


threads = [threading.Thread(target=worker, args=(base,)) for base in limited_bases for _ in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
assert not outcomes["other"], outcomes

print(json.dumps({"served": served, "limited": outcomes}))
