"""Writer's interactive sample chatbot from the chat completion guide, unmodified.

A system prompt, the whole history resent each turn, streamed replies; `exit` ends it.
"""

from writerai import Writer

client = Writer()


def chat_with_palmyra():
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    while True:
        user_input = input("You: ")
        if user_input.lower() == "exit":
            print("Goodbye!")
            break
        messages.append({"role": "user", "content": user_input})
        response = client.chat.chat(model="palmyra-x5", messages=messages, stream=True)
        output_text = ""
        print("Palmyra: ", end="")
        for chunk in response:
            if chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="", flush=True)
                output_text += chunk.choices[0].delta.content
        print()
        messages.append({"role": "assistant", "content": output_text})


if __name__ == "__main__":
    chat_with_palmyra()
