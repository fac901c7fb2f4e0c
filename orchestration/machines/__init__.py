"""The state machines, one module each, and the task-state builders they share."""
