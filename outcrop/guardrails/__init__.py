"""Guardrails: Bedrock's guardrail APIs around imported models (docs/guardrails.md).

- :mod:`policy`: CreateGuardrail/UpdateGuardrail bodies, checked and normalised into the stored
  spec (GetGuardrail's shape); a bad policy is a ValidationException naming it.
- :mod:`store`: guardrails and their immutable numbered versions in the metadata store.
- :mod:`detectors`: what finds things in text (words, PII through Presidio's recognizers,
  regexes, denied topics); pure and fast.
- :mod:`evaluate`: one guardrail applied to text blocks -> action, outputs, assessments.
- :mod:`service`: the facade the routes call (control plane, ApplyGuardrail, runtime hooks).
- :mod:`runtime`: ``guardrailConfig`` on Converse/ConverseStream and the guardrail headers on
  InvokeModel(+stream).
"""
