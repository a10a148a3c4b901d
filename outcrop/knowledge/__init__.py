"""Knowledge bases: Bedrock's ``bedrock-agent`` / ``bedrock-agent-runtime`` knowledge bases on
Outcrop's own embedding and text copies.

Layout (outside in):

- ``outcrop/api/agent/knowledge.py``: the control plane (CreateKnowledgeBase, data sources,
  ingestion jobs) and the ``Retrieve`` runtime route; ``outcrop/api/agent/kb_runtime.py``:
  ``RetrieveAndGenerate`` and ``RetrieveAndGenerateStream``.
- :mod:`outcrop.knowledge.service`: knowledge bases and data sources in the metadata store,
  ingestion jobs (queued, crash-safe), query embedding and retrieval.
- :mod:`outcrop.knowledge.ingestion`: one ingestion job: scan, diff by content hash, parse,
  chunk, embed through the router at low priority, write to the vector store.
- :mod:`outcrop.knowledge.kbstore`: knowledge bases, data sources, ingestion jobs (leases) and
  per-document content hashes in the metadata store; :mod:`outcrop.knowledge.sources`: a data
  source's documents (a folder inside the allowed roots, or a bucket).
- :mod:`outcrop.knowledge.parsing`, :mod:`outcrop.knowledge.chunking`,
  :mod:`outcrop.knowledge.metadata`: documents to text, text to chunks, sidecar metadata.
- :mod:`outcrop.knowledge.store`: the vector store (ANN index, metadata filters, hybrid search).
- :mod:`outcrop.knowledge.types`: the shapes these modules pass to each other.
"""
