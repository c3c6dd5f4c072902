"""The front doors: each one a thin adapter from its wire format to the one runtime and back.

``chat``: OpenAI chat completions. Each front door owns its routes, its
request translation and an encoder from the loop's events to its wire format.
"""
