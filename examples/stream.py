"""Writer's streaming helper example: `client.chat.stream(...)` with `content.delta` events."""

from writerai import Writer

client = Writer()

with client.chat.stream(
    model="palmyra-x5",
    messages=[{"role": "user", "content": "Tell me a short story about a lighthouse."}],
) as stream:
    for event in stream:
        if event.type == "content.delta":
            print(event.delta, end="", flush=True)
    print()

completion = stream.get_final_completion()
print(completion.choices[0].message.content)
