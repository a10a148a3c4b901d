"""Prompt management (Bedrock's, through boto3 ``bedrock-agent``): stored, versioned prompt templates.

- :mod:`outcrop.prompts.spec`: a prompt's content as the service model shapes it (pydantic, checked),
  its ``{{variable}}`` placeholders and how they are filled;
- :mod:`outcrop.prompts.store`: rows in the metadata store (a DRAFT and immutable numbered versions);
- :mod:`outcrop.prompts.service`: the operations (create, get, update, list, delete, version) with
  Bedrock's ids and ARNs;
- :mod:`outcrop.prompts.runtime`: a Converse / InvokeModel request whose ``modelId`` is a prompt ARN,
  turned into the plain request for the prompt's imported model.

The HTTP surface is ``outcrop/api/agent/prompts.py``; the CLI ``outcrop/cli/prompts.py``; docs/prompts.md.
"""
