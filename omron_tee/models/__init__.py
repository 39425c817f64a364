"""Pinned models and their runtimes: ``ModelRegistry.builtin().runtime("digits-mlp").run(x)``.

``spec`` (what a model is), ``samples`` (its bank of real inputs), ``onnx`` and
``llama`` (the runtimes), ``runtimes`` (the explicit seam between them),
``registry`` (which models exist), ``testing`` (a fake LLM for fast tests).
"""
