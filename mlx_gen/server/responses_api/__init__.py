"""OpenAI's Responses API (``/v1/responses``, stateless) on the chat path."""
