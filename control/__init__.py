"""The control plane: the destination registry and run requests behind one HTTP API (API Gateway + Lambda in AWS, a local server here)."""
