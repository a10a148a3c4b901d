"""Who is calling and what they may do: keys, SigV4 verification, IAM-shaped policies, audit."""
