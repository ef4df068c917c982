"""Anthropic's Messages API (``/v1/messages``, ``/v1/messages/count_tokens``).

Requests map onto the chat request and run on the chat endpoint's path
(:mod:`mlx_gen.server.chat_run`); imports only the server's own modules below it.
"""
