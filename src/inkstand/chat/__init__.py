"""The chat service: Writer requests in, engine requests out, Writer responses back."""
