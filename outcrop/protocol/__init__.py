"""Wire models shared by the API surfaces and batch jobs.

The Bedrock runtime bodies (InvokeModel, Converse, CountTokens) are read by the runtime routes
(``outcrop.api.runtime``) and, record by record, by batch jobs (``outcrop.batch.records``).
DESIGN's dependencies point ``api -> registry | serving | batch``, so batch may not import
``api/``; the shared models live here, in a package that imports nothing of Outcrop but
``errors``. The control-plane models, which only the API reads, stay in
``outcrop/api/bedrock/protocol.py``.
"""
