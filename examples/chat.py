"""Writer's non-streaming SDK example: `client.chat.chat(...)`, unmodified."""

from writerai import Writer

client = Writer()  # reads WRITER_API_KEY and WRITER_BASE_URL

chat = client.chat.chat(
    messages=[{"content": "Write a poem about Python", "role": "user"}],
    model="palmyra-x5",
)
print(chat.choices[0].message.content)
