"""The model copy: an OpenAI-compatible worker process around a continuous-batching torch engine.

    python -m outcrop.engine.worker --model-dir DIR --port N [--device cpu|cuda] [--dtype ...]

Modules, by noun (the request path, outside in):

- ``worker``       CLI entry point: uvicorn server, background model loading, SIGTERM drain.
- ``server``       FastAPI routes (completions, chat, tokenize, models, health, metrics) and
                   the OpenAI error mapping.
- ``protocol``     pydantic wire models of that contract.
- ``requests``     validated request -> engine sequences (prompt ids + ``SamplingParams``).
- ``runtime``      loads the model, owns the engine thread, bridges outputs to asyncio.
- ``engine``       the step loop: scheduler plan -> blocks -> model step -> sampling -> detokenize
                   -> stop; preempted sequences are recomputed and resume where they stopped.
- ``scheduler``    pure decisions: admission by batch rows and free KV blocks, preemption,
                   chunked prefill, decode batches, priority classes.
- ``block_manager`` pure bookkeeping of the paged KV cache: block tables, prefix caching
                   (hash chain of full blocks, LRU pool of free cached blocks).
- ``model_runner`` the hand-written batched forward over the loaded HF modules, attending over
                   the paged cache.
- ``kv_cache``     the block pool's tensors and its byte budget.
- ``sampling``     vectorized per-row sampling and penalties.
- ``detokenizer``  incremental UTF-8-safe detokenization.
- ``tokenization`` tokenizer, chat template, EOS ids.
- ``loader``       manifest (sha256/size) verification before loading.
- ``metrics``      Prometheus metrics.
- ``auth``         the copy's token: every route but /health needs its gateway's secret.

This package imports nothing from Outcrop but ``outcrop.config``, ``outcrop.errors`` and
``outcrop.envs``, so a copy can run on any node.
"""
