"""The model copy: an OpenAI-compatible worker process around a continuous-batching torch engine.

    python -m outcrop.engine.worker --model-dir DIR --port N [--device cpu|cuda] [--dtype ...]

Two processes (vLLM v1's shape): the **API process** (HTTP, tokenizing, output processing)
and the **engine-core process** (scheduler, paged KV cache, model), joined by ZeroMQ
sockets carrying MessagePack; ``--engine-in-process`` runs the core on a thread instead.

The request path, outside in:

1. ``worker``         CLI entry point (``process``: options, background loading, the copy token and
                      the SIGTERM drain, shared with the embedding worker).
2. ``auth``           the copy's token: every route but /health needs its gateway's secret.
3. ``server``         FastAPI routes (completions, chat, tokenize, models, health, metrics), the
                      OpenAI error mapping, SSE; ``protocol`` holds the pydantic wire models.
4. ``requests``       validated request -> prompt ids + ``SamplingParams`` (tokenizing off the
                      event loop; ``tokenization``: tokenizer, chat template, EOS ids).
5. ``runtime``        per-request queues; sends requests to the core and hands each step's
                      outputs to the waiting handlers; refuses (503) beyond the queue bound.
6. ``core``           the engine-core process and the API side's ``CoreClient``; ``messages``
                      holds what crosses (one ``StepOutputs`` per step: all rows' new token ids).
7. ``engine``         ``EngineCore``: the step loop: scheduler plan -> blocks -> model step ->
                      sampling -> EOS/length; preempted sequences are recomputed and resume.
8. ``scheduler``      pure decisions: admission by batch rows and free KV blocks, preemption,
                      chunked prefill, decode batches, priority classes (online before batch).
9. ``block_manager``  pure bookkeeping of the paged KV cache: block tables, prefix caching
                      (hash chain of full blocks, LRU pool of free cached blocks).
10. ``model_runner``  the hand-written batched forward over the loaded HF modules, attending
                      over the paged cache (``kv_cache``: the block pool and its byte budget).
11. ``sampling``      vectorized per-row sampling and penalties, and the token masks of constrained
                      rows (``guided``: llguidance grammars for JSON schema / regex / choice, compiled
                      in the API process and cached; ``tools``: tool calls through the chat template,
                      forced calls constrained to their schemas, per-family parsers for ``auto``).

And back out: ``output_processor`` (API process) turns each step's token ids into text
deltas (``detokenizer``), matches stop strings (hits go back to the core as aborts), holds
non-streaming outputs, and ``runtime`` hands them to the requests' queues.

An embedding model's copy is another worker, ``embedding_worker`` (``embedding_model``: the
encoder and its pooling; ``embedding_protocol``: /v1/embeddings), with the same copy contract.

Also: ``loader`` (manifest sha256/size verification before loading), ``families`` (the
model types the engine serves), ``meminfo`` (free host memory, also read by the gateway), ``metrics``
(Prometheus; the core's counters are mirrored from each step's message).

This package imports nothing from Outcrop but ``outcrop.config``, ``outcrop.errors`` and
``outcrop.envs``, so a copy can run on any node.
"""
