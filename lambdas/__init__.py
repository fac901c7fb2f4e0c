"""The AWS Lambda handlers: thin adapters from an event to the library (feedback, run catalog, control plane)."""
