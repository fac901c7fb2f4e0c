"""Peer implementations of the prepare semantics, timed side by side with ours and checked equal."""
